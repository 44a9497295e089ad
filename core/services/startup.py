"""What a core does once, as it starts: settle the rows its predecessor left mid-operation.

A core that dies (SIGKILL, a crash, the machine) leaves every operation it had in flight with
its row in the transitional state — ``creating``, ``stopping``, ``starting``… — which holds the
sandbox's capacity and answers 409 to the user. The sweeper would settle them only after
``DNAH_STALE_OPERATION_S`` (120 s); a core that just started knows better: any row in such a
state since before it started was claimed by a core that is no longer running it, so it asks
the host right away (``GET /sandboxes/{id}``, answered once the host has finished whatever the
dead core had sent) and settles each row (docs/lifecycle.md, "Crash safety"). A restart of
Postgres under a running core is the same loss: the operations in flight could not record
their outcome, so the rows claimed before it are settled alike (``watch``):

- ``creating``: the host has the sandbox → the state it reports (``started`` when it runs);
  the host does not → destroyed on the host (in case the create lands later) and the row
  ``destroyed`` with the reason, as a failed create.
- ``destroying``: the destroy is finished (on the host, then the row).
- every other transitional state: the state the host reports, ``error`` if it has no such
  sandbox (``LifecycleService.settle``).

A host that cannot be asked (it is starting too) is asked again with backoff for a while; what
is still unsettled then is left to the sweeper. This assumes one core per database: a second
replica starting would settle another live replica's operations (each would still end in the
state the host reports, but that replica's request would fail with 409).
"""

from __future__ import annotations

import asyncio
from datetime import datetime

import asyncpg
import structlog

from core.db import hosts as hosts_db
from core.db import sandboxes as sandboxes_db
from core.db.sandboxes import SandboxRecord
from core.errors import CoreError, NotFound
from core.hostclient import HostClient
from core.services.lifecycle import LifecycleService
from core.states import HOST_STATES, TRANSITIONAL, sources

log = structlog.get_logger()

LEFT_STATES = TRANSITIONAL | {"creating", "destroying"}
RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 10.0
RETRY_FOR_S = 120.0
"""How long unreachable hosts are asked again before the sweeper is left to it."""


class StartupSettler:
    def __init__(self, db: asyncpg.Pool, hosts: HostClient, lifecycle: LifecycleService) -> None:
        self._db = db
        self._hosts = hosts
        self._lifecycle = lifecycle

    async def watch(self, interval_s: float) -> None:
        """Settle what the previous core left, then watch the database: when it restarted
        (Postgres killed), every operation that was in flight may have lost its final UPDATE
        and sits in its transitional state as if its core had died, so the rows claimed before
        the restart are settled the same way. Runs until cancelled."""
        booted, now = await self._db.fetchrow("SELECT pg_postmaster_start_time(), now()")
        await self.run(now)
        while True:
            await asyncio.sleep(interval_s)
            try:
                restarted = await self._db.fetchval("SELECT pg_postmaster_start_time()")
                if restarted != booted:
                    log.warning("database_restarted", at=restarted.isoformat())
                    await self.run(restarted)
                    booted = restarted
            except Exception as exc:  # the database is down or restarting: try again next time
                log.info("database_unavailable", error=repr(exc))

    async def run(self, started_at: datetime) -> None:
        """Settle every row left in ``LEFT_STATES`` since before ``started_at`` (the database's
        clock when this core started); returns when none is left, or after ``RETRY_FOR_S``."""
        delay = RETRY_INITIAL_S
        loop = asyncio.get_running_loop()
        give_up = loop.time() + RETRY_FOR_S
        while True:
            left = await sandboxes_db.left_in(self._db, LEFT_STATES, started_at)
            if left:
                log.info("settling_left_behind", sandboxes=len(left))
            settled = await asyncio.gather(*(self._settle(rec) for rec in left))
            unsettled = settled.count(False)
            if not unsettled:
                return
            if loop.time() > give_up:
                log.warning("left_behind_unsettled", sandboxes=unsettled)
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    async def _settle(self, rec: SandboxRecord) -> bool:
        """Settle one row; False when its host could not be asked (try again later)."""
        try:
            if rec.state == "creating":
                return await self._settle_create(rec)
            if rec.state == "destroying":
                return await self._finish_destroy(rec)
            return await self._lifecycle.settle(rec) is not rec
        except Exception:
            log.exception("settle_failed", sandbox_id=rec.id, state=rec.state)
            return False

    async def _settle_create(self, rec: SandboxRecord) -> bool:
        host = await hosts_db.get(self._db, rec.host_id) if rec.host_id else None
        if host is not None:
            try:
                info = await self._hosts.inspect(host, rec.id)
            except NotFound:
                pass
            except CoreError as exc:
                log.info("settle_host_unreachable", sandbox_id=rec.id, error=exc.message)
                return False
            else:
                state = HOST_STATES[info.state]
                await sandboxes_db.force_state(self._db, rec.id, from_state="creating", to=state, ip=info.ip)
                log.info("sandbox_settled", sandbox_id=rec.id, was="creating", now=state)
                return True
        return await self._finish_destroy(rec, reason="abandoned while creating: the core restarted")

    async def _finish_destroy(self, rec: SandboxRecord, reason: str | None = None) -> bool:
        host = await hosts_db.get(self._db, rec.host_id) if rec.host_id else None
        if host is not None:
            try:
                await self._hosts.destroy(host, rec.id)
            except NotFound:
                pass
            except CoreError as exc:
                log.info("settle_host_unreachable", sandbox_id=rec.id, error=exc.message)
                return False
        await sandboxes_db.transition(
            self._db, rec.id, from_states=sources("destroyed"), to="destroyed", error_reason=reason
        )
        log.info("sandbox_settled", sandbox_id=rec.id, was=rec.state, now="destroyed")
        return True
