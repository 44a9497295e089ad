"""Signed preview tokens: a token that is the credential by itself, for a URL anyone holding it
may open until it expires (Daytona's ``create_signed_preview_url``).

A token is ``<expiry>.<nonce>.<mac>``: the expiry in Unix seconds, a random nonce, and an
HMAC-SHA256 under the core's preview secret over the sandbox id, the port, the expiry and the
nonce. The sandbox and the port are not in the token but in the URL it is used with, so a token
made for another sandbox or port fails the MAC, as does one with any part altered. The nonce
names the token for revocation (``preview_revocations``): that is the only state a signed token
has, and only once it is expired early.

Pure functions, no I/O: the service (``core/services/preview.py``) adds the revocation check.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

_SHAPE = re.compile(r"([0-9]{1,12})\.([A-Za-z0-9_-]{16})\.([A-Za-z0-9_-]{43})")
_CONTEXT = b"dnah-preview-v1"
"""Domain separation: the secret signs nothing else in this form."""


class TokenRefused(Exception):
    """The token does not open this sandbox's port now; the message says why, in the caller's
    words (a forgery and a token for another sandbox look alike, and are told alike)."""


def looks_signed(token: str) -> bool:
    """Whether ``token`` has a signed token's shape (plain tokens have no dots)."""
    return _SHAPE.fullmatch(token) is not None


def nonce_of(token: str) -> str | None:
    """The nonce of a token of the signed shape (unverified: for looking up a revocation)."""
    match = _SHAPE.fullmatch(token)
    return match[2] if match else None


def sign(secret: bytes, sandbox_id: str, port: int, expires_at: int) -> str:
    """A new token for ``port`` of ``sandbox_id`` until ``expires_at`` (Unix seconds)."""
    nonce = secrets.token_urlsafe(12)
    return f"{expires_at}.{nonce}.{_mac(secret, sandbox_id, port, expires_at, nonce)}"


def verify(secret: bytes, token: str, sandbox_id: str, port: int, now: float) -> tuple[str, int]:
    """The token's nonce and expiry if it was made with ``secret`` for this sandbox and port
    and has not expired at ``now``; else ``TokenRefused``."""
    match = _SHAPE.fullmatch(token)
    if match is None:
        raise TokenRefused("the preview token is not valid for this sandbox and port")
    expires_at, nonce, mac = int(match[1]), match[2], match[3]
    if not hmac.compare_digest(mac, _mac(secret, sandbox_id, port, expires_at, nonce)):
        raise TokenRefused("the preview token is not valid for this sandbox and port")
    if expires_at <= now:
        raise TokenRefused("the signed preview URL has expired")
    return nonce, expires_at


def _mac(secret: bytes, sandbox_id: str, port: int, expires_at: int, nonce: str) -> str:
    message = b"\n".join(
        (_CONTEXT, sandbox_id.encode(), str(port).encode(), str(expires_at).encode(), nonce.encode())
    )
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")
