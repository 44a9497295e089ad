"""Seed 004's backup, build-log and paginated-list routes.

- ``POST /sandbox/{id}/backup``: a backup of the sandbox's disk (``core/services/backups.py``),
  answered with the sandbox (``backupState``, ``backupCreatedAt``) once it is taken.
- ``GET /sandbox/{id}/build-logs-url`` → ``{url}``: where the build log is, on the public base
  URL, so it takes the same bearer key (or payment) as every route; ``GET /sandbox/{id}/
  build-logs`` (Daytona's own path for it) serves it as text. The SDK appends ``?follow=true``
  to stream a build still running; ours are finished before a sandbox exists, so the whole
  log is the answer either way.
- ``GET /sandbox/paginated``: Daytona's ``PaginatedSandboxes`` (``core/http/daytona/listing.py``).
"""

from __future__ import annotations

from typing import Annotated

from litestar import MediaType, Request, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import Parameter

from contracts.fields import INT32_MAX
from contracts.public import DaytonaPaginatedSandboxes, DaytonaSandbox, DaytonaToolboxUrl
from core.config import CoreConfig
from core.http.common.deps import public_base_url
from core.http.common.inputs import DaytonaController
from core.http.daytona import listing
from core.http.daytona.auth import provide_principal
from core.http.daytona.sandboxes import LANGUAGE_LABEL, to_daytona, toolbox_base
from core.services.auth import Principal
from core.services.backups import BackupService
from core.services.build_logs import BuildLogService


def provide_backups(state: State) -> BackupService:
    backups: BackupService = state.backups
    return backups


def provide_build_logs(state: State) -> BuildLogService:
    build_logs: BuildLogService = state.build_logs
    return build_logs


class DaytonaSeed004(DaytonaController):
    path = "/sandbox"
    dependencies = {
        "principal": Provide(provide_principal),
        "backups": Provide(provide_backups, sync_to_thread=False),
        "build_logs": Provide(provide_build_logs, sync_to_thread=False),
        "filters": Provide(listing.provide_filters),
    }

    @get("/paginated")
    async def paginated(
        self,
        request: Request,
        principal: Principal,
        filters: listing.Filters,
        page: Annotated[int, Parameter(ge=1, le=INT32_MAX)] = 1,
        limit: Annotated[int, Parameter(ge=1, le=listing.MAX_PAGE_SIZE)] = 100,
        sort: str = "createdAt",
        order: str = "desc",
    ) -> DaytonaPaginatedSandboxes:
        records, total = await listing.numbered(
            request.app.state.db,
            principal.org_id,
            filters,
            language_label=LANGUAGE_LABEL,
            page=page,
            limit=limit,
            sort=sort,
            order=order,
        )
        base = toolbox_base(request)
        return DaytonaPaginatedSandboxes(
            items=[to_daytona(r, base) for r in records],
            total=total,
            page=page,
            total_pages=-(-total // limit),
        )

    @post("/{ref:str}/backup", status_code=200)
    async def backup(
        self, request: Request, ref: str, principal: Principal, backups: BackupService
    ) -> DaytonaSandbox:
        return to_daytona(await backups.backup(principal.org_id, ref), toolbox_base(request))

    @get("/{ref:str}/build-logs-url")
    async def build_logs_url(
        self, request: Request, ref: str, principal: Principal, build_logs: BuildLogService
    ) -> DaytonaToolboxUrl:
        config: CoreConfig = request.app.state.config
        sandbox_id = await build_logs.sandbox_id(principal.org_id, ref)
        return DaytonaToolboxUrl(
            url=f"{public_base_url(request, config.public_url)}/sandbox/{sandbox_id}/build-logs"
        )

    @get("/{ref:str}/build-logs", media_type=MediaType.TEXT)
    async def build_logs(
        self, ref: str, principal: Principal, build_logs: BuildLogService, follow: bool = False
    ) -> str:
        """``follow`` is accepted for the SDK's sake: the log is complete already."""
        del follow
        return await build_logs.log(principal.org_id, ref)
