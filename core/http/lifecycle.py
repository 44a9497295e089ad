"""Lifecycle routes in both API shapes, over ``LifecycleService``.

Native: ``POST /v1/sandboxes/{id}/{stop,start,pause,resume,archive,recover,resize}`` and
``PUT …/labels``, each answering the sandbox. Daytona: the SDK's ``POST /sandbox/{idOrName}/
{start,stop,pause,archive,recover,resize}``, ``PUT …/labels``, ``POST …/autostop/{m}``,
``…/autoarchive/{m}``, ``…/autodelete/{m}`` and ``POST …/last-activity``; Daytona's ``start``
also resumes a paused sandbox and unarchives an archived one (so does ours, natively too).
"""

from __future__ import annotations

from litestar import Request, delete, get, post, put
from litestar.di import Provide

from contracts.public import (
    CloneSnapshot,
    DaytonaFork,
    DaytonaLabels,
    DaytonaResize,
    DaytonaSandbox,
    Fork,
    Labels,
    Resize,
    RestoreSnapshot,
    Sandbox,
    SnapshotList,
    SnapshotOut,
)
from core.db.snapshots import SnapshotRecord
from core.http.daytona import (
    LANGUAGE_LABEL,
    daytona_auto_archive,
    daytona_auto_delete,
    daytona_auto_stop,
    daytona_labels,
    to_daytona,
    toolbox_base,
)
from core.http.deps import provide_lifecycle, provide_principal, provide_snapshots
from core.http.inputs import DaytonaController, Int32Param, NativeController
from core.http.native import iso, to_native
from core.services.auth import Principal
from core.services.lifecycle import LifecycleService
from core.services.snapshots import SnapshotService

GIB_MB = 1024


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


class DaytonaLifecycle(DaytonaController):
    path = "/sandbox/{ref:str}"
    dependencies = _DEPS

    @post("/start", status_code=200)
    async def start(
        self, request: Request, ref: str, principal: Principal, lifecycle: LifecycleService
    ) -> DaytonaSandbox:
        return to_daytona(await lifecycle.start(principal.org_id, ref), toolbox_base(request))

    @post("/stop", status_code=200)
    async def stop(
        self, request: Request, ref: str, principal: Principal, lifecycle: LifecycleService
    ) -> DaytonaSandbox:
        return to_daytona(await lifecycle.stop(principal.org_id, ref), toolbox_base(request))

    @post("/pause", status_code=200)
    async def pause(
        self, request: Request, ref: str, principal: Principal, lifecycle: LifecycleService
    ) -> DaytonaSandbox:
        return to_daytona(await lifecycle.pause(principal.org_id, ref), toolbox_base(request))

    @post("/archive", status_code=200)
    async def archive(
        self, request: Request, ref: str, principal: Principal, lifecycle: LifecycleService
    ) -> DaytonaSandbox:
        return to_daytona(await lifecycle.archive(principal.org_id, ref), toolbox_base(request))

    @post("/recover", status_code=200)
    async def recover(
        self, request: Request, ref: str, principal: Principal, lifecycle: LifecycleService
    ) -> DaytonaSandbox:
        return to_daytona(await lifecycle.recover(principal.org_id, ref), toolbox_base(request))

    @post("/resize", status_code=200)
    async def resize(
        self,
        request: Request,
        ref: str,
        principal: Principal,
        lifecycle: LifecycleService,
        data: DaytonaResize | None = None,
    ) -> DaytonaSandbox:
        """Daytona sizes memory and disk in GiB."""
        data = data or DaytonaResize()  # no body: all defaults
        rec = await lifecycle.resize(
            principal.org_id,
            ref,
            cpu=data.cpu,
            ram_mb=None if data.memory is None else data.memory * GIB_MB,
            disk_gb=data.disk,
        )
        return to_daytona(rec, toolbox_base(request))

    @put("/labels", status_code=200)
    async def labels(
        self, ref: str, data: DaytonaLabels, principal: Principal, lifecycle: LifecycleService
    ) -> DaytonaLabels:
        """Replaces the labels. The SDK's language label is the sandbox's language, which
        does not change: it is not stored as a label, and is in the answer as in every read."""
        labels = {k: v for k, v in data.labels.items() if k != LANGUAGE_LABEL}
        rec = await lifecycle.set_labels(principal.org_id, ref, labels)
        return DaytonaLabels(labels=daytona_labels(rec))

    @post("/autostop/{interval:int}", status_code=200)
    async def autostop(
        self, ref: str, interval: Int32Param, principal: Principal, lifecycle: LifecycleService
    ) -> None:
        await lifecycle.set_timers(principal.org_id, ref, auto_stop_minutes=daytona_auto_stop(interval))

    @post("/autoarchive/{interval:int}", status_code=200)
    async def autoarchive(
        self, ref: str, interval: Int32Param, principal: Principal, lifecycle: LifecycleService
    ) -> None:
        await lifecycle.set_timers(principal.org_id, ref, auto_archive_minutes=daytona_auto_archive(interval))

    @post("/autodelete/{interval:int}", status_code=200)
    async def autodelete(
        self, ref: str, interval: Int32Param, principal: Principal, lifecycle: LifecycleService
    ) -> None:
        await lifecycle.set_timers(principal.org_id, ref, auto_delete_minutes=daytona_auto_delete(interval))

    @post("/fork", status_code=200)
    async def fork(
        self,
        request: Request,
        ref: str,
        principal: Principal,
        snapshots: SnapshotService,
        data: DaytonaFork | None = None,
    ) -> DaytonaSandbox:
        data = data or DaytonaFork()  # no body: all defaults
        rec = await snapshots.fork(principal.org_id, ref, name=data.name)
        return to_daytona(rec, toolbox_base(request))

    @post("/last-activity", status_code=200)
    async def last_activity(self, ref: str, principal: Principal, lifecycle: LifecycleService) -> None:
        await lifecycle.refresh_activity(principal.org_id, ref)
