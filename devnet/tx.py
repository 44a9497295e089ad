"""Decoding and authenticating signed Tempo transactions (type ``0x76``).

The wire form is ``0x76 || rlp([chainId, maxPriorityFeePerGas, maxFeePerGas, gas, calls,
accessList, nonceKey, nonce, validBefore, validAfter, feeToken, feePayerSignature,
authorizationList, keyAuthorization?, senderSignature])``.

pytempo builds, encodes and signs these transactions but cannot parse them, so this module
reads the RLP into a ``pytempo.TempoTransaction`` and then insists that pytempo re-encodes it
to exactly the bytes received. That round trip is the proof that every field was read as the
signer meant it (a non-canonical or truncated encoding fails it), and it lets the signing
hashes come from pytempo rather than from a second implementation here.

The sender is recovered from the secp256k1 signature over the ``0x76`` signing hash, and a
fee payer (sponsored transactions) from its signature over the ``0x78`` hash. Other signature
types — P-256, WebAuthn, keychain access keys, multisig — name their account instead of
proving it with ECDSA; the devnet cannot check them and refuses them as unsupported.

Like a Tempo node, the devnet treats a secp256k1 recovery id of 0/1 and 27/28 as the same
signature: the transaction is re-encoded with 27/28 before hashing, so ``transactionHash`` is
``keccak256`` of that canonical encoding (identical to the raw bytes for every SDK observed,
which all sign with 27/28).
"""

from __future__ import annotations

from dataclasses import dataclass

import attrs
import rlp
from eth_hash.auto import keccak
from eth_keys import keys
from pytempo import AccessListItem, Call, Signature, TempoTransaction

from contracts.tempo import FEE_PAYER_MAGIC_BYTE, TEMPO_TX_TYPE
from devnet.errors import rejected, unsupported

# The first byte of a non-secp256k1 sender signature names its kind.
_SIGNATURE_KINDS = {0x01: "P-256", 0x02: "WebAuthn", 0x03: "keychain", 0x04: "keychain", 0x05: "multisig"}


@dataclass(frozen=True, slots=True)
class SignedTx:
    """A decoded, authenticated Tempo transaction, in its canonical encoding."""

    tx: TempoTransaction
    hash: str
    sender: str
    fee_payer: str
    replay_id: str
    """``keccak256(sender signing payload || sender)``: what a Tempo node remembers to refuse
    a replayed expiring-nonce transaction, whatever signature bytes accompany it."""


def decode_signed(raw: bytes, chain_id: int) -> SignedTx:
    """Decode ``raw``, check it was signed for ``chain_id``, and recover who pays for it.

    Raises ``RpcError`` with the message a node would give for a malformed, misdirected or
    badly signed transaction."""
    if not raw:
        raise rejected("failed to decode signed transaction: empty input")
    if raw[0] == FEE_PAYER_MAGIC_BYTE:
        raise rejected(
            "transaction type not supported: a 0x78 fee payer envelope must be co-signed into a "
            "0x76 transaction before it is broadcast"
        )
    if raw[0] != TEMPO_TX_TYPE:
        raise unsupported(f"transaction type 0x{raw[0]:02x}; only Tempo transactions (0x76) are accepted")
    tx, fee_payer_signature = _parse(raw)
    if tx.chain_id != chain_id:
        raise rejected(f"invalid chain id: have {tx.chain_id}, want {chain_id}")
    try:
        sender = _recover(tx.get_signing_hash(for_fee_payer=False), tx.sender_signature)
        tx = attrs.evolve(
            tx, sender_address=sender, fee_payer_signature=fee_payer_signature, awaiting_fee_payer=False
        )
        fee_payer = sender
        if fee_payer_signature is not None:
            fee_payer = _recover(tx.get_signing_hash(for_fee_payer=True), fee_payer_signature)
        encoded = tx.encode()
    except ValueError as exc:
        raise rejected(f"invalid transaction: {exc}") from None
    if encoded != raw:
        raise rejected("failed to decode signed transaction: not in canonical RLP encoding")
    if fee_payer_signature is not None and fee_payer == sender:
        raise rejected("fee payer cannot resolve to sender")

    sig = tx.sender_signature
    canonical = attrs.evolve(tx, sender_signature=Signature(r=sig.r, s=sig.s, v=_parity(sig.v) + 27))
    replay_id = keccak(tx.encode_for_signing(for_fee_payer=False) + bytes.fromhex(sender[2:]))
    return SignedTx(
        tx=canonical,
        hash="0x" + keccak(canonical.encode()).hex(),
        sender=sender,
        fee_payer=fee_payer,
        replay_id="0x" + replay_id.hex(),
    )


