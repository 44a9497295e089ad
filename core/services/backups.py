"""Daytona's backups (``POST /sandbox/{id}/backup``) on our signed snapshots.

In Daytona a backup is a copy of a sandbox's disk the platform keeps, shown on the sandbox
as ``backupState`` and ``backupCreatedAt``. Here a backup is one of the sandbox's signed
snapshots (``SnapshotService``: a running sandbox is frozen only while its disk is copied,
then goes on running) that the sandbox's row points at. A new backup replaces the previous
one, whose snapshot is deleted once the new one is in place; a failed one leaves the previous
backup as it was and the state ``Error``. Being a snapshot, a backup is listed with the
sandbox's snapshots, and a native ``restore`` or ``clone`` takes it like any other.

One backup of a sandbox at a time: a call while another is in progress is a 409 (the state
says ``InProgress``), not a second copy of the disk.
"""

from __future__ import annotations

import contextlib

import asyncpg
import structlog

from core.db import backups as backups_db
from core.db.sandboxes import SandboxRecord
from core.errors import Conflict, NotFound
from core.services.sandboxes import SandboxService
from core.services.snapshots import SnapshotService

log = structlog.get_logger()


class BackupService:
    """``stale_after_s``: how old an ``InProgress`` claim must be before another call may
    take it over (the core's long-operation limit: a backup copies a whole disk)."""

    def __init__(
        self, db: asyncpg.Pool, sandboxes: SandboxService, snapshots: SnapshotService, *, stale_after_s: float
    ) -> None:
        self._db = db
        self._sandboxes = sandboxes
        self._snapshots = snapshots
        self._stale_after_s = stale_after_s

    async def backup(self, org_id: str, ref: str) -> SandboxRecord:
        """Take a backup of the sandbox now and return the sandbox showing it."""
        rec = await self._sandboxes.get(org_id, ref)
        previous = await backups_db.claim(self._db, rec.id, stale_after_s=self._stale_after_s)
        if previous is None:
            raise Conflict(f"a backup of sandbox {rec.id} is in progress; ask again when it has finished")
        try:
            snap = await self._snapshots.snapshot(org_id, rec.id)
        except (Conflict, NotFound):
            # refused before anything was taken (the sandbox's state, snapshots disabled):
            # the sandbox's backup is as it was
            await backups_db.release(self._db, rec.id, previous)
            raise
        except Exception:
            await backups_db.fail(self._db, rec.id)
            raise
        done, replaced = await backups_db.complete(self._db, rec.id, snap.id, snap.created_at)
        if replaced is not None:
            with contextlib.suppress(NotFound):  # deleted meanwhile through the snapshot routes
                await self._snapshots.delete(org_id, replaced)
        log.info("backup_taken", sandbox_id=rec.id, snapshot_id=snap.id, replaced=replaced)
        return done
