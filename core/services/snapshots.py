"""Snapshots of sandboxes: take, list, delete, restore a sandbox from one of its own, clone a
new sandbox from one, fork (snapshot + clone in one call).

Trust. hostd writes a snapshot and reports the sha256 of its manifest; the core signs a
claim over ``(sandbox_id, snapshot_id, manifest_hash, size, ts)`` with its Ed25519 key
(``contracts/snapshots.py``) and hands the signature back to hostd, which stores it beside
the manifest. Only then is the row ``ready``. A restore or clone sends the core's verify keys
(the signing key's and any still listed for rotation) and hostd checks signature, claim,
manifest and every file before it touches a disk; a refusal is a 422 and the sandbox is as it
was. A snapshot row a crash left ``creating`` is never used (the sweeper removes it).

Lineage. A clone or fork records ``parent_id`` (the snapshot's sandbox) and
``source_snapshot_id``, and ``from_memory``: the snapshot's ``memory``, which says whether the
new sandbox continues the parent's running processes (a VM runtime's memory snapshot) or boots
fresh on the snapshot's filesystem (the container runtime's, which holds no memory); a sandbox
with live children cannot be deleted (409).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import cast

import asyncpg
import structlog

from contracts.host import SandboxInfo, SandboxSpec
from contracts.snapshots import SnapshotClaim, encode_verify_key, parse_signing_key, parse_verify_keys, sign
from core.config import CoreConfig
from core.db import backups as backups_db
from core.db import hosts as hosts_db
from core.db import sandboxes as sandboxes_db
from core.db import snapshots as snapshots_db
from core.db.hosts import HostRecord
from core.db.sandboxes import SandboxRecord
from core.db.snapshots import SnapshotRecord
from core.errors import BadRequest, Conflict, CoreError, HostUnavailable, NotFound
from core.hostclient import HostClient
from core.services.egress import policy_of
from core.services.lifecycle import LifecycleService
from core.services.sandboxes import NewSandbox, Origin, SandboxService
from core.states import sources

log = structlog.get_logger()

_SNAPSHOTTABLE = frozenset({"started", "stopped", "paused"})


class SnapshotService:
    def __init__(
        self,
        db: asyncpg.Pool,
        hosts: HostClient,
        config: CoreConfig,
        sandboxes: SandboxService,
        lifecycle: LifecycleService,
    ) -> None:
        self._db = db
        self._hosts = hosts
        self._sandboxes = sandboxes
        self._lifecycle = lifecycle
        self._stale_s = config.stale_long_operation_s
        self._signing = (
            parse_signing_key(config.snapshot_signing_key) if config.snapshot_signing_key else None
        )
        keys = parse_verify_keys(config.snapshot_verify_keys)
        if self._signing is not None:
            kid, key = self._signing
            keys[kid] = key.verify_key
        self._verify_keys = {kid: encode_verify_key(key) for kid, key in keys.items()}

    async def snapshot(self, org_id: str, ref: str) -> SnapshotRecord:
        """Take a signed snapshot of a started, paused or stopped sandbox (a running one is
        frozen while its disk is copied)."""
        snap, _source = await self._take(org_id, ref)
        return snap

    async def _take(self, org_id: str, ref: str) -> tuple[SnapshotRecord, SandboxRecord]:
        """``snapshot``, also returning the sandbox as it was read (a fork clones it)."""
        if self._signing is None:
            raise Conflict("snapshots are disabled: the core has no signing key (DNAH_SNAPSHOT_SIGNING_KEY)")
        kid, key = self._signing
        found = await sandboxes_db.get_with_host(self._db, org_id, ref)  # one round trip for both
        if found is None:
            raise NotFound(f"sandbox {ref!r} not found")
        rec, host = found
        if rec.state not in _SNAPSHOTTABLE:
            raise Conflict(f"sandbox is {rec.state}; a snapshot needs it started, paused or stopped")
        if host is None:
            raise HostUnavailable("the sandbox's host is gone")
        snap = await snapshots_db.insert_creating(
            self._db,
            snapshot_id=f"snap-{uuid.uuid4().hex}",
            org_id=org_id,
            sandbox_id=rec.id,
            host_id=host.id,
            template=rec.template,
        )
        try:
            taken = await self._hosts.snapshot(host, rec.id, snap.id)
            claim = SnapshotClaim(
                sandbox_id=rec.id,
                snapshot_id=snap.id,
                manifest_hash=taken.manifest_hash,
                size=taken.size,
                ts=int(time.time()),
            )
            await self._hosts.seal(host, sign(claim, kid, key))
        except CoreError:
            await self._discard(host, snap)
            raise
        # Two rows, two connections: neither write waits for the other.
        ready, _touched = await asyncio.gather(
            snapshots_db.mark_ready(
                self._db,
                snap.id,
                kid=kid,
                manifest_hash=taken.manifest_hash,
                size_bytes=taken.size,
                memory=taken.memory,
            ),
            sandboxes_db.touch(self._db, rec.id, 1.0),
        )
        log.info("snapshot_taken", sandbox_id=rec.id, snapshot_id=snap.id, size=taken.size)
        return ready, rec

    async def list_for(self, org_id: str, ref: str) -> list[SnapshotRecord]:
        rec = await self._sandboxes.get(org_id, ref)
        return await snapshots_db.of_sandbox(self._db, rec.id)

    async def get(self, org_id: str, snapshot_id: str) -> SnapshotRecord:
        snap = await snapshots_db.get(self._db, org_id, snapshot_id)
        if snap is None or snap.state != "ready":
            raise NotFound(f"snapshot {snapshot_id!r} not found")
        return snap

    async def delete(self, org_id: str, snapshot_id: str) -> None:
        snap = await self.get(org_id, snapshot_id)
        host = await hosts_db.get(self._db, snap.host_id)
        await snapshots_db.mark_deleted(self._db, snap.id)
        await backups_db.forget(self._db, snap.id)
        if host is not None:
            await self._purge(host, snap)

    async def restore(self, org_id: str, ref: str, snapshot_id: str) -> SandboxRecord:
        """Put the sandbox back to one of its own snapshots (its disk replaced, then booted).
        A snapshot that fails verification is a 422 and the sandbox is untouched."""
        # Both looked up at once; the sandbox's error, if any, is the one reported.
        found = await asyncio.gather(
            self._sandboxes.get(org_id, ref), self.get(org_id, snapshot_id), return_exceptions=True
        )
        for result in found:
            if isinstance(result, BaseException):
                raise result
        rec, snap = cast("tuple[SandboxRecord, SnapshotRecord]", tuple(found))
        if snap.sandbox_id != rec.id:
            raise BadRequest(f"snapshot {snapshot_id!r} is of another sandbox; clone it instead")
        claimed = await sandboxes_db.transition(
            self._db, rec.id, from_states=sources("restoring"), to="restoring"
        )
        if claimed is None:
            current = await self._sandboxes.get(org_id, rec.id)
            raise Conflict(f"sandbox is {current.state}; a restore needs it started or stopped")

        async def restore_on(host: HostRecord, target: SandboxRecord) -> SandboxInfo:
            return await self._hosts.restore(host, target.id, snap.id, self._verify_keys)

        return await self._lifecycle.carry_out(claimed, done="started", back=rec.state, call=restore_on)

    async def clone(self, org_id: str, snapshot_id: str, *, name: str | None = None) -> SandboxRecord:
        """A new sandbox, started, whose disk is the snapshot's, on the snapshot's host; it
        inherits the source's size, environment, labels, language and timers."""
        snap = await self.get(org_id, snapshot_id)
        source = await sandboxes_db.get_any(self._db, snap.sandbox_id)
        if source is None:
            raise NotFound(f"snapshot {snapshot_id!r} not found")
        return await self._clone(org_id, snap, source, name)

    async def fork(self, org_id: str, ref: str, *, name: str | None = None) -> SandboxRecord:
        """Snapshot + clone in one call: an independent copy of the sandbox as it is now. The
        snapshot and the sandbox it was taken of are already in hand: not read again."""
        snap, source = await self._take(org_id, ref)
        return await self._clone(org_id, snap, source, name)

    async def _clone(
        self, org_id: str, snap: SnapshotRecord, source: SandboxRecord, name: str | None
    ) -> SandboxRecord:
        async def boot(host: HostRecord, spec: SandboxSpec) -> SandboxInfo:
            return await self._hosts.clone(host, snap.id, spec, self._verify_keys)

        new = NewSandbox(
            template=snap.template,
            name=name,
            cpu=source.cpu,
            ram_mb=source.ram_mb,
            disk_gb=source.disk_gb,
            env=source.env,
            labels=source.labels,
            language=source.language,
            lifecycle=source.lifecycle,
            auto_stop_minutes=source.auto_stop_minutes,
            auto_archive_minutes=source.auto_archive_minutes,
            auto_delete_minutes=source.auto_delete_minutes,
            egress=policy_of(source),  # a fork is as confined as its parent
        )
        origin = Origin(
            snapshot_id=snap.id,
            host_id=snap.host_id,
            parent_id=source.id,
            template=snap.template,
            memory=snap.memory,
            boot=boot,
        )
        return await self._sandboxes.create(org_id, new, origin=origin)

    async def sweep_stale(self) -> None:
        """Remove snapshots a crash left half-made (never ``ready``, so never trusted), and
        ask again for the removal of deleted ones whose host did not confirm it."""
        for snap in await snapshots_db.stale_creating(self._db, self._stale_s):
            host = await hosts_db.get(self._db, snap.host_id)
            if host is not None:
                await self._discard(host, snap)
            else:
                await snapshots_db.mark_deleted(self._db, snap.id)
        for snap in await snapshots_db.unpurged(self._db):
            host = await hosts_db.get(self._db, snap.host_id)
            if host is not None:
                await self._purge(host, snap)

    async def _discard(self, host: HostRecord, snap: SnapshotRecord) -> None:
        await snapshots_db.mark_deleted(self._db, snap.id)
        await self._purge(host, snap)

    async def _purge(self, host: HostRecord, snap: SnapshotRecord) -> None:
        """Remove a deleted snapshot's data from its host. A failure (the host is down, or
        dies meanwhile) leaves the row unpurged, for the sweeper to try again."""
        try:
            await self._hosts.delete_snapshot(host, snap.id)
        except CoreError as exc:
            log.warning("snapshot_purge_failed", snapshot_id=snap.id, error=exc.message)
            return
        await snapshots_db.mark_purged(self._db, snap.id)