def _parse(raw: bytes) -> tuple[TempoTransaction, Signature | None]:
    """The transaction as its sender signed it (a sponsored one marked as awaiting its fee
    payer, which is how pytempo computes the sender's hash), and the fee payer's signature."""
    try:
        fields = rlp.decode(raw[1:])
    except rlp.DecodingError as exc:
        raise rejected(f"failed to decode signed transaction: {exc}") from None
    if not isinstance(fields, list) or len(fields) not in (14, 15):
        raise rejected("failed to decode signed transaction: a Tempo transaction has 14 or 15 fields")
    if len(fields) == 15:
        raise unsupported("key authorizations (access-key provisioning inside a transaction)")
    if not isinstance(fields[12], list):
        raise rejected("failed to decode signed transaction: the authorization list is not a list")
    if fields[12]:
        raise unsupported("Tempo authorization lists")
    try:
        fee_payer_signature = _fee_payer_signature(fields[11])
        tx = TempoTransaction(
            chain_id=_uint(fields[0]),
            max_priority_fee_per_gas=_uint(fields[1]),
            max_fee_per_gas=_uint(fields[2]),
            gas_limit=_uint(fields[3]),
            calls=tuple(_call(item) for item in _list(fields[4])),
            access_list=tuple(_access(item) for item in _list(fields[5])),
            nonce_key=_uint(fields[6]),
            nonce=_uint(fields[7]),
            valid_before=_optional_uint(fields[8]),
            valid_after=_optional_uint(fields[9]),
            fee_token=_bytes(fields[10]) or None,
            awaiting_fee_payer=fee_payer_signature is not None,
            sender_signature=_sender_signature(fields[13]),
        )
    except (TypeError, ValueError) as exc:
        raise rejected(f"failed to decode signed transaction: {exc}") from None
    return tx, fee_payer_signature


def _sender_signature(item: object) -> Signature:
    sig = _bytes(item)
    if len(sig) == 65:
        try:
            return Signature.from_bytes(sig)
        except ValueError as exc:
            raise rejected(f"invalid transaction signature: {exc}") from None
    kind = _SIGNATURE_KINDS.get(sig[0]) if sig else None
    if kind is not None:
        raise unsupported(f"{kind} sender signatures (only secp256k1 is verified)")
    raise rejected("invalid transaction signature")


def _fee_payer_signature(item: object) -> Signature | None:
    if item == b"":
        return None
    parts = _list(item)
    if len(parts) != 3:
        raise rejected("failed to decode signed transaction: fee payer signature is not [v, r, s]")
    y_parity, r, s = (_uint(part) for part in parts)
    try:
        return Signature(r=r, s=s, v=y_parity)
    except ValueError as exc:
        raise rejected(f"invalid fee payer signature: {exc}") from None


def _recover(signing_hash: bytes, sig: Signature) -> str:
    try:
        public = keys.Signature(vrs=(_parity(sig.v), sig.r, sig.s)).recover_public_key_from_msg_hash(
            signing_hash
        )
    except Exception:  # eth_keys raises several unrelated types for unrecoverable points
        raise rejected("invalid transaction signature") from None
    return public.to_checksum_address().lower()


def _parity(v: int) -> int:
    return v - 27 if v >= 27 else v


def _call(item: object) -> Call:
    to, value, data = _list(item, 3)
    target = _bytes(to)
    if not target:
        raise unsupported("contract creation calls")
    return Call(to=target, value=_uint(value), data=_bytes(data))


def _access(item: object) -> AccessListItem:
    address, storage_keys = _list(item, 2)
    return AccessListItem(address=_bytes(address), storage_keys=tuple(_bytes(k) for k in _list(storage_keys)))


def _list(item: object, length: int | None = None) -> list[object]:
    if not isinstance(item, list) or (length is not None and len(item) != length):
        raise ValueError("malformed list field")
    return item


def _bytes(item: object) -> bytes:
    if not isinstance(item, bytes):
        raise ValueError("expected a byte string, found a list")
    return item


def _uint(item: object) -> int:
    return int.from_bytes(_bytes(item), "big")


def _optional_uint(item: object) -> int | None:
    value = _bytes(item)
    return int.from_bytes(value, "big") if value else None
