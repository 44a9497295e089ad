"""API keys: minting, authenticating, revoking.

A key looks like ``dnah_<40 url-safe chars>`` and is stored only as its SHA-256. Each key
belongs to one org; every sandbox operation is scoped to the caller's org.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

import asyncpg
import msgspec

from core.cache import Cache
from core.db import keys as keys_db
from core.db import payments as payments_db
from core.errors import BadRequest, NotFound, Unauthorized

_ADDRESS = re.compile(r"0x[0-9a-f]{40}")

TOKEN_PREFIX = "dnah_"  # noqa: S105 - a prefix, not a secret


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    org_id: str
    key_id: str
    is_admin: bool


class MintedKey(msgspec.Struct, frozen=True, kw_only=True):
    record: keys_db.KeyRecord
    token: str


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def check_payer(payer: str) -> str:
    """A payer is a lowercase 0x-prefixed 20-byte address."""
    if not _ADDRESS.fullmatch(payer):
        raise BadRequest("payer must be a lowercase 0x-prefixed 20-byte address")
    return payer


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


class AuthService:
    def __init__(self, db: asyncpg.Pool, cache: Cache, *, edge_token: str | None = None) -> None:
        self._db = db
        self._cache = cache
        self._edge_token = edge_token.encode() if edge_token else None

    async def authenticate(self, authorization: str | None, payer: str | None = None) -> Principal:
        """Resolve an ``Authorization: Bearer <key>`` header to its principal.

        The gateway's edge token with an ``x-dnah-payer`` header stands for that payer, whose
        org is created on first use; ``payer`` is ignored with any other token.
        """
        if not authorization or not authorization.lower().startswith("bearer "):
            raise Unauthorized("missing bearer API key")
        token = authorization[7:].strip()
        if self._edge_token and hmac.compare_digest(token.encode(), self._edge_token):
            return await self._payer_principal(payer)
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            raise Unauthorized("invalid API key")
        digest = hash_token(token)
        cached = await self._cache.get_principal(digest)
        if cached:
            org_id, key_id, admin = cached.split("|")
            return Principal(org_id=org_id, key_id=key_id, is_admin=admin == "1")
        record = await keys_db.by_hash(self._db, digest)
        if record is None:
            raise Unauthorized("invalid API key")
        await self._cache.put_principal(digest, f"{record.org_id}|{record.id}|{int(record.is_admin)}")
        return Principal(org_id=record.org_id, key_id=record.id, is_admin=record.is_admin)

    async def _payer_principal(self, payer: str | None) -> Principal:
        if not payer:
            raise Unauthorized("the edge token needs a payer")
        payer = check_payer(payer.lower())
        org_id = await self._cache.get_payer_org(payer)
        if org_id is None:
            org_id = await payments_db.org_for_payer(self._db, new_id("org"), payer)
            await self._cache.put_payer_org(payer, org_id)
        return Principal(org_id=org_id, key_id=f"payer:{payer}", is_admin=False)

    async def mint(
        self,
        *,
        name: str,
        org_id: str | None = None,
        org_name: str | None = None,
        is_admin: bool = False,
    ) -> MintedKey:
        """Create a key in ``org_id``, or in a new org when ``org_id`` is None."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(30)
        async with self._db.acquire() as conn, conn.transaction():
            if org_id is None:
                org_id = new_id("org")
                await keys_db.create_org(conn, org_id, org_name or name or org_id)
            elif not await keys_db.org_exists(conn, org_id):
                raise BadRequest(f"unknown org {org_id!r}")
            record = await keys_db.insert_key(
                conn,
                key_id=new_id("key"),
                org_id=org_id,
                name=name,
                token_hash=hash_token(token),
                is_admin=is_admin,
            )
        return MintedKey(record=record, token=token)

    async def revoke(self, key_id: str, *, org_id: str | None) -> None:
        digest = await keys_db.revoke(self._db, key_id, org_id)
        if digest is None:
            raise NotFound(f"API key {key_id!r} not found")
        await self._cache.forget_principal(digest)

    async def rotate_admin(self, name: str) -> MintedKey:
        """Revoke earlier admin keys of this name and mint a fresh one (``make up`` does this
        each start, so a leaked ``var/admin.token`` dies with the next start)."""
        for digest in await keys_db.revoke_admin_keys_named(self._db, name):
            await self._cache.forget_principal(digest)
        admin_org = await self._db.fetchval(
            "SELECT org_id FROM api_keys WHERE is_admin ORDER BY created_at LIMIT 1"
        )
        return await self.mint(name=name, org_id=admin_org, org_name="admin", is_admin=True)
