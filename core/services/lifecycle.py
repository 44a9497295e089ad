"""Sandbox lifecycle operations: stop, start, pause, resume, archive (and the unarchive a start
of an archived sandbox implies), recover, resize, labels and the automatic timers.

Every operation has the same shape (``_operate``): one conditional UPDATE moves the row into
the operation's transitional state — the claim: a concurrent conflicting operation finds the
row in that state and gets 409 — then hostd does the work, then a second UPDATE records the
outcome. When hostd answers that it did not do it, the row goes back where it was; when the
outcome is unknown (hostd unreachable, a timeout), the row goes to ``error`` with the reason,
and ``recover`` (or the sweeper, for a row left in a transitional state by a dead core) asks
the host what is really there (``settle``).

The state machine itself is ``core/states.py``; the automatic timers are applied by
``core/services/reaper.py`` through the same operations.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg
import msgspec
import structlog

from contracts.host import SandboxInfo
from core.config import CoreConfig
from core.db import hosts as hosts_db
from core.db import sandboxes as sandboxes_db
from core.db.hosts import HostRecord
from core.db.sandboxes import SandboxRecord
from core.errors import (
    BadRequest,
    Conflict,
    CoreError,
    HostUnavailable,
    NotFound,
    ResizeNeedsStop,
    SnapshotRejected,
)
from core.hostclient import HostClient
from core.services.sandboxes import check_timer, spec_for
from core.states import HOST_STATES, TRANSITIONAL, sources

log = structlog.get_logger()

HostCall = Callable[[HostRecord, SandboxRecord], Awaitable[SandboxInfo]]

_LONG = frozenset({"archiving", "unarchiving", "restoring"})
"""Operations that copy a whole disk: they may legitimately take up to the host timeout."""

_VERBS = {
    "starting": "start",
    "stopping": "stop",
    "pausing": "pause",
    "resuming": "resume",
    "archiving": "archive",
    "unarchiving": "unarchive",
    "restoring": "restore",
}
"""What each transitional state does, for a refusal's message."""


