"""The warm pool: started sandboxes kept ready per host and template, so a create claims one
(one row UPDATE, ``SandboxService._claim_warm``) instead of booting one.

Pool sandboxes are ordinary sandboxes of the keyless org ``org_pool`` — booted like any
other, counted by the scheduler, reconciled after restarts, invisible in every real org's
listings. The refill keeps ``DNAH_WARM_POOL``'s count per ready host for each template:
after each claim (woken at once) and every ``interval_s`` in any case. With several core
replicas, one refills at a time (a Postgres advisory lock), so none overfills. Pool
sandboxes have the default size and no environment; a claim applies the creator's
environment to the agent, and its name, labels, language and timers to the row.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import structlog

from core.config import CoreConfig
from core.db import sandboxes as sandboxes_db
from core.errors import CoreError
from core.services.sandboxes import NewSandbox, SandboxService

log = structlog.get_logger()

_LOCK_KEY = 0x64_6E_61_68_70_6F_6F_6C  # "dnahpool"
REFILL_DELAY_S = 0.25


class WarmPool:
    def __init__(self, db: asyncpg.Pool, sandboxes: SandboxService, config: CoreConfig) -> None:
        self._db = db
        self._sandboxes = sandboxes
        self._config = config
        self._wake = asyncio.Event()
        sandboxes.on_claim = self._wake.set

    async def run(self, interval_s: float) -> None:
        """Refill until cancelled: at start, after every claim, and every ``interval_s``."""
        while True:
            try:
                await self.refill()
            except Exception:
                log.exception("warm_pool_refill_failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval_s):
                    await self._wake.wait()
                # woken by a claim: let the claimer's first calls run before the replacement's
                # boot (≈100 ms of CPU) competes with them
                await asyncio.sleep(REFILL_DELAY_S)
            self._wake.clear()

    async def refill(self) -> int:
        """Boot what is missing; returns how many were booted. Skipped while another
        replica refills."""
        if not any(self._config.warm_pool.values()):
            return 0
        async with self._db.acquire() as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK_KEY):
                return 0
            try:
                return await self._refill(conn)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)

    async def _refill(self, conn: asyncpg.Connection) -> int:
        fresh = self._config.scheduler.host_stale_after_s
        hosts = await conn.fetch(
            "SELECT id, templates FROM hosts WHERE state = 'ready'"
            " AND last_heartbeat_at > now() - make_interval(secs => $1) ORDER BY id",
            fresh,
        )
        have = await sandboxes_db.pool_counts(conn)
        booted = 0
        for host in hosts:
            for template, size in self._config.warm_pool.items():
                if template not in host["templates"]:
                    continue
                for _ in range(size - have.get((host["id"], template), 0)):
                    try:
                        await self._sandboxes.create(
                            sandboxes_db.POOL_ORG, NewSandbox(template=template), placement=host["id"]
                        )
                    except CoreError as exc:  # no room, a host failure: try again next round
                        log.warning(
                            "warm_pool_boot_failed", host=host["id"], template=template, error=exc.message
                        )
                        break
                    booted += 1
        if booted:
            log.info("warm_pool_refilled", booted=booted)
        return booted
