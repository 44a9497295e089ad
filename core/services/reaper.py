"""The reaper: applies the automatic timers (auto-stop, auto-archive, auto-delete).

Each pass claims due sandboxes with one statement per timer::

    UPDATE sandboxes SET state = <transitional>
    WHERE id IN (SELECT id … WHERE <due> ORDER BY … LIMIT n FOR UPDATE SKIP LOCKED)

The claim is the state change itself. With several core replicas (each runs a reaper), a row
one replica has locked is skipped by the others, and once the claim commits the row is in a
transitional state no timer matches: every due sandbox is acted on exactly once. A user's
operation racing the reaper is an ordinary conflict of two conditional UPDATEs (one gets 409).
The host's part then runs like any user-initiated operation (``LifecycleService.carry_out``,
``SandboxService.finish_delete``); a reaper that dies after claiming leaves the rows in a
transitional state, which the sweeper settles from what the host reports.

Due means (minutes; ``docs/lifecycle.md``): auto-stop — ``started`` and no activity for
``auto_stop_minutes``; auto-archive — ``stopped`` for ``auto_archive_minutes`` since it
stopped; auto-delete — ``stopped`` or ``archived`` for ``auto_delete_minutes`` since it
stopped (0: at once). Deletion is checked first, so a sandbox due for both is not archived
only to be deleted; a sandbox with live forks or clones is not deleted (as a user's delete
would get 409). Paused sandboxes are left alone: pausing is a deliberate act.
"""

from __future__ import annotations

import asyncio

import asyncpg
import structlog

from core.db import sandboxes as sandboxes_db
from core.db.sandboxes import SandboxRecord
from core.errors import CoreError
from core.services.lifecycle import LifecycleService
from core.services.sandboxes import SandboxService

log = structlog.get_logger()

BATCH = 20
"""Sandboxes claimed per timer per pass; the rest wait for the next pass."""

_DUE = {
    "destroying": "state IN ('stopped', 'archived') AND auto_delete_minutes IS NOT NULL"
    " AND stopped_at <= now() - make_interval(mins => auto_delete_minutes)"
    " AND NOT EXISTS (SELECT 1 FROM sandboxes c WHERE c.parent_id = sandboxes.id AND c.state <> 'destroyed')",
    "archiving": "state = 'stopped' AND auto_archive_minutes IS NOT NULL"
    " AND stopped_at <= now() - make_interval(mins => auto_archive_minutes)",
    "stopping": "state = 'started' AND auto_stop_minutes IS NOT NULL"
    " AND last_activity_at <= now() - make_interval(mins => auto_stop_minutes)",
}
"""Per transitional state to claim into: the condition that makes a sandbox due."""


class Reaper:
    def __init__(self, db: asyncpg.Pool, lifecycle: LifecycleService, sandboxes: SandboxService) -> None:
        self._db = db
        self._lifecycle = lifecycle
        self._sandboxes = sandboxes

    async def run(self, interval_s: float) -> None:
        """Pass after pass until cancelled; a failing pass is logged, not fatal."""
        while True:
            try:
                await self.run_once()
            except Exception:
                log.exception("reaper_pass_failed")
            await asyncio.sleep(interval_s)

    async def run_once(self) -> list[tuple[str, str]]:
        """One pass: claim what is due, carry each out. Returns ``(sandbox_id, action)`` for
        every sandbox this pass claimed (whether its host part then succeeded or not)."""
        acted: list[tuple[str, str]] = []
        for via in _DUE:
            claimed = await self._claim(via)
            acted += [(rec.id, via) for rec in claimed]
            await asyncio.gather(*(self._carry_out(rec) for rec in claimed))
        return acted

    async def _claim(self, via: str) -> list[SandboxRecord]:
        rows = await self._db.fetch(
            f"UPDATE sandboxes SET state = $1, updated_at = now()"
            f" WHERE id IN (SELECT id FROM sandboxes WHERE {_DUE[via]}"
            f" ORDER BY updated_at LIMIT {BATCH} FOR UPDATE SKIP LOCKED)"
            f" RETURNING {sandboxes_db.COLUMNS}",
            via,
        )
        return [sandboxes_db.record(row) for row in rows]

    async def _carry_out(self, rec: SandboxRecord) -> None:
        log.info("reaper_acts", sandbox_id=rec.id, action=rec.state)
        try:
            if rec.state == "destroying":
                await self._sandboxes.finish_delete(rec)
            elif rec.state == "archiving":
                await self._lifecycle.carry_out(
                    rec, done="archived", back="stopped", call=self._lifecycle.host_archive
                )
            else:
                await self._lifecycle.carry_out(
                    rec, done="stopped", back="started", call=self._lifecycle.host_stop
                )
        except CoreError as exc:
            log.warning("reaper_action_failed", sandbox_id=rec.id, action=rec.state, error=exc.message)