class LifecycleService:
    def __init__(self, db: asyncpg.Pool, hosts: HostClient, config: CoreConfig) -> None:
        self._db = db
        self._hosts = hosts
        self._config = config

    # operations ----------------------------------------------------------------------------

    async def stop(self, org_id: str, ref: str) -> SandboxRecord:
        """Stop a started or paused sandbox: its processes end, CPU and memory are freed, the
        disk stays. Stopping a stopped (or archived) sandbox changes nothing."""
        rec = await self._get(org_id, ref)
        if rec.state in ("stopped", "archived"):
            return rec
        return await self._operate(rec, via="stopping", done="stopped", back="started", call=self.host_stop)

    async def start(self, org_id: str, ref: str) -> SandboxRecord:
        """Start a stopped sandbox on its disk; an archived one is unarchived first, a paused
        one resumed (Daytona's start does both). Starting a started sandbox changes nothing."""
        rec = await self._get(org_id, ref)
        if rec.state == "started":
            return rec
        if rec.state == "paused":
            return await self.resume(org_id, rec.id)
        if rec.state == "archived":
            rec = await self._operate(
                rec, via="unarchiving", done="stopped", back="archived", call=self._host_unarchive
            )
        return await self._operate(rec, via="starting", done="started", back="stopped", call=self._host_start)

    async def pause(self, org_id: str, ref: str) -> SandboxRecord:
        """Freeze a started sandbox in place (memory kept, no CPU used)."""
        rec = await self._get(org_id, ref)
        if rec.state == "paused":
            return rec
        return await self._operate(rec, via="pausing", done="paused", back="started", call=self.host_pause)

    async def resume(self, org_id: str, ref: str) -> SandboxRecord:
        rec = await self._get(org_id, ref)
        if rec.state == "started":
            return rec
        return await self._operate(rec, via="resuming", done="started", back="paused", call=self._host_resume)

    async def archive(self, org_id: str, ref: str) -> SandboxRecord:
        """Move a stopped sandbox's disk to the archive store (it then uses no host disk)."""
        rec = await self._get(org_id, ref)
        if rec.state == "archived":
            return rec
        return await self._operate(
            rec, via="archiving", done="archived", back="stopped", call=self.host_archive
        )

    async def recover(self, org_id: str, ref: str) -> SandboxRecord:
        """Bring a sandbox in ``error`` back: whatever its host still runs is adopted,
        otherwise it is started again on its kept disk. 409 for any other state."""
        rec = await self._get(org_id, ref)
        if rec.state != "error":
            raise Conflict(f"sandbox is {rec.state}; only a sandbox in error can be recovered")
        settled = await self.settle(rec)
        if settled.state == "stopped":
            return await self.start(org_id, rec.id)
        if settled.state == "error":
            raise HostUnavailable(f"sandbox could not be recovered: {settled.error_reason}")
        return settled

    async def set_labels(self, org_id: str, ref: str, labels: dict[str, str]) -> SandboxRecord:
        rec = await self._get(org_id, ref)
        updated = await sandboxes_db.update_fields(self._db, rec.id, labels=labels)
        return _found(updated, ref)

    async def set_timers(
        self,
        org_id: str,
        ref: str,
        *,
        auto_stop_minutes: int | msgspec.UnsetType | None = msgspec.UNSET,
        auto_archive_minutes: int | msgspec.UnsetType | None = msgspec.UNSET,
        auto_delete_minutes: int | msgspec.UnsetType | None = msgspec.UNSET,
    ) -> SandboxRecord:
        """Set some of the automatic timers (minutes; None: never). UNSET leaves one as it is."""
        rec = await self._get(org_id, ref)
        changes: dict[str, int | None] = {}
        for field, value in (
            ("auto_stop_minutes", auto_stop_minutes),
            ("auto_archive_minutes", auto_archive_minutes),
            ("auto_delete_minutes", auto_delete_minutes),
        ):
            if not isinstance(value, msgspec.UnsetType):
                changes[field] = check_timer(field, value, zero_ok=field == "auto_delete_minutes")
        updated = await sandboxes_db.update_fields(self._db, rec.id, **changes)
        return _found(updated, ref)

    async def refresh_activity(self, org_id: str, ref: str) -> SandboxRecord:
        """Reset the idle timer without doing anything in the sandbox (Daytona's
        ``refresh_activity``)."""
        rec = await self._get(org_id, ref)
        await sandboxes_db.touch(self._db, rec.id, 0)
        return await self._get(org_id, rec.id)

    async def resize(
        self, org_id: str, ref: str, *, cpu: int | None, ram_mb: int | None, disk_gb: int | None
    ) -> SandboxRecord:
        """Daytona's rules: a started sandbox may only grow its CPU and memory (hot); a
        stopped one may change them either way; the disk only grows. The new size must fit
        the limits and the host's room. A started sandbox on a host whose runtime cannot resize
        live (``live_resize`` false: the VM runtimes) changes CPU or memory only once stopped
        (409 ``resize_needs_stop``); a stop-resize-start done here would kill its processes
        behind the caller's back."""
        rec = await self._get(org_id, ref)
        lim = self._config.limits
        new_cpu = rec.cpu if cpu is None else cpu
        new_ram = rec.ram_mb if ram_mb is None else ram_mb
        new_disk = rec.disk_gb if disk_gb is None else disk_gb
        if not 1 <= new_cpu <= lim.max_cpu:
            raise BadRequest(f"cpu must be between 1 and {lim.max_cpu}, got {new_cpu}")
        if not lim.min_ram_mb <= new_ram <= lim.max_ram_mb:
            raise BadRequest(f"ram_mb must be between {lim.min_ram_mb} and {lim.max_ram_mb}, got {new_ram}")
        if not rec.disk_gb <= new_disk <= lim.max_disk_gb:
            raise BadRequest(
                f"disk_gb may only grow (now {rec.disk_gb}, at most {lim.max_disk_gb}), got {new_disk}"
            )
        if rec.state == "started" and (new_cpu < rec.cpu or new_ram < rec.ram_mb):
            raise Conflict("a started sandbox can only grow its CPU and memory; stop it to shrink them")
        if rec.state not in ("started", "stopped"):
            raise Conflict(f"sandbox is {rec.state}; resize needs it started or stopped")
        sched = self._config.scheduler
        async with self._db.acquire() as conn, conn.transaction():
            locked = await sandboxes_db.lock(conn, rec.id)
            if locked is None or locked.state != rec.state:
                raise Conflict("the sandbox changed state meanwhile; try again")
            if rec.host_id and (new_cpu > rec.cpu or new_ram > rec.ram_mb or new_disk > rec.disk_gb):
                room = await hosts_db.has_room(
                    conn,
                    rec.host_id,
                    cpu=new_cpu - rec.cpu,
                    ram_mb=new_ram - rec.ram_mb,
                    disk_gb=new_disk - rec.disk_gb,
                    cpu_overcommit=sched.cpu_overcommit,
                    ram_overcommit=sched.ram_overcommit,
                )
                if not room:
                    raise Conflict("the sandbox's host has no room for the new size")
            if rec.state == "started" and rec.host_id:
                host = await hosts_db.get(conn, rec.host_id)
                if host is None:
                    raise HostUnavailable("the sandbox's host is gone")
                if not host.live_resize and (new_cpu, new_ram) != (rec.cpu, rec.ram_mb):
                    # Never recorded now and applied later: the caller would see a size the
                    # sandbox does not have. The disk alone is the host's to grow.
                    raise ResizeNeedsStop(
                        f"the sandbox's host ({host.runtime}) cannot change CPU or memory while it "
                        "runs: stop the sandbox, resize it, then start it"
                    )
                await self._hosts.resize(host, rec.id, cpu=new_cpu, ram_mb=new_ram, disk_gb=new_disk)
            updated = await sandboxes_db.update_fields(
                conn, rec.id, cpu=new_cpu, ram_mb=new_ram, disk_gb=new_disk
            )
        return _found(updated, ref)

    # settling ------------------------------------------------------------------------------

    async def settle(self, rec: SandboxRecord) -> SandboxRecord:
        """Make the row say what the sandbox's host reports (after an unknown outcome): running
        → started, paused, stopped, archived; absent → error. Used by ``recover``, by the
        sweeper and by a core's start-up (``core/services/startup.py``) for rows a dead core
        left in a transitional state. The host answers once no operation on the sandbox is in
        flight there, so an operation the dead core had sent is settled by its outcome. When
        the host cannot be asked, ``rec`` itself is returned, unchanged."""
        host = await hosts_db.get(self._db, rec.host_id) if rec.host_id else None
        if host is None:
            return await self._to_error(rec, "the sandbox has no host")
        try:
            info: SandboxInfo | None = await self._hosts.inspect(host, rec.id)
        except NotFound:
            info = None
        except CoreError as exc:
            log.warning("settle_host_unreachable", sandbox_id=rec.id, error=exc.message)
            return rec
        if info is None:
            return await self._to_error(rec, "the host no longer has this sandbox")
        state = HOST_STATES.get(info.state, "error")
        moved = await sandboxes_db.force_state(self._db, rec.id, from_state=rec.state, to=state, ip=info.ip)
        log.info("sandbox_settled", sandbox_id=rec.id, was=rec.state, now=state)
        return moved or await self._reload(rec)

    async def sweep_stale(self) -> list[SandboxRecord]:
        """Settle the sandboxes a dead core (or reaper) left in a transitional state, from
        what their hosts report. An operation still in flight is never that old: the ones that
        copy a disk get the host timeout (``LONG_OP_S``) plus a margin by default."""
        stale = await sandboxes_db.stale_in(self._db, TRANSITIONAL - _LONG, self._config.stale_operation_s)
        stale += await sandboxes_db.stale_in(self._db, _LONG, self._config.stale_long_operation_s)
        return [await self.settle(rec) for rec in stale]

    # implementation --------------------------------------------------------------------------

    async def _operate(
        self, rec: SandboxRecord, *, via: str, done: str, back: str, call: HostCall
    ) -> SandboxRecord:
        claimed = await sandboxes_db.transition(self._db, rec.id, from_states=sources(via), to=via)
        if claimed is None:
            current = await self._reload(rec)
            raise Conflict(f"sandbox is {current.state}; it cannot go {via.removesuffix('ing')} now")
        return await self.carry_out(claimed, done=done, back=back, call=call)

    async def carry_out(
        self, claimed: SandboxRecord, *, done: str, back: str, call: HostCall
    ) -> SandboxRecord:
        """The host's part of an operation whose transitional state ``claimed`` is already in
        (the reaper claims many at once), then the final state."""
        via = claimed.state
        host = await hosts_db.get(self._db, claimed.host_id) if claimed.host_id else None
        try:
            if host is None:
                raise HostUnavailable("the sandbox's host is gone")
            info = await call(host, claimed)
        except NotFound as exc:
            await self._to_error(claimed, f"{via} failed: {exc.message}")
            raise HostUnavailable(f"the host lost the sandbox: {exc.message}") from exc
        except SnapshotRejected:  # checked before the host touched anything
            await sandboxes_db.transition(self._db, claimed.id, from_states=frozenset({via}), to=back)
            raise
        except HostUnavailable as exc:
            if exc.answered:
                await sandboxes_db.transition(self._db, claimed.id, from_states=frozenset({via}), to=back)
                verb = _VERBS.get(via, via)
                raise Conflict(f"the host did not {verb} the sandbox: {exc.message}") from exc
            await self._to_error(claimed, f"{via} failed: {exc.message}")
            raise
        finished = await sandboxes_db.transition(
            self._db, claimed.id, from_states=frozenset({via}), to=done, ip=info.ip
        )
        if finished is None:  # only the claimant leaves a transitional state
            raise Conflict(f"sandbox left {via} unexpectedly")
        log.info("sandbox_" + done, sandbox_id=claimed.id)
        return finished

    # the host's part of each operation (``HostCall``s)

    async def host_stop(self, host: HostRecord, rec: SandboxRecord) -> SandboxInfo:
        return await self._hosts.stop(host, rec.id)

    async def _host_start(self, host: HostRecord, rec: SandboxRecord) -> SandboxInfo:
        return await self._hosts.start(host, await spec_for(self._db, self._config, rec))

    async def host_pause(self, host: HostRecord, rec: SandboxRecord) -> SandboxInfo:
        return await self._hosts.pause(host, rec.id)

    async def _host_resume(self, host: HostRecord, rec: SandboxRecord) -> SandboxInfo:
        return await self._hosts.resume(host, rec.id)

    async def host_archive(self, host: HostRecord, rec: SandboxRecord) -> SandboxInfo:
        return await self._hosts.archive(host, rec.id)

    async def _host_unarchive(self, host: HostRecord, rec: SandboxRecord) -> SandboxInfo:
        return await self._hosts.unarchive(host, rec.id)

    async def _to_error(self, rec: SandboxRecord, reason: str) -> SandboxRecord:
        moved = await sandboxes_db.transition(
            self._db, rec.id, from_states=sources("error"), to="error", error_reason=reason
        )
        return moved or await self._reload(rec)

    async def _get(self, org_id: str, ref: str) -> SandboxRecord:
        rec = await sandboxes_db.get(self._db, org_id, ref)
        if rec is None or rec.state == "destroyed":
            raise NotFound(f"sandbox {ref!r} not found")
        return rec

    async def _reload(self, rec: SandboxRecord) -> SandboxRecord:
        current = await sandboxes_db.get_any(self._db, rec.id)
        return _found(current, rec.id)


def _found(rec: SandboxRecord | None, ref: str) -> SandboxRecord:
    if rec is None:
        raise NotFound(f"sandbox {ref!r} not found")
    return rec
