"""What every gateway worker must agree on about payments in flight, kept in Redis.

- A **challenge claim** (``dnah:pay:challenge:<id>``): the first request to settle a
  challenge claims it (``SET NX``) before any money moves, so one credential pays for one
  request even when two copies of it arrive at two workers at once. The claim then records
  how far the payment got — ``pending`` → ``paid`` → ``used``, or ``unknown`` when the chain's
  answer was lost, or ``failed`` — together with a hash of the credential and of the request,
  so that a *retry of the same request with the same credential* can resume where it stopped
  (look up the transaction's receipt, record it, forward) instead of paying again.
- An **idempotency-key marker** (``dnah:pay:idem:<payer>:<key>``): taken before a request with
  an ``Idempotency-Key`` pays, holding the request's fingerprint, so a second request with the
  same key waits (409) or is refused (422) instead of paying again while the first is running.
  A marker left by a dead gateway whose request the core never served (and credited back)
  is dropped once the core's ledger says the key was given up (410 on the replay lookup).
  Completed responses themselves are kept by the core (``GET /internal/idempotency``).

pympp keeps its own replay markers (``dnah:mpp:charge:<tx hash>``) in the same Redis.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Literal

import msgspec
from redis.asyncio import Redis

ClaimState = Literal["pending", "paid", "unknown", "used", "failed"]

CLAIM_TTL_S = 24 * 3600
"""How long a challenge's claim (and so a resumable payment) is remembered. Challenges live
minutes; a day leaves room to resume a payment whose outcome was unknown."""
KEY_TTL_S = 7 * 24 * 3600
"""How long an idempotency key stays taken by the request that used it."""


class Claim(msgspec.Struct, kw_only=True):
    state: ClaimState
    credential: str
    """sha256 of the credential as sent (hex)."""
    fingerprint: str
    """``request_fingerprint`` of the request it pays for."""
    payer: str
    amount: int
    currency: str
    mode: Literal["pull", "push"] = "pull"
    since: float = 0.0
    """Unix time of the claim."""
    idempotency_key: str | None = None
    """The payer-scoped key, as recorded in the ledger."""
    tx_hash: str | None = None
    deadline: float | None = None
    """Unix time after which a transaction without a receipt can no longer land (pull mode:
    its ``validBefore`` plus a grace period)."""
    via: Literal["chain", "credit"] | None = None
    receipt: str | None = None
    """The ``Payment-Receipt`` value, once paid."""
    payment_id: str | None = None


def credential_hash(value: str) -> str:
    return hashlib.sha256(value.encode("latin-1", "replace")).hexdigest()


def request_fingerprint(method: str, raw_path: bytes, query: bytes, body: bytes) -> str:
    """sha256 over method, path, query and body: what an ``Idempotency-Key`` names."""
    digest = hashlib.sha256()
    for part in (method.upper().encode(), raw_path, query):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    digest.update(hashlib.sha256(body).digest())
    return digest.hexdigest()


_DROP_IF_SAME = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end"
)
_ENCODE = msgspec.json.Encoder()
_DECODE = msgspec.json.Decoder(Claim)


class PaymentState:
    def __init__(self, redis: Redis, prefix: str = "dnah:pay:") -> None:
        self._redis = redis
        self._prefix = prefix

    def _claim_key(self, challenge_id: str) -> str:
        return f"{self._prefix}challenge:{challenge_id}"

    def _idem_key(self, scoped_key: str) -> str:
        return f"{self._prefix}idem:{hashlib.sha256(scoped_key.encode()).hexdigest()}"

    async def get(self, challenge_id: str) -> Claim | None:
        raw = await self._redis.get(self._claim_key(challenge_id))
        return None if raw is None else _DECODE.decode(raw)

    async def claim(self, challenge_id: str, claim: Claim) -> Claim | None:
        """Claim a challenge; None when this call got it, else the claim that exists."""
        key = self._claim_key(challenge_id)
        if await self._redis.set(key, _ENCODE.encode(claim), nx=True, ex=CLAIM_TTL_S):
            return None
        existing = await self.get(challenge_id)
        # Gone between the two calls (expired): the challenge is long dead, treat it as used.
        return existing or Claim(state="used", credential="", fingerprint="", payer="", amount=0, currency="")

    async def update(self, challenge_id: str, claim: Claim) -> None:
        await self._redis.set(self._claim_key(challenge_id), _ENCODE.encode(claim), xx=True, keepttl=True)

    async def release(self, challenge_id: str) -> None:
        """Forget a claim whose payment never started (nothing moved): the credential may be
        presented again."""
        await self._redis.delete(self._claim_key(challenge_id))

    async def take_key(self, scoped_key: str, fingerprint: str) -> str | None:
        """Take an idempotency key; None when this call got it, else the fingerprint of the
        request that holds it. The marker is ``<fingerprint> <nonce>``: each taking is told
        apart, so ``drop_key`` can drop a dead one without dropping a newer one."""
        key = self._idem_key(scoped_key)
        if await self._redis.set(key, f"{fingerprint} {secrets.token_hex(8)}", nx=True, ex=KEY_TTL_S):
            return None
        held = await self._redis.get(key)
        value = held.decode() if isinstance(held, bytes) else (held or fingerprint)
        return value.split(" ", 1)[0]

    async def key_marker(self, scoped_key: str) -> str | None:
        """The key's marker as it is now (for ``drop_key``)."""
        held = await self._redis.get(self._idem_key(scoped_key))
        return held.decode() if isinstance(held, bytes) else held

    async def drop_key(self, scoped_key: str, marker: str) -> None:
        """Drop the key's marker if it is still ``marker`` (read before the ledger said the
        key was given up): a marker another request took since is kept."""
        await self._redis.eval(_DROP_IF_SAME, 1, self._idem_key(scoped_key), marker)

    async def release_key(self, scoped_key: str) -> None:
        await self._redis.delete(self._idem_key(scoped_key))
