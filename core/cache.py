"""Redis: the shared cache every core replica (and later every gateway worker) reads.

Today it caches API-key lookups: the hash of a presented token maps to its principal for a
short TTL, so the hot path (exec) does not hit Postgres to authenticate. Revoking a key
deletes its entry, so revocation is immediate on every replica.
"""

from __future__ import annotations

import contextlib

import redis.asyncio as aioredis
from redis.exceptions import RedisError

_KEY_PREFIX = "dnah:apikey:"
_PAYER_PREFIX = "dnah:payer-org:"
KEY_TTL_S = 60


class Cache:
    def __init__(self, url: str) -> None:
        self._redis = aioredis.from_url(url, decode_responses=True, socket_timeout=2.0)

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except RedisError:
            return False

    async def get_principal(self, token_hash: bytes) -> str | None:
        """A cache miss or a Redis failure both return None: the caller falls back to Postgres."""
        try:
            value = await self._redis.get(_KEY_PREFIX + token_hash.hex())
            return str(value) if value is not None else None
        except RedisError:
            return None

    async def put_principal(self, token_hash: bytes, value: str) -> None:
        with contextlib.suppress(RedisError):  # caching is an optimisation; Postgres stays the truth
            await self._redis.set(_KEY_PREFIX + token_hash.hex(), value, ex=KEY_TTL_S)

    async def forget_principal(self, token_hash: bytes) -> None:
        await self._redis.delete(_KEY_PREFIX + token_hash.hex())

    async def get_payer_org(self, payer: str) -> str | None:
        """payer → org never changes once made, so it is cached without expiry."""
        try:
            value = await self._redis.get(_PAYER_PREFIX + payer)
        except RedisError:
            return None
        return str(value) if value is not None else None

    async def put_payer_org(self, payer: str, org_id: str) -> None:
        with contextlib.suppress(RedisError):
            await self._redis.set(_PAYER_PREFIX + payer, org_id)

    async def close(self) -> None:
        await self._redis.aclose()
