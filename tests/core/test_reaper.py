"""The reaper's claim (``core/services/reaper.py``) on a scratch database: which sandboxes are
due, and that two reapers racing (two core replicas) claim each due sandbox exactly once.

The hosts here are unreachable on purpose (port 9): the claim is what is under test, and a
host part that cannot run sends the sandbox to ``error`` (an unknown outcome), which is also
checked. The real thing — the core's own reaper stopping and deleting real sandboxes — is in
``tests/core/test_lifecycle.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import datetime, timedelta

import asyncpg

from core.config import CoreConfig
from core.db import sandboxes as sandboxes_db
from core.db.sandboxes import SandboxRecord
from core.hostclient import HostClient
from core.services.lifecycle import LifecycleService
from core.services.reaper import Reaper
from core.services.sandboxes import SandboxService
from tests.core.test_scheduler import add_host, db
from tests.support import await_for

__all__ = ["db"]  # the scratch-database fixture

CONFIG = CoreConfig(database_url="unused", redis_url="unused", bootstrap_token="unused")


async def add(
    db: asyncpg.Pool,
    host_id: str,
    *,
    state: str,
    idle: timedelta,
    stopped: timedelta | None,
    **timers: int | None,
) -> str:
    now = datetime.now().astimezone()
    sid = str(uuid.uuid4())
    await sandboxes_db.insert(
        db,
        SandboxRecord(
            id=sid,
            org_id="org_t",
            name=sid,
            host_id=host_id,
            template="base",
            cpu=1,
            ram_mb=128,
            disk_gb=1,
            env={},
            labels={},
            language="python",
            state=state,
            error_reason=None,
            ip=None,
            lifecycle="persistent",
            auto_stop_minutes=timers.get("stop"),
            auto_archive_minutes=timers.get("archive"),
            auto_delete_minutes=timers.get("delete"),
            created_at=now,
            updated_at=now,
            last_activity_at=now - idle,
            stopped_at=None if stopped is None else now - stopped,
        ),
    )
    return sid


async def test_what_is_due(db: asyncpg.Pool) -> None:
    host = await add_host(db, "h", cpu=64, ram_mb=65536, disk_gb=1000)
    hour, day = timedelta(hours=1), timedelta(days=1)
    due_stop = await add(db, host, state="started", idle=hour, stopped=None, stop=30)
    fresh = await add(db, host, state="started", idle=timedelta(minutes=5), stopped=None, stop=30)
    no_timer = await add(db, host, state="started", idle=day, stopped=None)
    paused = await add(db, host, state="paused", idle=day, stopped=None, stop=30)
    due_archive = await add(db, host, state="stopped", idle=day, stopped=day, archive=60)
    due_delete = await add(db, host, state="archived", idle=day, stopped=day, delete=60, archive=1)
    both = await add(db, host, state="stopped", idle=day, stopped=day, delete=0, archive=1)
    not_yet = await add(db, host, state="stopped", idle=day, stopped=timedelta(minutes=10), delete=60)

    hosts = HostClient(timeout_s=2)
    try:
        reaper = Reaper(db, LifecycleService(db, hosts, CONFIG), SandboxService(db, hosts, CONFIG))
        acted = dict(await reaper.run_once())
    finally:
        await hosts.close()
    assert acted == {
        due_stop: "stopping",
        due_archive: "archiving",
        due_delete: "destroying",
        both: "destroying",
    }
    for sid in (fresh, no_timer, paused, not_yet):
        rec = await sandboxes_db.get_any(db, sid)
        assert rec is not None and rec.state in ("started", "paused", "stopped"), rec
    # the host is unreachable: a stop or archive that never reached it did nothing, so its row
    # is back where it was (the next pass tries again); a destroy's outcome is unknown: error
    back = {due_stop: "started", due_archive: "stopped"}
    for sid in acted:
        rec = await sandboxes_db.get_any(db, sid)
        assert rec is not None, sid
        if sid in back:
            assert rec.state == back[sid], rec
        else:
            assert rec.state == "error" and rec.error_reason, rec


async def test_two_reapers_claim_each_due_sandbox_exactly_once(db: asyncpg.Pool) -> None:
    host = await add_host(db, "h", cpu=64, ram_mb=65536, disk_gb=1000)
    hour = timedelta(hours=1)
    # deletes only: the host is unreachable, and a stop that never reached it puts its row back
    # to be claimed again by a later pass (test_what_is_due), while a destroy ends in error
    ids = [await add(db, host, state="stopped", idle=hour, stopped=hour, delete=1) for _ in range(50)]
    hosts = HostClient(timeout_s=2)
    try:
        reapers = [
            Reaper(db, LifecycleService(db, hosts, CONFIG), SandboxService(db, hosts, CONFIG))
            for _ in range(2)
        ]
        # two passes each, all four concurrently: 50 due sandboxes, claims of 20 per pass
        passes = await asyncio.gather(
            *(reaper.run_once() for reaper in reapers), *(reaper.run_once() for reaper in reapers)
        )
    finally:
        await hosts.close()
    claimed = [sid for acted in passes for sid, _ in acted]
    assert sorted(claimed) == sorted(ids)  # every one, none twice


async def test_a_slow_host_action_delays_no_other_timer(db: asyncpg.Pool) -> None:
    """``run``: a carry-out that hangs (a host taking its whole timeout) does not hold up the
    next passes; a sandbox that becomes due meanwhile is claimed and carried out."""
    host = await add_host(db, "slow", cpu=64, ram_mb=65536, disk_gb=1000)
    hour = timedelta(hours=1)
    stuck = await add(db, host, state="started", idle=hour, stopped=None, stop=30)
    hosts = HostClient(timeout_s=2)
    reaper = Reaper(db, LifecycleService(db, hosts, CONFIG), SandboxService(db, hosts, CONFIG))
    carried: list[str] = []
    never = asyncio.Event()

    async def carry_out(rec: SandboxRecord) -> None:
        carried.append(rec.id)
        if rec.id == stuck:
            await never.wait()  # the host never answers

    reaper._carry_out = carry_out  # type: ignore[method-assign]
    running = asyncio.create_task(reaper.run(0.05))
    try:
        await await_for(lambda: _true(stuck in carried), what="the stuck sandbox's carry-out")
        later = await add(db, host, state="started", idle=hour, stopped=None, stop=30)
        await await_for(lambda: _true(later in carried), what="the later sandbox claimed meanwhile")
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await hosts.close()
    assert carried == [stuck, later]


async def _true(value: bool) -> bool:
    return value
