"""The signed-snapshot contract: what one end signs, the other verifies, and nothing else."""

from __future__ import annotations

import base64

import msgspec
import pytest

from contracts.snapshots import (
    SignedSnapshot,
    SnapshotClaim,
    SnapshotRejected,
    claim_bytes,
    decode_signed,
    encode_verify_key,
    new_signing_key,
    parse_signing_key,
    parse_verify_keys,
    sign,
    verify,
    verify_keys_from_wire,
)

CLAIM = SnapshotClaim(
    sandbox_id="sb1", snapshot_id="snap1", manifest_hash="ab" * 32, size=123, ts=1_700_000_000
)


def keypair(kid: str) -> tuple[str, str]:
    """(signing key text, verify key entry text) for ``kid``."""
    signing = new_signing_key(kid)
    _, key = parse_signing_key(signing)
    return signing, f"{kid}:{encode_verify_key(key.verify_key)}"


def test_a_signature_verifies_with_its_key_and_round_trips_as_json() -> None:
    signing, public = keypair("k1")
    kid, key = parse_signing_key(signing)
    signed = sign(CLAIM, kid, key)
    assert len(base64.b64decode(signed.signature)) == 64
    assert verify(decode_signed(msgspec.json.encode(signed)), parse_verify_keys(public)) == CLAIM


def test_the_signed_bytes_are_the_canonical_json_of_the_claim() -> None:
    assert claim_bytes(CLAIM) == (
        b'{"sandbox_id":"sb1","snapshot_id":"snap1","manifest_hash":"'
        + b"ab" * 32
        + b'","size":123,"ts":1700000000}'
    )


def test_rotation_keeps_old_signatures_valid() -> None:
    old_signing, old_public = keypair("old")
    new_signing, new_public = keypair("new")
    keys = parse_verify_keys(f"{new_public}, {old_public}")
    for text in (old_signing, new_signing):
        kid, key = parse_signing_key(text)
        assert verify(sign(CLAIM, kid, key), keys) == CLAIM


@pytest.mark.parametrize(
    "field", ["sandbox_id", "snapshot_id", "manifest_hash", "size", "ts"], ids=lambda f: f"claim.{f}"
)
def test_any_change_to_the_claim_breaks_the_signature(field: str) -> None:
    signing, public = keypair("k1")
    kid, key = parse_signing_key(signing)
    signed = sign(CLAIM, kid, key)
    value = getattr(CLAIM, field)
    changed = msgspec.structs.replace(CLAIM, **{field: value + 1 if isinstance(value, int) else value + "x"})
    with pytest.raises(SnapshotRejected, match="does not match"):
        verify(msgspec.structs.replace(signed, claim=changed), parse_verify_keys(public))


def test_a_flipped_signature_byte_an_unknown_kid_and_garbage_are_rejected() -> None:
    signing, public = keypair("k1")
    kid, key = parse_signing_key(signing)
    signed = sign(CLAIM, kid, key)
    keys = parse_verify_keys(public)
    raw = bytearray(base64.b64decode(signed.signature))
    raw[10] ^= 1
    flipped = msgspec.structs.replace(signed, signature=base64.b64encode(bytes(raw)).decode())
    with pytest.raises(SnapshotRejected, match="does not match"):
        verify(flipped, keys)
    with pytest.raises(SnapshotRejected, match="unknown key 'k2'"):
        verify(msgspec.structs.replace(signed, kid="k2"), keys)
    with pytest.raises(SnapshotRejected, match="not base64"):
        verify(msgspec.structs.replace(signed, signature="!!"), keys)
    with pytest.raises(SnapshotRejected, match="not 64 bytes"):
        verify(msgspec.structs.replace(signed, signature=base64.b64encode(b"short").decode()), keys)
    with pytest.raises(SnapshotRejected, match="malformed"):
        decode_signed(b'{"claim": {}, "kid": "k1"}')


def test_a_signature_by_another_key_with_the_same_kid_is_rejected() -> None:
    _, public = keypair("k1")
    impostor, _ = keypair("k1")
    kid, key = parse_signing_key(impostor)
    with pytest.raises(SnapshotRejected, match="does not match"):
        verify(sign(CLAIM, kid, key), parse_verify_keys(public))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nokid", "kid:<base64>"),
        ("bad kid:AAAA", "key id"),
        ("k1:not base64!", "not base64"),
        ("k1:" + base64.b64encode(b"x" * 31).decode(), "32 bytes"),
    ],
)
def test_malformed_keys_are_explained(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_signing_key(text)
    with pytest.raises(ValueError, match=message):
        parse_verify_keys(text)


def test_verify_keys_parse_from_a_list_and_from_the_wire_form() -> None:
    _, a = keypair("a")
    _, b = keypair("b")
    keys = parse_verify_keys(f"{a},{b},")
    assert sorted(keys) == ["a", "b"]
    wire = {kid: encode_verify_key(key) for kid, key in keys.items()}
    assert verify_keys_from_wire(wire) == keys
    with pytest.raises(ValueError, match="twice"):
        parse_verify_keys(f"{a},{a}")
    with pytest.raises(ValueError, match="key id"):
        verify_keys_from_wire({"no spaces": wire["a"]})


def test_signed_snapshots_reject_unknown_fields() -> None:
    signing, _ = keypair("k1")
    kid, key = parse_signing_key(signing)
    encoded = msgspec.json.decode(msgspec.json.encode(sign(CLAIM, kid, key)))
    encoded["extra"] = 1
    with pytest.raises(SnapshotRejected):
        decode_signed(msgspec.json.encode(encoded))
    assert isinstance(
        decode_signed(msgspec.json.encode({k: v for k, v in encoded.items() if k != "extra"})), SignedSnapshot
    )
