"""Preview URLs: who may reach a server listening on a port inside a sandbox, and whether the
sandbox is in a state to answer (docs/network.md, "Preview URLs and tokens").

Management (org-scoped, through the native and Daytona adapters): the sandbox's preview token,
signed tokens and their early expiry, per-port exposures, the ``public`` and
``wake_on_traffic`` settings. Traffic (``admit``, for every preview request, through the core's
``/preview`` proxy): one database round trip (``previews_db.target``) decides.

Who may:

- anyone, when the sandbox is public or the port is exposed publicly;
- a holder of the sandbox's preview token (any port) or of the port's exposure token;
- a holder of a signed token for this sandbox and port, until it expires or is expired;
- a holder of an API key of the sandbox's org (Daytona's SDK documents it);
- for E2B's SDK: its ``X-Access-Token`` when it is the sandbox's ``envd_token``, and its
  ``E2B-Traffic-Access-Token``, which is the preview token under E2B's name.

A request without any of these is 401; with a wrong, expired or revoked one 403. Nothing is
forwarded before the decision.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec
import structlog

from core.config import CoreConfig
from core.db import previews as previews_db
from core.db import sandboxes as sandboxes_db
from core.db.hosts import HostRecord
from core.db.previews import Exposure
from core.db.sandboxes import SandboxRecord
from core.errors import BadRequest, Conflict, CoreError, Forbidden, NotFound, NotRunning, Unauthorized
from core.services import preview_signing
from core.services.auth import AuthService
from core.services.lifecycle import LifecycleService
from core.services.preview_signing import TokenRefused

log = structlog.get_logger()

SIGNED_DEFAULT_S = 60
"""A signed URL's life when the caller names none (Daytona's default)."""
SIGNED_MAX_S = 7 * 86400
"""The longest a signed URL may live: longer is a credential that never ends."""
EXPOSURE_MAX_S = 365 * 86400
ACTIVITY_GRANULARITY_S = 1.0
"""Preview traffic is activity (it keeps a sandbox from its idle stop), written at most once
a second, as for every other activity."""
WAKE_WAIT_S = 120.0
"""How long a request waits for a sandbox another request (or core) is resuming."""
_WAKE_POLL_S = 0.1


class TokenRequired(Unauthorized):
    code = "preview_token_required"


class TokenInvalid(Forbidden):
    code = "preview_token_invalid"


class Credentials(msgspec.Struct, frozen=True, kw_only=True):
    """What a preview request carries that may open it (each already taken off the request)."""

    token: str | None = None
    """``x-daytona-preview-token`` / ``x-dnah-preview-token``: a plain or a signed token."""
    signed: str | None = None
    """A signed token from the query (``dnah_preview_token``) or the port's cookie."""
    authorization: str | None = None
    """An ``Authorization`` header, which opens the sandbox only if it is an API key of its org."""
    access_token: str | None = None
    """E2B's ``X-Access-Token``: opens every port of a sandbox whose ``envd_token`` it is."""

    def any(self) -> bool:
        return bool(self.token or self.signed or self.authorization or self.access_token)


class Admitted(msgspec.Struct, frozen=True, kw_only=True):
    sandbox: SandboxRecord
    host: HostRecord
    via: str
    """What let the request in: ``public``, ``token``, ``signed``, ``api_key``."""
    signed_expires_at: int | None = None
    """For ``signed``: the token's expiry (a cookie made from it lives as long)."""
    api_key_used: bool = False
    """The ``Authorization`` header was the caller's API key (never passed to the sandbox)."""


class Signed(msgspec.Struct, frozen=True, kw_only=True):
    sandbox: SandboxRecord
    token: str
    expires_at: int


def check_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise BadRequest(f"port must be between 1 and 65535, got {port}")
    return port


