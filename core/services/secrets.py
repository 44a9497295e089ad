"""Secrets: an org's credentials that sandboxes use without ever holding them.

A sandbox given a secret at create sees only a placeholder in its environment
(``NAME=dnah_secret_…``); hostd's egress proxy puts the value in place of the placeholder
in requests towards the secret's hosts, and nowhere else (docs/network.md). The value is
sealed at rest with the core's key (NaCl SecretBox: XSalsa20-Poly1305, a random nonce per
value), opened only to build the ``SandboxSpec`` a host gets, and never returned or logged.
"""

from __future__ import annotations

import secrets
import uuid

import asyncpg
import nacl.exceptions
import nacl.secret
import structlog

from contracts.host import SecretGrant
from core.db import secrets as secrets_db
from core.db.errors import translate
from core.db.secrets import SecretRecord
from core.errors import BadRequest, CoreError, NotFound

log = structlog.get_logger()

PLACEHOLDER_PREFIX = "dnah_secret_"


def new_placeholder() -> str:
    """What a sandbox's environment holds for a secret: unguessable, so a placeholder found in
    traffic names exactly one grant, and of the characters a header value keeps intact."""
    return PLACEHOLDER_PREFIX + secrets.token_hex(16)


class SecretBox:
    """Seals and opens values with the core's 32-byte key (``CoreConfig.secrets_key``)."""

    def __init__(self, key: bytes) -> None:
        self._box = nacl.secret.SecretBox(key)

    def seal(self, value: str) -> bytes:
        return bytes(self._box.encrypt(value.encode()))

    def open(self, sealed: bytes) -> str:
        try:
            return self._box.decrypt(sealed).decode()
        except nacl.exceptions.CryptoError:
            # the key changed since the value was sealed: an operator's mistake to report
            raise CoreError("a stored secret does not open with this core's DNAH_SECRETS_KEY") from None


class SecretService:
    def __init__(self, db: asyncpg.Pool, box: SecretBox) -> None:
        self._db = db
        self._box = box

    async def create(self, org_id: str, *, name: str, value: str, hosts: list[str]) -> SecretRecord:
        """Store a new secret; a name the org already uses is a 409 (``replace`` changes one)."""
        with translate(f"a secret named {name!r} already exists"):
            rec = await secrets_db.insert(
                self._db,
                secret_id="sec_" + uuid.uuid4().hex,
                org_id=org_id,
                name=name,
                sealed=self._box.seal(value),
                hosts=_hosts(hosts),
            )
        log.info("secret_created", org_id=org_id, secret=name, hosts=rec.hosts)
        return rec

    async def replace(self, org_id: str, *, name: str, value: str, hosts: list[str]) -> SecretRecord:
        """A new value and hosts, the grants kept: sandboxes take them at their next start
        (a running one keeps what its host was given)."""
        rec = await secrets_db.replace(
            self._db, org_id=org_id, name=name, sealed=self._box.seal(value), hosts=_hosts(hosts)
        )
        if rec is None:
            raise NotFound(f"secret {name!r} not found")
        log.info("secret_replaced", org_id=org_id, secret=name, hosts=rec.hosts)
        return rec

    async def list(self, org_id: str) -> list[SecretRecord]:
        return await secrets_db.list_for_org(self._db, org_id)

    async def delete(self, org_id: str, name: str) -> None:
        """Forget the secret and its grants. Sandboxes that run keep what their host was given
        until they stop; from their next start on, their placeholder stays a placeholder."""
        if not await secrets_db.delete(self._db, org_id, name):
            raise NotFound(f"secret {name!r} not found")
        log.info("secret_deleted", org_id=org_id, secret=name)


def _hosts(hosts: list[str]) -> list[str]:
    return list(dict.fromkeys(h.lower() for h in hosts))


async def sandbox_grants(
    db: asyncpg.Pool | asyncpg.Connection, key: bytes, sandbox_id: str
) -> list[SecretGrant]:
    """The sandbox's secrets with their values opened: for the spec its host gets."""
    box = SecretBox(key)
    return [
        SecretGrant(name=g.name, placeholder=g.placeholder, value=box.open(g.sealed), hosts=g.hosts)
        for g in await secrets_db.grants_for(db, sandbox_id)
    ]


async def grant(conn: asyncpg.Connection, org_id: str, sandbox_id: str, placeholders: dict[str, str]) -> None:
    """Record the sandbox's grants in the caller's transaction; an unknown name is a 400 (and
    the caller's transaction, rolled back, leaves nothing behind)."""
    if not placeholders:
        return
    missing = await secrets_db.grant(conn, org_id, sandbox_id, placeholders)
    if missing:
        raise BadRequest(
            f"no secret named {', '.join(repr(n) for n in missing)}; create it with POST /v1/secrets"
        )
