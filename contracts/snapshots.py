"""Signed snapshots: what the core signs and what hostd checks before it trusts a snapshot.

hostd writes a snapshot (``manifest.json`` with the sha256 of every data file) but holds no
signing key: the core signs a ``SnapshotClaim`` naming the snapshot, its sandbox and the
sha256 of the manifest's exact bytes, and hands the ``SignedSnapshot`` back to hostd, which
stores it next to the manifest. A restore or clone passes the core's *verify* keys along;
hostd then checks signature → claim ↔ manifest → manifest ↔ files before it touches a disk.
A host that was tampered with (or a disk that rotted) therefore cannot get a snapshot
accepted that the core did not see whole.

Keys are named by a ``kid`` so they can rotate: the core signs with one key and verifies
with every key still listed, so snapshots signed by the previous key keep verifying until
that key is dropped from the list. Signatures are over the canonical msgspec JSON of the
claim (fields in declaration order, no whitespace), which both ends produce identically.

Key formats (environment variables, CLI): a signing key is ``kid:<base64 32-byte seed>``,
verify keys are ``kid:<base64 32-byte public key>`` separated by commas.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Mapping

import msgspec
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

_KID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class SnapshotRejected(ValueError):
    """A snapshot that must not be trusted; ``reason`` says why, for the error message."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SnapshotClaim(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a signature vouches for."""

    sandbox_id: str
    """The sandbox the snapshot was taken of."""
    snapshot_id: str
    manifest_hash: str
    """Hex sha256 of the snapshot's ``manifest.json`` bytes, exactly as stored."""
    size: int
    """Bytes of the snapshot's data files (what the manifest lists)."""
    ts: int
    """Unix seconds at signing."""


class SignedSnapshot(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    claim: SnapshotClaim
    kid: str
    """Names the key that signed, among the verify keys."""
    signature: str
    """Base64 of the 64-byte Ed25519 signature over ``claim_bytes(claim)``."""


def claim_bytes(claim: SnapshotClaim) -> bytes:
    """The exact bytes that are signed."""
    return msgspec.json.encode(claim)


def sign(claim: SnapshotClaim, kid: str, signing_key: SigningKey) -> SignedSnapshot:
    signature = signing_key.sign(claim_bytes(claim)).signature
    return SignedSnapshot(claim=claim, kid=kid, signature=base64.b64encode(signature).decode())


def verify(signed: SignedSnapshot, verify_keys: Mapping[str, VerifyKey]) -> SnapshotClaim:
    """The claim, if ``signed`` carries a valid signature by one of ``verify_keys``.

    Raises:
        SnapshotRejected: the kid is unknown, the signature is malformed or does not match.
    """
    key = verify_keys.get(signed.kid)
    if key is None:
        raise SnapshotRejected(f"signed by unknown key {signed.kid!r}")
    try:
        signature = base64.b64decode(signed.signature, validate=True)
    except (binascii.Error, ValueError):
        raise SnapshotRejected("signature is not base64") from None
    if len(signature) != 64:
        raise SnapshotRejected("signature is not 64 bytes")
    try:
        key.verify(claim_bytes(signed.claim), signature)
    except BadSignatureError:
        raise SnapshotRejected(f"signature does not match the claim (key {signed.kid!r})") from None
    return signed.claim


def decode_signed(data: bytes) -> SignedSnapshot:
    """Parse a stored or received ``SignedSnapshot``.

    Raises:
        SnapshotRejected: not a well-formed signed snapshot.
    """
    try:
        return msgspec.json.decode(data, type=SignedSnapshot)
    except msgspec.DecodeError as exc:
        raise SnapshotRejected(f"malformed signature record: {exc}") from None


def new_signing_key(kid: str) -> str:
    """A fresh signing key in ``kid:<base64 seed>`` form (for tooling and tests)."""
    _check_kid(kid)
    return f"{kid}:{base64.b64encode(secrets.token_bytes(32)).decode()}"


def parse_signing_key(text: str) -> tuple[str, SigningKey]:
    """``kid:<base64 32-byte seed>`` → (kid, key).

    Raises:
        ValueError: malformed (the message says how).
    """
    kid, seed = _split(text)
    return kid, SigningKey(_key_bytes(seed, "signing key seed"))


def parse_verify_keys(text: str) -> dict[str, VerifyKey]:
    """``kid1:<base64 pub>,kid2:<base64 pub>`` → {kid: key}.

    Raises:
        ValueError: an entry is malformed or a kid repeats.
    """
    keys: dict[str, VerifyKey] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        kid, public = _split(entry)
        if kid in keys:
            raise ValueError(f"verify key {kid!r} is listed twice")
        keys[kid] = VerifyKey(_key_bytes(public, "verify key"))
    return keys


def verify_keys_from_wire(encoded: Mapping[str, str]) -> dict[str, VerifyKey]:
    """{kid: base64 public key} (as sent to hostd) → {kid: key}.

    Raises:
        ValueError: a kid or key is malformed.
    """
    keys: dict[str, VerifyKey] = {}
    for kid, public in encoded.items():
        _check_kid(kid)
        keys[kid] = VerifyKey(_key_bytes(public, "verify key"))
    return keys


def encode_verify_key(key: VerifyKey) -> str:
    """Base64 of the 32-byte public key (the wire form of ``verify_keys_from_wire``)."""
    return base64.b64encode(bytes(key)).decode()


def _split(text: str) -> tuple[str, str]:
    kid, sep, key = text.strip().partition(":")
    if not sep:
        raise ValueError("a key must look like kid:<base64>")
    _check_kid(kid)
    return kid, key


def _check_kid(kid: str) -> None:
    if not _KID.fullmatch(kid):
        raise ValueError(f"key id {kid!r} must be 1-64 letters, digits, '.', '_' or '-'")


def _key_bytes(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not base64") from None
    if len(raw) != 32:
        raise ValueError(f"{what} must be 32 bytes, not {len(raw)}")
    return raw
