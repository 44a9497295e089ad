"""What of a proxied request reaches the server in the sandbox, and what of its answer comes back.

The request line is built here, never copied: the path is normalised (dot-segments removed as
RFC 3986 §5.2.4 says, ``%2e`` counting as a dot, never above ``/``), and every byte that may
not stand in a path or query is percent-encoded, so the server sees one well-formed target
whatever the client sent. ``%2F`` and other escapes are kept as the client wrote them (they
are the server's to interpret). Framing is never copied either: ``Content-Length`` and
``Transfer-Encoding`` are dropped and the proxy sets its own, so a request with conflicting
framing cannot reach the server as two requests.

Headers: hop-by-hop ones (RFC 9110 §7.6.1, plus those ``Connection`` names) are dropped both
ways. ``Authorization`` is hostd's own token and never leaves hostd; the core passes the
client's own one as ``x-dnah-authorization``, which the server receives as
``Authorization``. Other ``x-dnah-*`` headers are internal and dropped. ``Host`` is the
``x-forwarded-host`` the core sent (when it is a plain host name), else the endpoint.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
_REBUILT = frozenset({b"host", b"content-length", b"expect", b"authorization", b"x-request-id"})
"""Set by the proxy itself (host, framing), or hostd's own (its token, its request id);
``Expect`` too: the body is streamed anyway, so ``100-continue`` has nothing to wait for."""

CLIENT_AUTHORIZATION = b"x-dnah-authorization"
_INTERNAL_PREFIX = b"x-dnah-"

_PCHAR = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@")
_QUERY = _PCHAR | frozenset(b"/?")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_HOST = re.compile(rb"[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?")


def target(path: bytes, query: bytes) -> bytes:
    """The request target sent to the server: ``path`` (raw, as the client escaped it)
    normalised, and ``query`` (raw) with unsafe bytes escaped."""
    normalised = normalise_path(path)
    return normalised + b"?" + _escape(query, _QUERY) if query else normalised


def normalise_path(raw: bytes) -> bytes:
    """``raw`` without dot-segments, starting with ``/``, every segment escaped."""
    parts = raw.lstrip(b"/").split(b"/") if raw else [b""]
    kept: list[bytes] = []
    for index, part in enumerate(parts):
        name = part.replace(b"%2e", b".").replace(b"%2E", b".")
        if name in (b".", b".."):
            if name == b".." and kept:
                kept.pop()
            if index == len(parts) - 1:
                kept.append(b"")  # "/a/b/.." is "/a/": the last step named a directory
            continue
        kept.append(_escape(part, _PCHAR))
    return b"/" + b"/".join(kept)


def _escape(raw: bytes, allowed: frozenset[int]) -> bytes:
    out = bytearray()
    for i, byte in enumerate(raw):
        if byte in allowed:
            out.append(byte)
        elif byte == 0x25 and i + 2 < len(raw) and raw[i + 1] in _HEX and raw[i + 2] in _HEX:
            out.append(byte)  # an escape the client made: kept as it is
        else:
            out += b"%%%02X" % byte
    return bytes(out)


def _connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    return {
        token.strip().lower()
        for name, value in headers
        if name.lower() == b"connection"
        for token in value.split(b",")
    }


def request_headers(
    headers: list[tuple[bytes, bytes]], default_host: bytes, *, drop: frozenset[bytes] = frozenset()
) -> list[tuple[bytes, bytes]]:
    """The end-to-end headers for the server, ``Host`` first; framing is the caller's.
    ``drop``: more names (lower-case) the caller sets itself."""
    named = _connection_tokens(headers)
    host = default_host
    out: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        lower = name.lower()
        if lower == b"x-forwarded-host" and _HOST.fullmatch(value.strip()):
            host = value.strip()
        if lower == CLIENT_AUTHORIZATION:
            out.append((b"authorization", value))
            continue
        if lower in _HOP_BY_HOP or lower in _REBUILT or lower in named or lower in drop:
            continue
        if lower.startswith(_INTERNAL_PREFIX):
            continue
        out.append((lower, value))
    return [(b"host", host), *out]


def response_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The server's headers without hop-by-hop ones (``Content-Length`` stays: the body is
    passed on exactly, and the server's count is checked as it streams)."""
    listed = list(headers)
    named = _connection_tokens(listed)
    return [
        (name.lower(), value)
        for name, value in listed
        if name.lower() not in _HOP_BY_HOP and name.lower() not in named
    ]
