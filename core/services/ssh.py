"""SSH access to sandboxes: tokens, authorized keys, and what the SSH gateway may open.

Tokens are random (``contracts.ssh.SSH_TOKEN_LENGTH`` letters and digits, ~190 bits) and only
their SHA-256 is stored, so a database dump holds no usable token; a lookup is by the hash,
so comparing is the index's job and leaks nothing about near misses. A token authenticates
for its one sandbox until it expires or is revoked (the row is deleted). Keys are stored as
OpenSSH lines with their SHA256 fingerprint; replacing a sandbox's set deletes the old rows in
the same transaction, so a rotated-out key is refused from the next authentication on.

The SSH gateway authenticates itself with the shared ``DNAH_SSH_GATEWAY_TOKEN`` and then names
sandboxes by id; ``relay_target`` is the one check every stream it opens goes through: the
sandbox exists, is started and has a host (each stream also counts as activity).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import uuid
from datetime import UTC, datetime

import asyncpg

from contracts import ssh
from core.config import CoreConfig
from core.db import sandboxes as sandboxes_db
from core.db.hosts import HostRecord
from core.db.sandboxes import SandboxRecord
from core.errors import BadRequest, Conflict, Forbidden, NotFound
from core.services.sandboxes import ACTIVITY_GRANULARITY_S, SandboxService

KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)
"""Public key types accepted (no certificates, no DSA)."""


def new_token() -> str:
    return "".join(secrets.choice(ssh.SSH_TOKEN_CHARS) for _ in range(ssh.SSH_TOKEN_LENGTH))


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_public_key(line: str) -> tuple[str, str]:
    """``(canonical "type base64", fingerprint)`` of an OpenSSH public key line; the comment
    is dropped. Raises ``BadRequest`` naming what is wrong."""
    parts = line.strip().split()
    if len(parts) < 2 or parts[0] not in KEY_TYPES:
        raise BadRequest(f"a public key is '<type> <base64> [comment]' with type one of {sorted(KEY_TYPES)}")
    kind, data = parts[0], parts[1]
    try:
        blob = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("the public key's data is not base64") from None
    name_length = int.from_bytes(blob[:4], "big") if len(blob) >= 4 else -1
    if blob[4 : 4 + name_length].decode(errors="replace") != kind:
        raise BadRequest(f"the public key's data is not a {kind} key")
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"{kind} {data}", f"SHA256:{digest}"


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class SshService:
    def __init__(self, db: asyncpg.Pool, sandboxes: SandboxService, config: CoreConfig) -> None:
        self._db = db
        self._sandboxes = sandboxes
        self._config = config

    # what clients are told -------------------------------------------------------------------

    def endpoint(self, public_host: str) -> tuple[str, int]:
        """The SSH gateway's host and port as clients reach it: ``DNAH_SSH_HOST`` (else the
        host of the public URL the request came through) and ``DNAH_SSH_PORT``."""
        return self._config.ssh_host or public_host, self._config.ssh_port

    @staticmethod
    def command(user: str, host: str, port: int) -> str:
        return f"ssh -p {port} {user}@{host}" if port != 22 else f"ssh {user}@{host}"

    # tokens ----------------------------------------------------------------------------------

    async def create_access(
        self, org_id: str, ref: str, minutes: int
    ) -> tuple[str, str, str, datetime, datetime]:
        """A new token for the org's sandbox: ``(access id, sandbox id, token, created,
        expires)``. Expired tokens of the sandbox are deleted on the way."""
        if not 1 <= minutes <= ssh.MAX_EXPIRES_MINUTES:
            raise BadRequest(f"expiresInMinutes must be 1 to {ssh.MAX_EXPIRES_MINUTES}")
        rec = await self._live(org_id, ref)
        token = new_token()
        access_id = str(uuid.uuid4())
        async with self._db.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM ssh_access WHERE sandbox_id = $1 AND expires_at <= now()", rec.id)
            row = await conn.fetchrow(
                "INSERT INTO ssh_access (id, sandbox_id, token_sha256, expires_at)"
                " VALUES ($1, $2, $3, now() + make_interval(mins => $4))"
                " RETURNING created_at, expires_at",
                access_id,
                rec.id,
                token_hash(token),
                minutes,
            )
        return access_id, rec.id, token, row["created_at"], row["expires_at"]

    async def revoke(self, org_id: str, ref: str, token: str | None) -> None:
        """Revoke one token of the sandbox, or all of them when ``token`` is None."""
        rec = await self._sandboxes.get(org_id, ref)
        if token is None:
            await self._db.execute("DELETE FROM ssh_access WHERE sandbox_id = $1", rec.id)
            return
        deleted = await self._db.fetchval(
            "DELETE FROM ssh_access WHERE sandbox_id = $1 AND token_sha256 = $2 RETURNING id",
            rec.id,
            token_hash(token),
        )
        if deleted is None:
            raise NotFound("no such SSH access token for this sandbox")

    async def sandbox_of_token(self, token: str, org_id: str | None = None) -> str | None:
        """The sandbox a live token opens (of ``org_id`` when given), else None."""
        if len(token) != ssh.SSH_TOKEN_LENGTH:
            return None
        sandbox_id: str | None = await self._db.fetchval(
            "SELECT a.sandbox_id FROM ssh_access a JOIN sandboxes s ON s.id = a.sandbox_id"
            " WHERE a.token_sha256 = $1 AND a.expires_at > now() AND s.state <> 'destroyed'"
            " AND ($2::text IS NULL OR s.org_id = $2)",
            token_hash(token),
            org_id,
        )
        return sandbox_id

    # keys ------------------------------------------------------------------------------------

    async def set_keys(self, org_id: str, ref: str, lines: list[str]) -> tuple[str, list[ssh.SshKey]]:
        """Replace the sandbox's authorized keys (an empty list removes them all)."""
        parsed = dict((fp, key) for key, fp in map(parse_public_key, lines))
        rec = await self._live(org_id, ref)
        async with self._db.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM ssh_keys WHERE sandbox_id = $1", rec.id)
            await conn.executemany(
                "INSERT INTO ssh_keys (sandbox_id, fingerprint, public_key) VALUES ($1, $2, $3)",
                [(rec.id, fp, key) for fp, key in parsed.items()],
            )
        return rec.id, await self._keys(rec.id)

    async def list_keys(self, org_id: str, ref: str) -> tuple[str, list[ssh.SshKey]]:
        rec = await self._sandboxes.get(org_id, ref)
        return rec.id, await self._keys(rec.id)

    async def _keys(self, sandbox_id: str) -> list[ssh.SshKey]:
        rows = await self._db.fetch(
            "SELECT fingerprint, public_key, created_at FROM ssh_keys WHERE sandbox_id = $1"
            " ORDER BY created_at, fingerprint",
            sandbox_id,
        )
        return [
            ssh.SshKey(
                fingerprint=r["fingerprint"], public_key=r["public_key"], created_at=iso(r["created_at"])
            )
            for r in rows
        ]

    async def key_authorized(self, sandbox_id: str, public_key: str) -> bool:
        try:
            _, fingerprint = parse_public_key(public_key)
        except BadRequest:
            return False
        found = await self._db.fetchval(
            "SELECT 1 FROM ssh_keys k JOIN sandboxes s ON s.id = k.sandbox_id"
            " WHERE k.sandbox_id = $1 AND k.fingerprint = $2 AND s.state <> 'destroyed'",
            sandbox_id,
            fingerprint,
        )
        return found is not None

    # the SSH gateway -------------------------------------------------------------------------

    def gateway_allowed(self, bearer: str | None) -> bool:
        """Whether ``bearer`` is the SSH gateway's token (constant-time)."""
        expected = self._config.ssh_gateway_token
        return bool(expected and bearer) and hmac.compare_digest(str(bearer).encode(), str(expected).encode())

    async def authenticate(self, request: ssh.SshAuthRequest) -> ssh.SshAuthResult:
        """What the SSH gateway asks at login; ``Forbidden`` when refused."""
        if request.token is not None:
            sandbox_id = await self.sandbox_of_token(request.token)
            if sandbox_id is not None:
                return ssh.SshAuthResult(sandbox_id=sandbox_id)
        elif (
            request.sandbox_id
            and request.public_key
            and await self.key_authorized(request.sandbox_id, request.public_key)
        ):
            return ssh.SshAuthResult(sandbox_id=request.sandbox_id)
        raise Forbidden("not authorized for SSH")

    async def relay_target(self, sandbox_id: str) -> tuple[SandboxRecord, HostRecord]:
        """The sandbox (by id, any org) and its host, if it is started; records activity."""
        row = await self._db.fetchval("SELECT org_id FROM sandboxes WHERE id = $1", sandbox_id)
        if row is None:
            raise NotFound(f"sandbox {sandbox_id!r} not found")
        found = await sandboxes_db.get_with_host(self._db, row, sandbox_id)
        if found is None or found[0].state == "destroyed":
            raise NotFound(f"sandbox {sandbox_id!r} not found")
        rec, host = found
        if rec.state != "started" or host is None:
            raise Conflict(f"sandbox is {rec.state}; SSH needs a started sandbox")
        await sandboxes_db.touch(self._db, rec.id, ACTIVITY_GRANULARITY_S)
        return rec, host

    async def _live(self, org_id: str, ref: str) -> SandboxRecord:
        rec = await self._sandboxes.get(org_id, ref)
        if rec.state == "destroyed":
            raise NotFound(f"sandbox {ref!r} not found")
        return rec
