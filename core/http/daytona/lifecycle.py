"""Lifecycle routes, Daytona's shape, over ``LifecycleService``: the SDK's ``POST /sandbox/{idOrName}/
{start,stop,pause,archive,recover,resize}``, ``PUT …/labels``, ``POST …/autostop/{m}``,
``…/autoarchive/{m}``, ``…/autodelete/{m}`` and ``POST …/last-activity``; Daytona's ``start``
also resumes a paused sandbox and unarchives an archived one."""

from __future__ import annotations

from litestar import Request, post, put
from litestar.di import Provide

from contracts.public import (
    DaytonaFork,
    DaytonaLabels,
    DaytonaResize,
    DaytonaSandbox,
)
from core.http.common.deps import provide_lifecycle, provide_snapshots
from core.http.common.inputs import DaytonaController, Int32Param
from core.http.daytona.auth import provide_principal
from core.http.daytona.sandboxes import (
    LANGUAGE_LABEL,
    daytona_auto_archive,
    daytona_auto_delete,
    daytona_auto_stop,
    daytona_labels,
    to_daytona,
    toolbox_base,
)
from core.services.auth import Principal
from core.services.lifecycle import LifecycleService
from core.services.snapshots import SnapshotService

GIB_MB = 1024
_DEPS = {
    "principal": Provide(provide_principal),
    "lifecycle": Provide(provide_lifecycle, sync_to_thread=False),
    "snapshots": Provide(provide_snapshots, sync_to_thread=False),
}


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
