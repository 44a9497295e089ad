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

The deadline (E2B's timeout, ``deadline_at``; docs/e2b.md, "Control plane"): a ``started``
sandbox whose deadline has passed is deleted, or paused when its ``on_deadline`` says
``pause``. Only a running sandbox's deadline runs out (E2B's timeout does not run while a
sandbox is paused); the claim that pauses one clears its deadline, so a resume by any API does
not find it overdue at once (E2B's connect gives it a new one). A sandbox with live forks or
clones is paused instead of deleted at its deadline.
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

_DEADLINE = "state = 'started' AND deadline_at <= now()"
_NO_LIVE_CHILDREN = (
    "NOT EXISTS (SELECT 1 FROM sandboxes c WHERE c.parent_id = sandboxes.id AND c.state <> 'destroyed')"
)

_DUE: tuple[tuple[str, str, str], ...] = (
    (
        "destroying",
        "state IN ('stopped', 'archived') AND auto_delete_minutes IS NOT NULL"
        f" AND stopped_at <= now() - make_interval(mins => auto_delete_minutes) AND {_NO_LIVE_CHILDREN}",
        "",
    ),
    ("destroying", f"{_DEADLINE} AND COALESCE(on_deadline, 'delete') = 'delete' AND {_NO_LIVE_CHILDREN}", ""),
    ("pausing", f"{_DEADLINE}", ", deadline_at = NULL"),
    (
        "archiving",
        "state = 'stopped' AND auto_archive_minutes IS NOT NULL"
        " AND stopped_at <= now() - make_interval(mins => auto_archive_minutes)",
        "",
    ),
    (
        "stopping",
        "state = 'started' AND auto_stop_minutes IS NOT NULL"
        " AND last_activity_at <= now() - make_interval(mins => auto_stop_minutes)",
        "",
    ),
)
"""In order, per rule: the transitional state to claim into, the condition that makes a
sandbox due, and what else the claim sets. A deadline that does not delete (``pause``, or a
sandbox with live children) pauses."""


class Reaper:
    def __init__(self, db: asyncpg.Pool, lifecycle: LifecycleService, sandboxes: SandboxService) -> None:
        self._db = db
        self._lifecycle = lifecycle
        self._sandboxes = sandboxes

    async def run(self, interval_s: float) -> None:
        """Pass after pass until cancelled; a failing pass is logged, not fatal. A pass only
        claims: what it claimed is carried out in tasks of their own, so a slow host action
        (a host that takes its whole timeout to answer) delays no other sandbox's timer.
        Cancelling cancels them too; their rows stay transitional for the sweeper."""
        carrying: set[asyncio.Task[None]] = set()
        try:
            while True:
                try:
                    for rec in await self.claim_due():
                        task = asyncio.create_task(self._carry_out(rec))
                        carrying.add(task)
                        task.add_done_callback(carrying.discard)
                except Exception:
                    log.exception("reaper_pass_failed")
                await asyncio.sleep(interval_s)
        finally:
            for task in carrying:
                task.cancel()

    async def run_once(self) -> list[tuple[str, str]]:
        """One pass, carried out before it returns. Returns ``(sandbox_id, action)`` for every
        sandbox it claimed (whether its host part then succeeded or not)."""
        claimed = await self.claim_due()
        await asyncio.gather(*(self._carry_out(rec) for rec in claimed))
        return [(rec.id, rec.state) for rec in claimed]

    async def claim_due(self) -> list[SandboxRecord]:
        """Claim what is due, rule after rule (``_DUE``): each claim moves its rows to a
        transitional state no later rule matches."""
        claimed: list[SandboxRecord] = []
        for via, due, also in _DUE:
            claimed += await self._claim(via, due, also)
        return claimed

    async def _claim(self, via: str, due: str, also: str) -> list[SandboxRecord]:
        rows = await self._db.fetch(
            f"UPDATE sandboxes SET state = $1, updated_at = now(){also}"
            f" WHERE id IN (SELECT id FROM sandboxes WHERE {due}"
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
            elif rec.state == "pausing":
                await self._lifecycle.carry_out(
                    rec, done="paused", back="started", call=self._lifecycle.host_pause
                )
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
