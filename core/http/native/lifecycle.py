"""Lifecycle routes, native shape, over ``LifecycleService`` and ``SnapshotService``:
``POST /v1/sandboxes/{id}/{stop,start,pause,resume,archive,recover,resize}`` and ``PUT …/labels``,
each answering the sandbox (``start`` also resumes a paused sandbox and unarchives an archived
one); snapshots, clone and fork."""

from __future__ import annotations

from litestar import delete, get, post, put
from litestar.di import Provide

from contracts.public import (
    CloneSnapshot,
    Fork,
    Labels,
    Resize,
    RestoreSnapshot,
    Sandbox,
    SnapshotList,
    SnapshotOut,
)
from core.db.snapshots import SnapshotRecord
from core.http.common.deps import provide_lifecycle, provide_snapshots
from core.http.common.formats import iso
from core.http.common.inputs import NativeController
from core.http.native.auth import provide_principal
from core.http.native.sandboxes import to_native
from core.services.auth import Principal
from core.services.lifecycle import LifecycleService
from core.services.snapshots import SnapshotService

_DEPS = {
    "principal": Provide(provide_principal),
    "lifecycle": Provide(provide_lifecycle, sync_to_thread=False),
    "snapshots": Provide(provide_snapshots, sync_to_thread=False),
}


def snapshot_out(snap: SnapshotRecord) -> SnapshotOut:
    return SnapshotOut(
        id=snap.id,
        sandbox_id=snap.sandbox_id,
        template=snap.template,
        size_bytes=snap.size_bytes or 0,
        memory=snap.memory,
        kid=snap.kid or "",
        manifest_hash=snap.manifest_hash or "",
        created_at=iso(snap.created_at),
    )


class NativeLifecycle(NativeController):
    path = "/v1/sandboxes/{sandbox_id:str}"
    dependencies = _DEPS

    @post("/stop", status_code=200)
    async def stop(self, sandbox_id: str, principal: Principal, lifecycle: LifecycleService) -> Sandbox:
        return to_native(await lifecycle.stop(principal.org_id, sandbox_id))

    @post("/start", status_code=200)
    async def start(self, sandbox_id: str, principal: Principal, lifecycle: LifecycleService) -> Sandbox:
        return to_native(await lifecycle.start(principal.org_id, sandbox_id))

    @post("/pause", status_code=200)
    async def pause(self, sandbox_id: str, principal: Principal, lifecycle: LifecycleService) -> Sandbox:
        return to_native(await lifecycle.pause(principal.org_id, sandbox_id))

    @post("/resume", status_code=200)
    async def resume(self, sandbox_id: str, principal: Principal, lifecycle: LifecycleService) -> Sandbox:
        return to_native(await lifecycle.resume(principal.org_id, sandbox_id))

    @post("/archive", status_code=200)
    async def archive(self, sandbox_id: str, principal: Principal, lifecycle: LifecycleService) -> Sandbox:
        return to_native(await lifecycle.archive(principal.org_id, sandbox_id))

    @post("/recover", status_code=200)
    async def recover(self, sandbox_id: str, principal: Principal, lifecycle: LifecycleService) -> Sandbox:
        return to_native(await lifecycle.recover(principal.org_id, sandbox_id))

    @post("/resize", status_code=200)
    async def resize(
        self, sandbox_id: str, principal: Principal, lifecycle: LifecycleService, data: Resize | None = None
    ) -> Sandbox:
        data = data or Resize()  # no body: all defaults
        rec = await lifecycle.resize(
            principal.org_id, sandbox_id, cpu=data.cpu, ram_mb=data.ram_mb, disk_gb=data.disk_gb
        )
        return to_native(rec)

    @put("/labels", status_code=200)
    async def labels(
        self, sandbox_id: str, data: Labels, principal: Principal, lifecycle: LifecycleService
    ) -> Sandbox:
        return to_native(await lifecycle.set_labels(principal.org_id, sandbox_id, data.labels))

    @post("/snapshot", status_code=201)
    async def snapshot(
        self, sandbox_id: str, principal: Principal, snapshots: SnapshotService
    ) -> SnapshotOut:
        return snapshot_out(await snapshots.snapshot(principal.org_id, sandbox_id))

    @get("/snapshots")
    async def list_snapshots(
        self, sandbox_id: str, principal: Principal, snapshots: SnapshotService
    ) -> SnapshotList:
        return SnapshotList(
            items=[snapshot_out(s) for s in await snapshots.list_for(principal.org_id, sandbox_id)]
        )

    @post("/restore", status_code=200)
    async def restore(
        self, sandbox_id: str, data: RestoreSnapshot, principal: Principal, snapshots: SnapshotService
    ) -> Sandbox:
        return to_native(await snapshots.restore(principal.org_id, sandbox_id, data.snapshot_id))

    @post("/clone", status_code=201)
    async def clone(
        self, sandbox_id: str, data: CloneSnapshot, principal: Principal, snapshots: SnapshotService
    ) -> Sandbox:
        """A new sandbox from ``snapshot_id`` (any of the org's snapshots; the path's sandbox
        only scopes the call)."""
        await snapshots.list_for(principal.org_id, sandbox_id)  # 404 for a sandbox not the caller's
        return to_native(await snapshots.clone(principal.org_id, data.snapshot_id, name=data.name))

    @post("/fork", status_code=201)
    async def fork(
        self, sandbox_id: str, principal: Principal, snapshots: SnapshotService, data: Fork | None = None
    ) -> Sandbox:
        data = data or Fork()  # no body: all defaults
        return to_native(await snapshots.fork(principal.org_id, sandbox_id, name=data.name))


class NativeSnapshots(NativeController):
    path = "/v1/snapshots"
    dependencies = _DEPS

    @get("/{snapshot_id:str}")
    async def read(self, snapshot_id: str, principal: Principal, snapshots: SnapshotService) -> SnapshotOut:
        return snapshot_out(await snapshots.get(principal.org_id, snapshot_id))

    @delete("/{snapshot_id:str}", status_code=204)
    async def remove(self, snapshot_id: str, principal: Principal, snapshots: SnapshotService) -> None:
        await snapshots.delete(principal.org_id, snapshot_id)
