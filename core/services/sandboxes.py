"""Sandbox operations: create, read, list, delete, and the operations inside a sandbox (exec,
run-code, dirs, metrics). One implementation; the native and Daytona HTTP shapes both call it.

Operations inside a sandbox reach its agent through hostd: ``exec`` through its own host
route, everything else through the generic relay (``HostClient.call`` with a
``contracts.guest`` request). A new in-sandbox operation is a request/reply pair in
``contracts/guest.py``, a handler in the agent, and a method of a toolbox service
(``core/services/toolbox/``) built on ``ask``.

Activity. Operations inside a sandbox count as activity (seed 001: exec, run-code, files,
sessions, git, metrics, terminal); reading or listing sandboxes does not. Activity moves
``last_activity_at``, at most once per ``ACTIVITY_GRANULARITY_S``: the row's value, already
loaded with the sandbox, is compared with the core's clock, and only when it is older is the
conditional UPDATE sent (``sandboxes_db.touch``), so a busy sandbox costs one write per
second, not one per call. (The core's and Postgres's clocks are assumed to agree to well
within the idle timeouts this feeds, which are minutes.)
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import math
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import TypeVar, cast

import asyncpg
import msgspec
import structlog

from contracts import guest
from contracts.host import EgressPolicy, ExecRequest, ExecResult, FileWritten, SandboxInfo, SandboxSpec
from core.config import CoreConfig
from core.db import hosts as hosts_db
from core.db import sandboxes as sandboxes_db
from core.db.errors import translate
from core.db.hosts import HostRecord
from core.db.sandboxes import SandboxRecord
from core.errors import (
    BadRequest,
    Conflict,
    CoreError,
    Forbidden,
    HostUnavailable,
    InsufficientStorage,
    NoCapacity,
    NotFound,
    PayloadTooLarge,
    SnapshotRejected,
    Unauthorized,
)
from core.hostclient import HostClient, HostFile
from core.services import secrets
from core.states import sources
from core.terminal_client import HostTerminal, open_terminal

log = structlog.get_logger()

LANGUAGES = frozenset({"python", "typescript", "javascript", "bash"})
ACTIVITY_GRANULARITY_S = 1.0
"""``last_activity_at`` is moved only when it is at least this old (see the module doc)."""

_Reply = TypeVar("_Reply", bound=msgspec.Struct)
"""The reply type ``_ask`` expects: one of ``contracts.guest.GuestToHost``."""


class SandboxMetrics(msgspec.Struct, frozen=True, kw_only=True):
    """A sandbox's resources as it sees them (its agent), its disk as its host measures it,
    and its age, state and last activity from its row."""

    cpu_count: int
    mem_total_mb: int
    mem_used_mb: int
    load_1m: float
    disk_used_mb: int
    age_seconds: int
    state: str
    last_activity_at: datetime


class NewSandbox(msgspec.Struct, frozen=True, kw_only=True):
    """A create request after an adapter has translated it; None means 'use the default'."""

    template: str | None = None
    name: str | None = None
    cpu: int | None = None
    ram_mb: int | None = None
    disk_gb: int | None = None
    env: dict[str, str] = {}
    labels: dict[str, str] = {}
    language: str | None = None
    lifecycle: str | None = None
    """A preset (``PRESETS``); None: ``persistent``."""
    auto_stop_minutes: int | msgspec.UnsetType | None = msgspec.UNSET
    """UNSET: the preset's value; None: never; else minutes (and the same for the others)."""
    auto_archive_minutes: int | msgspec.UnsetType | None = msgspec.UNSET
    auto_delete_minutes: int | msgspec.UnsetType | None = msgspec.UNSET
    egress: EgressPolicy | None = None
    """None: the operator's default."""
    secrets: list[str] = []
    """Names of the org's secrets: each becomes ``NAME=<placeholder>`` in the environment."""


class Origin(msgspec.Struct, frozen=True, kw_only=True):
    """Where a cloned sandbox comes from: the snapshot, its host and sandbox, and how to boot
    the new sandbox from it there."""

    snapshot_id: str
    host_id: str
    parent_id: str
    template: str
    memory: bool
    """The snapshot holds memory: the new sandbox continues the parent's processes."""
    boot: Callable[[HostRecord, SandboxSpec], Awaitable[SandboxInfo]]