class PreviewService:
    def __init__(
        self,
        db: asyncpg.Pool,
        lifecycle: LifecycleService,
        auth: AuthService,
        config: CoreConfig,
    ) -> None:
        self._db = db
        self._lifecycle = lifecycle
        self._auth = auth
        self._secret = config.preview_secret or secrets.token_bytes(32)
        self._waking: dict[str, asyncio.Task[None]] = {}

    # management --------------------------------------------------------------------------------

    async def _live(self, org_id: str, ref: str) -> SandboxRecord:
        rec = await sandboxes_db.get(self._db, org_id, ref)
        if rec is None or rec.state == "destroyed":
            raise NotFound(f"sandbox {ref!r} not found")
        return rec

    async def token(self, org_id: str, ref: str, port: int) -> tuple[SandboxRecord, str]:
        """The sandbox and its preview token (made now if it has none yet)."""
        check_port(port)
        rec = await self._live(org_id, ref)
        token = rec.preview_token or await previews_db.ensure_token(
            self._db, rec.id, secrets.token_urlsafe(24)
        )
        return rec, token

    async def sign(self, org_id: str, ref: str, port: int, expires_in_s: int | None) -> Signed:
        check_port(port)
        life = SIGNED_DEFAULT_S if expires_in_s is None else expires_in_s
        if not 1 <= life <= SIGNED_MAX_S:
            raise BadRequest(f"expiresInSeconds must be between 1 and {SIGNED_MAX_S}, got {life}")
        rec = await self._live(org_id, ref)
        expires_at = int(time.time()) + life
        return Signed(
            sandbox=rec,
            token=preview_signing.sign(self._secret, rec.id, port, expires_at),
            expires_at=expires_at,
        )

    async def expire_signed(self, org_id: str, ref: str, port: int, token: str) -> None:
        """Refuse ``token`` from now on. One already expired needs nothing; one that was never
        this sandbox's and port's is a 404, so the caller learns that it expired nothing."""
        check_port(port)
        rec = await self._live(org_id, ref)
        try:
            nonce, expires_at = preview_signing.verify(self._secret, token, rec.id, port, time.time())
        except TokenRefused as exc:
            if str(exc).endswith("expired"):
                return
            raise NotFound("no signed preview URL with this token for this sandbox and port") from None
        await previews_db.revoke(self._db, rec.id, nonce, expires_at)

    async def expose(
        self, org_id: str, ref: str, port: int, *, public: bool, ttl_s: int | None
    ) -> tuple[SandboxRecord, Exposure]:
        check_port(port)
        if ttl_s is not None and not 1 <= ttl_s <= EXPOSURE_MAX_S:
            raise BadRequest(
                f"ttl_seconds must be between 1 and {EXPOSURE_MAX_S} (or null: no end), got {ttl_s}"
            )
        rec = await self._live(org_id, ref)
        exposure = await previews_db.expose(
            self._db, rec.id, port, token=secrets.token_urlsafe(24), public=public, ttl_s=ttl_s
        )
        return rec, exposure

    async def exposures(self, org_id: str, ref: str) -> tuple[SandboxRecord, list[Exposure]]:
        rec = await self._live(org_id, ref)
        return rec, await previews_db.exposures(self._db, rec.id)

    async def unexpose(self, org_id: str, ref: str, port: int) -> None:
        check_port(port)
        rec = await self._live(org_id, ref)
        if not await previews_db.unexpose(self._db, rec.id, port):
            raise NotFound(f"port {port} is not exposed")

    async def configure(
        self, org_id: str, ref: str, *, public: bool | None = None, wake_on_traffic: bool | None = None
    ) -> SandboxRecord:
        """Set whether its ports are public and whether traffic wakes it (None: unchanged)."""
        rec = await self._live(org_id, ref)
        fields = {
            name: value
            for name, value in (("public", public), ("wake_on_traffic", wake_on_traffic))
            if value is not None
        }
        updated = await sandboxes_db.update_fields(self._db, rec.id, **fields)
        if updated is None:
            raise NotFound(f"sandbox {ref!r} not found")
        return updated

    # traffic -----------------------------------------------------------------------------------

    async def admit(self, sandbox_id: str, port: int, creds: Credentials) -> Admitted:
        """Decide one preview request: who may (else 401/403), and the state (a paused sandbox
        that wakes on traffic is resumed first; any other not started one is a 409)."""
        check_port(port)
        signed = creds.signed or (
            creds.token if creds.token and preview_signing.looks_signed(creds.token) else None
        )
        nonce = preview_signing.nonce_of(signed) if signed else None
        target = await previews_db.target(self._db, sandbox_id, port, nonce)
        if target is None or target.sandbox.state == "destroyed":
            raise NotFound(f"sandbox {sandbox_id!r} not found")
        rec = target.sandbox
        via, expires_at, api_key_used = await self._who(target, port, creds, signed)
        host = target.host
        if rec.state != "started" or host is None:
            rec, host = await self._wake(rec)
        await self._touch(rec)
        return Admitted(
            sandbox=rec, host=host, via=via, signed_expires_at=expires_at, api_key_used=api_key_used
        )

    async def _who(
        self, target: previews_db.Target, port: int, creds: Credentials, signed: str | None
    ) -> tuple[str, int | None, bool]:
        """What lets the request in, the signed token's expiry, and whether its
        ``Authorization`` is a key of ours (then it is never passed on, whoever let it in)."""
        rec = target.sandbox
        key_org = await self._key_org(creds.authorization)
        is_key = key_org is not None
        refusal: str | None = None
        if signed is not None:
            try:
                _, expires_at = preview_signing.verify(self._secret, signed, rec.id, port, time.time())
            except TokenRefused as exc:
                refusal = str(exc)
            else:
                if not target.revoked:
                    return "signed", expires_at, is_key
                refusal = "the signed preview URL was expired"
        if creds.token and creds.token != signed:
            if _equal(creds.token, rec.preview_token) or _equal(creds.token, target.exposure_token):
                return "token", None, is_key
            refusal = refusal or "the preview token is not valid for this sandbox and port"
        if creds.access_token:
            if _equal(creds.access_token, rec.envd_token):
                return "token", None, is_key
            refusal = refusal or "the access token is not valid for this sandbox"
        if key_org == rec.org_id:
            return "api_key", None, True
        if rec.public or target.exposure_public:
            return "public", None, is_key
        if refusal is not None:
            raise TokenInvalid(refusal)
        if is_key:
            raise TokenInvalid("this API key's org does not own the sandbox; send its preview token")
        raise TokenRequired(
            "this sandbox's preview is private: send its preview token in x-daytona-preview-token,"
            " or open a signed preview URL"
        )

    async def _key_org(self, authorization: str | None) -> str | None:
        """The org of ``authorization`` if it is one of our API keys, else None (an app's own
        credential, or nothing)."""
        if not authorization or not authorization.lower().startswith("bearer "):
            return None
        try:
            return (await self._auth.authenticate(authorization, None)).org_id
        except CoreError:
            return None

    async def _wake(self, rec: SandboxRecord) -> tuple[SandboxRecord, HostRecord]:
        if rec.state in ("paused", "resuming") and rec.wake_on_traffic:
            task = self._waking.get(rec.id)
            if task is None:
                task = asyncio.create_task(self._resume(rec))
                self._waking[rec.id] = task
                task.add_done_callback(lambda _: self._waking.pop(rec.id, None))
            await asyncio.shield(task)
            found = await sandboxes_db.get_with_host(self._db, rec.org_id, rec.id)
            if found is not None and found[0].state == "started" and found[1] is not None:
                return found[0], found[1]
            rec = found[0] if found else rec
        if rec.state == "paused":
            advice = "resume it (or set wake_on_traffic) to reach its ports"
        elif rec.state in ("stopped", "archived"):
            advice = "start it to reach its ports"
        elif rec.state == "error":
            advice = "recover it to reach its ports"
        else:
            advice = "its ports are reachable once it is started"
        raise NotRunning(f"sandbox is {rec.state}; {advice}")

    async def _resume(self, rec: SandboxRecord) -> None:
        """Resume the sandbox; when another request or core is already resuming it, wait for
        that instead (up to ``WAKE_WAIT_S``)."""
        log.info("preview_wake", sandbox_id=rec.id)
        try:
            await self._lifecycle.resume(rec.org_id, rec.id)
            return
        except Conflict:
            pass
        deadline = time.monotonic() + WAKE_WAIT_S
        while time.monotonic() < deadline:
            current = await sandboxes_db.get_any(self._db, rec.id)
            if current is None or current.state != "resuming":
                return
            await asyncio.sleep(_WAKE_POLL_S)

    async def _touch(self, rec: SandboxRecord) -> None:
        now = datetime.now(UTC)
        if now - rec.last_activity_at >= timedelta(seconds=ACTIVITY_GRANULARITY_S):
            await sandboxes_db.touch(self._db, rec.id, ACTIVITY_GRANULARITY_S)


def _equal(given: str, expected: str | None) -> bool:
    return expected is not None and hmac.compare_digest(given.encode(), expected.encode())
