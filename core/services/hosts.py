"""Hosts joining the cluster, staying alive, and agreeing with the database about what runs.

Reconciliation happens when a host registers (after hostd or the whole stack restarts):
the host reports every sandbox whose disk it holds, and the core makes the host match the
database — sandboxes that should run are started again on their kept disks, sandboxes the
database no longer knows are destroyed, and sandboxes the host lost are marked ``error``;
a paused sandbox the host runs is paused again, a stopped one it runs is stopped.

Before the registration is answered, every row is made to tell the truth about the host:
running sandboxes are recorded as confirmed (``confirmed_at``), a ``started`` row the host
holds stopped becomes ``starting`` (it is started again in the background, and only the
host's answer makes it ``started``), and one the host lost becomes ``error``. So nothing is
reported ``started``, or claimed from the warm pool, on the word of the previous hostd.
Heartbeats confirm the running sandboxes again. A periodic sweep (``sweep_stale``) finishes
operations a crashed core left half-done.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable

import asyncpg
import msgspec
import structlog

from contracts.host import Heartbeat, HostRegistered, HostRegistration, SandboxInfo
from core.config import CoreConfig
from core.db import hosts as hosts_db
from core.db import sandboxes as sandboxes_db
from core.db.hosts import HostRecord
from core.db.sandboxes import SandboxRecord
from core.errors import CoreError, NotFound, Unauthorized
from core.hostclient import HostClient
from core.services.auth import new_id
from core.services.sandboxes import spec_for
from core.states import HOST_STATES, sources

log = structlog.get_logger()

STALE_CREATING_S = 120.0
STALE_DESTROYING_S = 60.0
RESTARTS_AT_ONCE = 4
"""Sandboxes a registering host is asked to start again at a time: a whole host's worth at
once would make each boot slow; one at a time would leave the last waiting long."""


class HostService:
    def __init__(self, db: asyncpg.Pool, hosts: HostClient, config: CoreConfig) -> None:
        self._db = db
        self._hosts = hosts
        self._config = config
        self._tasks: set[asyncio.Task[None]] = set()

    def check_bootstrap(self, token: str | None) -> None:
        expected = self._config.bootstrap_token.encode()
        if not token or not hmac.compare_digest(token.encode(), expected):
            raise Unauthorized("invalid bootstrap token")

    async def register(self, reg: HostRegistration) -> HostRegistered:
        self.check_bootstrap(reg.bootstrap_token)
        host = await hosts_db.upsert(
            self._db,
            new_id=new_id("host"),
            name=reg.name,
            api_url=reg.api_url.rstrip("/"),
            api_token=reg.api_token,
            runtime=reg.runtime,
            cpu=reg.cpu,
            ram_mb=reg.ram_mb,
            disk_gb=reg.disk_gb,
            templates=reg.templates,
            capabilities=reg.capabilities,
        )
        log.info(
            "host_registered",
            host=host.name,
            host_id=host.id,
            runtime=host.runtime,
            capabilities=msgspec.structs.asdict(reg.capabilities),
            inventory=len(reg.sandboxes),
        )
        to_restart = await self._face_inventory(host, reg.sandboxes)
        task = asyncio.create_task(self._reconcile_logged(host, reg.sandboxes, to_restart))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return HostRegistered(host_id=host.id, heartbeat_interval_s=self._config.heartbeat_interval_s)

    async def heartbeat(self, host_id: str, token: str | None, beat: Heartbeat) -> None:
        self.check_bootstrap(token)
        if not await hosts_db.heartbeat(self._db, host_id):
            raise NotFound(f"host {host_id!r} is not registered")
        running = [info.id for info in beat.sandboxes if info.state == "running"]
        await sandboxes_db.confirm_running(self._db, host_id, running)

    async def wait_idle(self) -> None:
        """Wait for background reconciliations (used at shutdown and by tests)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _face_inventory(self, host: HostRecord, inventory: list[SandboxInfo]) -> list[SandboxRecord]:
        """Make the ``started`` rows of a registering host say what it reports, before the
        registration is answered: running ones are confirmed, lost ones go to ``error``, and
        ones it holds but does not run go to ``starting``; those are returned, for
        ``reconcile`` to start."""
        on_host = {info.id: info for info in inventory}
        await sandboxes_db.confirm_running(
            self._db, host.id, [info.id for info in inventory if info.state == "running"]
        )
        to_restart = []
        for rec in await sandboxes_db.on_host(self._db, host.id):
            info = on_host.get(rec.id)
            if rec.state == "error" and info is not None:
                await self._adopt_errored(rec, info)
                continue
            if rec.state != "started" or (info is not None and info.state == "running"):
                continue
            if info is None:
                await sandboxes_db.transition(
                    self._db,
                    rec.id,
                    from_states=frozenset({"started"}),
                    to="error",
                    error_reason="the host lost this sandbox (no disk after restart)",
                )
                log.warning("sandbox_lost", sandbox_id=rec.id, host=host.name)
                continue
            moved = await sandboxes_db.force_state(self._db, rec.id, from_state="started", to="starting")
            if moved is not None:
                to_restart.append(moved)
        return to_restart

    async def _adopt_errored(self, rec: SandboxRecord, info: SandboxInfo) -> None:
        """A row in ``error`` whose sandbox the host holds gets the state the host reports: an
        operation whose outcome was unknown (hostd died under it) left it there, and the
        sandbox may well be running. Rows the host lost stay in ``error``."""
        state = HOST_STATES[info.state]
        if await sandboxes_db.force_state(self._db, rec.id, from_state="error", to=state, ip=info.ip):
            log.info("sandbox_adopted", sandbox_id=rec.id, was="error", now=state, reason=rec.error_reason)

    async def _reconcile_logged(
        self, host: HostRecord, inventory: list[SandboxInfo], to_restart: list[SandboxRecord]
    ) -> None:
        try:
            await self.reconcile(host, inventory, to_restart)
        except Exception:
            log.exception("reconcile_failed", host=host.name)

    async def reconcile(
        self, host: HostRecord, inventory: list[SandboxInfo], to_restart: list[SandboxRecord]
    ) -> None:
        """Start ``to_restart`` (rows ``_face_inventory`` moved to ``starting``) again, then
        make the host match every other row, and destroy what the database does not know."""
        room = asyncio.Semaphore(RESTARTS_AT_ONCE)

        async def restart(rec: SandboxRecord) -> None:
            async with room:
                await self._restart(host, rec)

        await asyncio.gather(*(restart(rec) for rec in to_restart))
        on_host = {info.id: info for info in inventory}
        for rec in await sandboxes_db.on_host(self._db, host.id):
            info = on_host.pop(rec.id, None)
            if rec.state in ("paused", "stopped", "archived") and info is None:
                await sandboxes_db.transition(
                    self._db,
                    rec.id,
                    from_states=frozenset({rec.state}),
                    to="error",
                    error_reason=f"the host lost this {rec.state} sandbox",
                )
                log.warning("sandbox_lost", sandbox_id=rec.id, host=host.name, state=rec.state)
            elif rec.state == "paused" and info is not None and info.state == "running":
                await self._call_quietly(host, rec.id, "pause", self._hosts.pause)
            elif rec.state == "stopped" and info is not None and info.state in ("running", "paused"):
                await self._call_quietly(host, rec.id, "stop", self._hosts.stop)
        for orphan in on_host:
            known = await sandboxes_db.get_any(self._db, orphan)
            if known is None or known.state == "destroyed" or known.host_id != host.id:
                log.info("orphan_destroyed", sandbox_id=orphan, host=host.name)
                await self._destroy_quietly(host, orphan)

    async def _restart(self, host: HostRecord, rec: SandboxRecord) -> None:
        """Start a sandbox the host holds stopped on its kept disk: ``starting`` → ``started``
        on the host's answer, ``error`` on its refusal. The operation's clock is restarted
        first, so the stale-operation sweep does not settle it while earlier ones boot."""
        if not await sandboxes_db.renew(self._db, rec.id, "starting"):
            return  # settled or deleted meanwhile
        try:
            info = await self._hosts.start(host, await spec_for(self._db, self._config, rec))
        except CoreError as exc:
            await sandboxes_db.transition(
                self._db, rec.id, from_states=frozenset({"starting"}), to="error", error_reason=exc.message
            )
            log.warning("sandbox_restart_failed", sandbox_id=rec.id, host=host.name, error=exc.message)
            return
        await sandboxes_db.transition(
            self._db, rec.id, from_states=frozenset({"starting"}), to="started", ip=info.ip
        )
        log.info("sandbox_restarted", sandbox_id=rec.id, host=host.name)

    async def sweep_stale(self) -> None:
        """Finish what a crashed core left: ``creating`` that never completed is undone,
        ``destroying`` that never completed is finished."""
        stale = await sandboxes_db.stale_in(self._db, frozenset({"creating"}), STALE_CREATING_S)
        stale += await sandboxes_db.stale_in(self._db, frozenset({"destroying"}), STALE_DESTROYING_S)
        for rec in stale:
            host = await hosts_db.get(self._db, rec.host_id) if rec.host_id else None
            if host is not None and not await self._destroy_quietly(host, rec.id):
                continue
            await sandboxes_db.transition(
                self._db,
                rec.id,
                from_states=sources("destroyed"),
                to="destroyed",
                error_reason=f"abandoned while {rec.state}",
            )
            log.info("stale_sandbox_finished", sandbox_id=rec.id, was=rec.state)

    async def _call_quietly(
        self,
        host: HostRecord,
        sandbox_id: str,
        what: str,
        call: Callable[[HostRecord, str], Awaitable[object]],
    ) -> None:
        """Make the host match the row (``what``: pause, stop); a failure is logged, and the
        next registration tries again."""
        try:
            await call(host, sandbox_id)
            log.info("sandbox_reconciled", sandbox_id=sandbox_id, host=host.name, action=what)
        except CoreError as exc:
            log.warning("reconcile_failed", sandbox_id=sandbox_id, action=what, error=exc.message)

    async def _destroy_quietly(self, host: HostRecord, sandbox_id: str) -> bool:
        try:
            await self._hosts.destroy(host, sandbox_id)
        except NotFound:
            return True
        except CoreError as exc:
            log.warning("host_destroy_failed", sandbox_id=sandbox_id, host=host.name, error=exc.message)
            return False
        return True