class Timers(msgspec.Struct, frozen=True, kw_only=True):
    """A lifecycle preset's automatic timers, in minutes; None: never."""

    auto_stop_minutes: int | None = None
    auto_archive_minutes: int | None = None
    auto_delete_minutes: int | None = None


PRESETS: dict[str, Timers] = {
    "persistent": Timers(),
    "ephemeral": Timers(auto_stop_minutes=15, auto_archive_minutes=7 * 1440, auto_delete_minutes=30 * 1440),
}
"""``persistent`` (the default): nothing happens by itself. ``ephemeral``: stopped after 15
idle minutes, archived 7 days after it stopped, deleted 30 days after it stopped (seed 001's
presets; see docs/lifecycle.md). Explicit values always win over the preset."""

TIMER_MAX_MINUTES = 525_600 * 10
"""Ten years: longer is a typo, not a plan."""


def check_timer(field: str, minutes: int | None, *, zero_ok: bool = False) -> int | None:
    if minutes is not None and not (0 if zero_ok else 1) <= minutes <= TIMER_MAX_MINUTES:
        low = 0 if zero_ok else 1
        raise BadRequest(
            f"{field} must be between {low} and {TIMER_MAX_MINUTES} minutes (or never), got {minutes}"
        )
    return minutes


def _check_range(field: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise BadRequest(f"{field} must be between {low} and {high}, got {value}")
    return value


def _check_name(name: str) -> str:
    if not 1 <= len(name) <= 63 or not all(c.isalnum() or c in "-_." for c in name):
        raise BadRequest("name must be 1-63 characters of letters, digits, '-', '_' or '.'")
    return name


class SandboxService:
    def __init__(self, db: asyncpg.Pool, hosts: HostClient, config: CoreConfig) -> None:
        self._db = db
        self._hosts = hosts
        self._config = config
        self.on_claim: Callable[[], None] | None = None
        """Called after a warm-pool claim (the pool's refill listens)."""

    def _resolve(self, new: NewSandbox, sandbox_id: str, org_id: str) -> SandboxRecord:
        lim = self._config.limits
        cpu = _check_range("cpu", new.cpu if new.cpu is not None else lim.default_cpu, 1, lim.max_cpu)
        ram = new.ram_mb if new.ram_mb is not None else lim.default_ram_mb
        _check_range("ram_mb", ram, lim.min_ram_mb, lim.max_ram_mb)
        disk = new.disk_gb if new.disk_gb is not None else lim.default_disk_gb
        _check_range("disk_gb", disk, 1, lim.max_disk_gb)
        language = new.language or "python"
        if language not in LANGUAGES:
            raise BadRequest(f"language must be one of {', '.join(sorted(LANGUAGES))}, got {language!r}")
        lifecycle = new.lifecycle or "persistent"
        if lifecycle not in PRESETS:
            raise BadRequest(f"lifecycle must be one of {', '.join(PRESETS)}, got {lifecycle!r}")
        preset = PRESETS[lifecycle]
        timers = {
            field: getattr(preset, field)
            if isinstance(getattr(new, field), msgspec.UnsetType)
            else getattr(new, field)
            for field in Timers.__struct_fields__
        }
        for field, minutes in timers.items():
            check_timer(field, minutes, zero_ok=field == "auto_delete_minutes")
        env = new.env
        if new.secrets:
            clash = sorted(set(new.secrets) & set(env))
            if clash:
                raise BadRequest(f"{clash[0]!r} is both a variable of env and a secret; give it once")
            env = {**env, **{name: secrets.new_placeholder() for name in new.secrets}}
        now = datetime.now().astimezone()
        return SandboxRecord(
            id=sandbox_id,
            org_id=org_id,
            name=_check_name(new.name) if new.name is not None else sandbox_id,
            host_id=None,
            template=new.template or self._config.default_template,
            cpu=cpu,
            ram_mb=ram,
            disk_gb=disk,
            env=env,
            labels=new.labels,
            language=language,
            state="creating",
            error_reason=None,
            ip=None,
            lifecycle=lifecycle,
            auto_stop_minutes=timers["auto_stop_minutes"],
            auto_archive_minutes=timers["auto_archive_minutes"],
            auto_delete_minutes=timers["auto_delete_minutes"],
            created_at=now,
            updated_at=now,
            last_activity_at=now,
            egress=msgspec.to_builtins(new.egress) if new.egress is not None else None,
        )

    async def create(
        self, org_id: str, new: NewSandbox, *, origin: Origin | None = None, placement: str | None = None
    ) -> SandboxRecord:
        """Place, record as ``creating``, boot on the host, then flip to ``started``.

        A create of the default size for a template with a warm pool claims a pool sandbox
        instead (``_claim_warm``). ``placement`` pins the host (the pool's refill uses it).
        With ``origin`` the sandbox is a clone: placed on the snapshot's host, booted from the
        snapshot (``origin.boot``), its lineage recorded. If the host fails, the row goes to
        ``destroyed`` with the reason (the host has already undone its own partial work), so
        nothing live is left behind.
        """
        rec = self._resolve(new, str(uuid.uuid4()), org_id)
        placeholders = {name: rec.env[name] for name in new.secrets}
        if origin is None and placement is None and not placeholders and self._poolable(rec):
            warm = await self._claim_warm(rec)
            if warm is not None:
                return warm
        if origin is not None:
            rec = msgspec.structs.replace(
                rec,
                parent_id=origin.parent_id,
                source_snapshot_id=origin.snapshot_id,
                template=origin.template,
                from_memory=origin.memory,
            )
        sched = self._config.scheduler
        async with self._db.acquire() as conn, conn.transaction():
            host = await hosts_db.place(
                conn,
                template=rec.template,
                cpu=rec.cpu,
                ram_mb=rec.ram_mb,
                disk_gb=rec.disk_gb,
                cpu_overcommit=sched.cpu_overcommit,
                ram_overcommit=sched.ram_overcommit,
                fresh_within_s=sched.host_stale_after_s,
                only_host=origin.host_id if origin else placement,
            )
            if host is None:
                # Only now, off the common path: no host may have room because none has it.
                if not await hosts_db.template_known(conn, rec.template):
                    raise BadRequest(f"unknown template {rec.template!r}")
                raise NoCapacity(
                    "the snapshot's host has no room for this sandbox"
                    if origin
                    else "no ready host has room for this sandbox"
                )
            with translate(f"a sandbox named {rec.name!r} already exists"):
                rec = await sandboxes_db.insert(conn, msgspec.structs.replace(rec, host_id=host.id))
            await secrets.grant(conn, org_id, rec.id, placeholders)
        log.info("sandbox_placed", sandbox_id=rec.id, host=host.name)
        try:
            spec = await spec_for(self._db, self._config, rec)
            if origin is None:
                info = await self._hosts.create(host, spec)
            else:
                info = await origin.boot(host, spec)
        except CoreError as exc:
            await sandboxes_db.transition(
                self._db, rec.id, from_states=sources("destroyed"), to="destroyed", error_reason=exc.message
            )
            if isinstance(exc, SnapshotRejected):
                raise  # the request's fault, not the host's: say so as it is
            raise HostUnavailable(f"sandbox could not be created: {exc.message}") from exc
        started = await sandboxes_db.transition(
            self._db, rec.id, from_states=sources("started"), to="started", ip=info.ip
        )
        if started is None:  # the reconciler gave up on it meanwhile; undo on the host
            await self._destroy_on_host(host, rec.id)
            raise Conflict("sandbox was reclaimed while it was being created")
        return started

    def _poolable(self, rec: SandboxRecord) -> bool:
        lim = self._config.limits
        return (
            self._config.warm_pool.get(rec.template, 0) > 0
            and rec.egress is None  # a pool sandbox runs with the operator's default
            and rec.org_id != sandboxes_db.POOL_ORG
            and (rec.cpu, rec.ram_mb, rec.disk_gb)
            == (lim.default_cpu, lim.default_ram_mb, lim.default_disk_gb)
        )

    async def _claim_warm(self, rec: SandboxRecord) -> SandboxRecord | None:
        """Take a pool sandbox its host has confirmed running (one UPDATE; see
        ``sandboxes_db.CLAIMABLE``), give it ``rec``'s environment (the agent's, for commands
        from now on) and tell the pool to refill. None when the pool has none claimable: the
        caller boots one cold. The environment is applied before the claim
        commits, so a failure leaves the sandbox in the pool and the caller goes cold."""
        async with self._db.acquire() as conn:
            try:
                async with conn.transaction():
                    with translate(f"a sandbox named {rec.name!r} already exists"):
                        claimed = await sandboxes_db.claim_from_pool(
                            conn, rec, fresh_within_s=self._config.scheduler.host_stale_after_s
                        )
                    if claimed is None:
                        return None
                    if rec.env:
                        host = await hosts_db.get(conn, claimed.host_id) if claimed.host_id else None
                        if host is None:
                            raise HostUnavailable("the pool sandbox's host is gone")
                        await self._ask(host, claimed, guest.EnvSet(id=0, env=rec.env), guest.EnvDone)
            except HostUnavailable as exc:
                log.warning("warm_claim_failed", error=exc.message)
                return None
        log.info("sandbox_claimed_warm", sandbox_id=claimed.id)
        if self.on_claim is not None:
            self.on_claim()
        return claimed

    async def get(self, org_id: str, ref: str) -> SandboxRecord:
        rec = await sandboxes_db.get(self._db, org_id, ref)
        if rec is None:
            raise NotFound(f"sandbox {ref!r} not found")
        return rec

    async def by_envd_token(self, sandbox_id: str, token: str | None) -> SandboxRecord:
        """The sandbox an envd request names, if ``token`` (its ``X-Access-Token``) is the
        sandbox's envd token (compared in constant time). A sandbox gets one at its E2B create,
        or when E2B's connect or info first names it; until then no token opens it (its id alone
        must never be a credential). Unknown or destroyed: NotFound; a missing or wrong token,
        or none issued: Unauthorized. The caller acts for ``rec.org_id``."""
        rec = await sandboxes_db.get_any(self._db, sandbox_id)
        if rec is None or rec.state == "destroyed":
            raise NotFound(f"sandbox {sandbox_id!r} not found")
        if rec.envd_token is None:
            raise Unauthorized(
                "no envd access token was issued for this sandbox; connect it through the E2B API first"
            )
        if token is None or not hmac.compare_digest(token.encode(), rec.envd_token.encode()):
            raise Unauthorized("missing or wrong X-Access-Token for this sandbox")
        return rec

    async def list_for_org(
        self,
        org_id: str,
        *,
        states: list[str] | None = None,
        labels: dict[str, str] | None = None,
        limit: int = 100,
        before: tuple[datetime, str] | None = None,
    ) -> list[SandboxRecord]:
        return await sandboxes_db.list_for_org(
            self._db, org_id, states=states, labels=labels, limit=limit, before=before
        )

    async def delete(self, org_id: str, ref: str) -> SandboxRecord:
        rec = await self.get(org_id, ref)
        if rec.state == "destroyed":
            raise NotFound(f"sandbox {ref!r} not found")
        if await sandboxes_db.has_live_children(self._db, rec.id):
            raise Conflict("sandbox has live forks or clones; delete them first")
        moving = await sandboxes_db.transition(
            self._db, rec.id, from_states=sources("destroying"), to="destroying"
        )
        if moving is None:
            current = await self.get(org_id, rec.id)
            raise Conflict(f"sandbox is {current.state}; it cannot be deleted now")
        return await self.finish_delete(moving)

    async def finish_delete(self, rec: SandboxRecord) -> SandboxRecord:
        """Destroy on the host a sandbox already moved to ``destroying`` (by ``delete`` or by
        the reaper's claim), then mark it destroyed; a host failure leaves it in ``error``."""
        host = await hosts_db.get(self._db, rec.host_id) if rec.host_id else None
        if host is not None:
            try:
                await self._destroy_on_host(host, rec.id)
            except HostUnavailable as exc:
                await sandboxes_db.transition(
                    self._db, rec.id, from_states=sources("error"), to="error", error_reason=exc.message
                )
                raise
        done = await sandboxes_db.transition(
            self._db, rec.id, from_states=sources("destroyed"), to="destroyed"
        )
        assert done is not None, "only the caller that moved it to destroying can finish it"
        return done

    async def exec(
        self, org_id: str, ref: str, *, cmd: list[str], env: dict[str, str], cwd: str | None, timeout_ms: int
    ) -> ExecResult:
        rec, host = await self._active(org_id, ref)
        return await self._hosts.exec(
            host, rec.id, ExecRequest(cmd=cmd, env=env, cwd=cwd, timeout_ms=timeout_ms)
        )

    async def run_code(
        self,
        org_id: str,
        ref: str,
        *,
        code: str,
        language: str | None,
        argv: list[str],
        env: dict[str, str],
        cwd: str | None,
        timeout_ms: int,
    ) -> guest.ExecResult:
        """Run ``code`` with ``language``'s interpreter; no language means the sandbox's own."""
        if language is not None and language not in LANGUAGES:
            raise BadRequest(f"language must be one of {', '.join(sorted(LANGUAGES))}, got {language!r}")
        rec, host = await self._active(org_id, ref)
        msg = guest.CodeRun(
            id=0,
            language=cast("guest.Language", language or rec.language),  # checked: one of LANGUAGES
            code=code,
            argv=argv,
            env=env,
            cwd=cwd,
            timeout_ms=timeout_ms,
        )
        return await self._ask(host, rec, msg, guest.ExecResult)

    async def dirs(self, org_id: str, ref: str) -> guest.DirsResult:
        """The sandbox's home, working and project directories. Not activity: it reads what
        the template fixed."""
        rec, host = await self._running(org_id, ref)
        return await self._ask(host, rec, guest.Dirs(id=0), guest.DirsResult)

    async def metrics(self, org_id: str, ref: str) -> SandboxMetrics:
        """Limits and use from inside (the agent reads its cgroup) and the disk from the host,
        asked concurrently."""
        rec, host = await self._active(org_id, ref)
        inside, disk = await asyncio.gather(
            self._ask(host, rec, guest.Metrics(id=0), guest.MetricsResult),
            self._hosts.disk_usage(host, rec.id),
        )
        age = datetime.now(rec.created_at.tzinfo) - rec.created_at
        return SandboxMetrics(
            cpu_count=max(1, math.ceil(inside.cpus)),
            mem_total_mb=inside.mem_limit_bytes // 2**20,
            mem_used_mb=inside.mem_used_bytes // 2**20,
            load_1m=inside.load_1m,
            disk_used_mb=disk.used_bytes // 2**20,
            age_seconds=max(0, int(age.total_seconds())),
            state=rec.state,
            last_activity_at=rec.last_activity_at,
        )

    # byte streams: a file's content, never held whole here (see docs/architecture.md)

    async def upload(
        self, org_id: str, ref: str, path: str, content: AsyncIterable[bytes], *, mode: str | None = None
    ) -> FileWritten:
        """Stream ``content`` into ``path`` (parents created; an existing file replaced, keeping
        its mode unless ``mode`` is given); activity. All or nothing: more than
        ``max_upload_bytes`` is a 413, and then, as after any failure midway, the file is as it
        was before."""
        rec, host = await self._active(org_id, ref)
        result = await self._hosts.write_file(
            host, rec.id, path, mode, _limited(content, self._config.max_upload_bytes)
        )
        if isinstance(result, guest.Error):
            raise _agent_error(result)
        return result

    async def download(self, org_id: str, ref: str, path: str) -> HostFile:
        """Open the regular file ``path`` for download; activity. The caller iterates the
        result and must ``aclose`` it."""
        rec, host = await self._active(org_id, ref)
        result = await self._hosts.read_file(host, rec.id, path)
        if isinstance(result, guest.Error):
            raise _agent_error(result)
        return result

    async def require_started(self, org_id: str, ref: str) -> None:
        """Fail as any toolbox call would (404, 409) unless the sandbox is started; activity.
        For operations that answer about several things at once (a bulk download), so a
        sandbox-level error is the answer instead of one error per item."""
        await self._active(org_id, ref)

    def check_upload_size(self, announced: int | None) -> None:
        """Refuse an upload whose announced length is over the limit before reading it."""
        if announced is not None and announced > self._config.max_upload_bytes:
            raise PayloadTooLarge(_too_large(self._config.max_upload_bytes))

    async def ask(
        self,
        org_id: str,
        ref: str,
        msg: guest.HostToGuest,
        expect: type[_Reply],
        *,
        activity: bool = True,
    ) -> _Reply:
        """Relay one ``contracts.guest`` request to the agent of the org's started sandbox
        (else 404/409) and return its reply, of type ``expect``; an agent ``error`` becomes the
        matching core error. ``activity``: the call moves ``last_activity_at``. The one way the
        toolbox services (``core/services/toolbox/``) reach a sandbox's agent."""
        rec, host = await (self._active if activity else self._running)(org_id, ref)
        return await self._ask(host, rec, msg, expect)

    async def _running(self, org_id: str, ref: str) -> tuple[SandboxRecord, HostRecord]:
        """The org's sandbox and its host, if it is started (else 404 or 409)."""
        found = await sandboxes_db.get_with_host(self._db, org_id, ref)
        if found is None or found[0].state == "destroyed":
            raise NotFound(f"sandbox {ref!r} not found")
        rec, host = found
        if rec.state != "started" or host is None:
            raise Conflict(f"sandbox is {rec.state}; commands need a started sandbox")
        return rec, host

    async def _active(self, org_id: str, ref: str) -> tuple[SandboxRecord, HostRecord]:
        """``_running``, recording the call as activity; the record carries the new stamp."""
        rec, host = await self._running(org_id, ref)
        now = datetime.now(rec.last_activity_at.tzinfo)
        if now - rec.last_activity_at >= timedelta(seconds=ACTIVITY_GRANULARITY_S):
            stamp = await sandboxes_db.touch(self._db, rec.id, ACTIVITY_GRANULARITY_S)
            if stamp is not None:
                rec = msgspec.structs.replace(rec, last_activity_at=stamp)
        return rec, host

    async def _ask(
        self, host: HostRecord, rec: SandboxRecord, msg: guest.HostToGuest, expect: type[_Reply]
    ) -> _Reply:
        """Relay ``msg`` to the sandbox's agent; an agent error becomes the matching core error."""
        reply = await self._hosts.call(host, rec.id, msg)
        if isinstance(reply, guest.Error):
            raise _agent_error(reply)
        if not isinstance(reply, expect):
            answered = type(reply).__name__
            raise HostUnavailable(f"the sandbox's agent answered {answered} to {type(msg).__name__}")
        return reply

    async def _destroy_on_host(self, host: HostRecord, sandbox_id: str) -> None:
        with contextlib.suppress(NotFound):  # already gone on the host: the goal is reached
            await self._hosts.destroy(host, sandbox_id)

    # terminals (core/services/toolbox/terminals.py builds the opener): what needs the host

    async def pty_attach(
        self, org_id: str, ref: str, opener: guest.PtyAttach
    ) -> tuple[str, HostTerminal, guest.PtyInfo]:
        """Attach to a terminal (with ``opener.create``, a new ephemeral one); returns the
        sandbox id, the terminal and the session. The caller owns the terminal and must close
        it, which detaches (and kills an ephemeral session with no client left)."""
        rec, host = await self._active(org_id, ref)
        terminal, first = await open_terminal(host, rec.id, opener)
        if isinstance(first, guest.Error):
            raise _agent_error(first)
        return rec.id, terminal, first.session

    async def pty_activity(self, sandbox_id: str) -> None:
        """Typing in a terminal is activity: one conditional write a second at most."""
        await sandboxes_db.touch(self._db, sandbox_id, ACTIVITY_GRANULARITY_S)


async def _limited(content: AsyncIterable[bytes], limit: int) -> AsyncIterator[bytes]:
    """``content``, raising ``PayloadTooLarge`` as soon as it goes over ``limit`` bytes (the
    bytes beyond it are never passed on)."""
    total = 0
    async for chunk in content:
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(_too_large(limit))
        if chunk:
            yield chunk


def _too_large(limit: int) -> str:
    return f"an upload may carry at most {limit // (1024 * 1024)} MiB"


def _agent_error(reply: guest.Error) -> CoreError:
    """The core error for an agent's ``error`` reply: the request's fault (400, 404) or the
    agent's (502)."""
    if reply.code == "bad_request":
        return BadRequest(reply.message)
    if reply.code == "not_found":
        return NotFound(reply.message)
    if reply.code == "conflict":
        return Conflict(reply.message)
    if reply.code == "forbidden":
        return Forbidden(reply.message)
    if reply.code == "no_space":
        return InsufficientStorage(reply.message)
    if reply.code == "unsupported":
        return BadRequest(f"not supported by this sandbox's agent: {reply.message}")
    return HostUnavailable(f"the sandbox's agent failed: {reply.message}")


async def spec_for(
    db: asyncpg.Pool | asyncpg.Connection, config: CoreConfig, rec: SandboxRecord
) -> SandboxSpec:
    """What the sandbox's host needs to boot it, on every create and start: its egress policy
    and its secrets' values (opened here, sent only to the host, never logged) included."""
    return SandboxSpec(
        id=rec.id,
        template=rec.template,
        cpu=rec.cpu,
        ram_mb=rec.ram_mb,
        disk_gb=rec.disk_gb,
        env=rec.env,
        egress=msgspec.convert(rec.egress, EgressPolicy) if rec.egress is not None else None,
        secrets=await secrets.sandbox_grants(db, config.secrets_key, rec.id),
    )
