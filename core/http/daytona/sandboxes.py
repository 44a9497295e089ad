"""The Daytona API shape (``/sandbox``, ``/toolbox/{id}/...``) over the same service layer.

Only translation lives here: GiB ↔ MiB, camelCase DTOs, labels that carry the SDK's
language, a shell command line turned into an argv, and Daytona's status conventions
(``POST /sandbox`` answers 200, a command or code-run timeout is 408).
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Request, delete, get, post
from litestar.di import Provide
from litestar.params import Parameter

from contracts.public import (
    DaytonaCharts,
    DaytonaCodeRun,
    DaytonaCodeRunResult,
    DaytonaCreateSandbox,
    DaytonaDir,
    DaytonaExecute,
    DaytonaExecuteResult,
    DaytonaSandbox,
    DaytonaSandboxList,
    DaytonaToolboxUrl,
)
from core.config import CoreConfig
from core.db.sandboxes import SandboxRecord
from core.errors import ExecTimeout
from core.http.common.deps import provide_code, provide_sandboxes, public_base_url
from core.http.common.formats import iso
from core.http.common.inputs import DaytonaController
from core.http.daytona import listing
from core.http.daytona.auth import provide_principal
from core.services.auth import Principal
from core.services.egress import daytona_fields, daytona_policy
from core.services.preview import PreviewService
from core.services.sandboxes import NewSandbox, SandboxService
from core.services.toolbox.code import CodeService

LANGUAGE_LABEL = "code-toolbox-language"
SDK_LANGUAGES = frozenset({"python", "typescript", "javascript"})
"""The values of ``LANGUAGE_LABEL`` the Daytona SDK accepts."""
DAEMON_VERSION = "dnah-0.1.0"
SANDBOX_USER = "user"
DEFAULT_EXEC_TIMEOUT_S = 600

_DESIRED = {
    "creating": "started",
    "started": "started",
    "starting": "started",
    "stopping": "stopped",
    "stopped": "stopped",
    "pausing": "paused",
    "paused": "paused",
    "resuming": "started",
    "archiving": "archived",
    "archived": "archived",
    "unarchiving": "stopped",
    "restoring": "started",
    "destroying": "destroyed",
    "destroyed": "destroyed",
    "error": "started",
}
_STATE = {"unarchiving": "restoring"}
"""Our states in Daytona's words, where they differ (its enum has every other one)."""
ARCHIVE_MAX_MINUTES = 30 * 1440
"""Daytona's ``autoArchiveInterval`` 0 means this maximum."""


def toolbox_base(request: Request) -> str:
    config: CoreConfig = request.app.state.config
    return public_base_url(request, config.public_url) + "/toolbox"


def to_daytona(rec: SandboxRecord, toolbox_url: str) -> DaytonaSandbox:
    network = daytona_fields(rec)
    return DaytonaSandbox(
        id=rec.id,
        organization_id=rec.org_id,
        name=rec.name,
        user=SANDBOX_USER,
        env=rec.env,
        labels=daytona_labels(rec),
        public=rec.public,
        network_block_all=network.block_all,
        network_allow_list=network.allow_list,
        domain_allow_list=network.domain_list,
        kvm=False,
        target="local",
        cpu=rec.cpu,
        gpu=0,
        memory=max(1, rec.ram_mb // 1024),
        disk=rec.disk_gb,
        toolbox_proxy_url=toolbox_url,
        state=_STATE.get(rec.state, rec.state),
        desired_state=_DESIRED[rec.state],
        snapshot=rec.template,
        error_reason=rec.error_reason,
        recoverable=rec.state == "error",
        auto_stop_interval=rec.auto_stop_minutes or 0,
        auto_archive_interval=rec.auto_archive_minutes or 0,
        auto_delete_interval=-1 if rec.auto_delete_minutes is None else rec.auto_delete_minutes,
        created_at=iso(rec.created_at),
        updated_at=iso(rec.updated_at),
        last_activity_at=iso(rec.last_activity_at),
        daemon_version=DAEMON_VERSION,
        from_memory=rec.from_memory,
        backup_state=rec.backup_state,
        backup_created_at=iso(rec.backup_created_at) if rec.backup_created_at else None,
        backup_snapshot_id=rec.backup_snapshot_id,
    )


def daytona_labels(rec: SandboxRecord) -> dict[str, str]:
    """The sandbox's labels plus the SDK's language label, for the languages the SDK knows.
    A ``bash`` sandbox (native API only) has none: the SDK refuses a label it does not know,
    and would fail to list the whole org, so it takes the sandbox for a python one."""
    if rec.language not in SDK_LANGUAGES:
        return rec.labels
    return {LANGUAGE_LABEL: rec.language, **rec.labels}


def daytona_auto_stop(minutes: int | None) -> int | msgspec.UnsetType | None:
    """Daytona's ``autoStopInterval``: 0 disables; absent keeps the preset."""
    if minutes is None:
        return msgspec.UNSET
    return None if minutes <= 0 else minutes


def daytona_auto_archive(minutes: int | None) -> int | msgspec.UnsetType | None:
    """Daytona's ``autoArchiveInterval``: 0 means its 30-day maximum (it cannot be disabled)."""
    if minutes is None:
        return msgspec.UNSET
    return ARCHIVE_MAX_MINUTES if minutes <= 0 else minutes


def daytona_auto_delete(minutes: int | None) -> int | msgspec.UnsetType | None:
    """Daytona's ``autoDeleteInterval``: -1 (any negative) disables, 0 deletes as soon as the
    sandbox stops."""
    if minutes is None:
        return msgspec.UNSET
    return None if minutes < 0 else minutes


def _language(labels: dict[str, str]) -> str:
    return labels.get(LANGUAGE_LABEL, "python")


class DaytonaSandboxes(DaytonaController):
    path = "/sandbox"
    dependencies = {
        "principal": Provide(provide_principal),
        "sandboxes": Provide(provide_sandboxes, sync_to_thread=False),
    }

    @post("/", status_code=200)
    async def create(
        self,
        request: Request,
        principal: Principal,
        sandboxes: SandboxService,
        data: DaytonaCreateSandbox | None = None,
    ) -> DaytonaSandbox:
        data = data or DaytonaCreateSandbox()  # no body: all defaults
        labels = {k: v for k, v in data.labels.items() if k != LANGUAGE_LABEL}
        new = NewSandbox(
            template=data.snapshot,
            name=data.name,
            cpu=data.cpu,
            ram_mb=data.memory * 1024 if data.memory is not None else None,
            disk_gb=data.disk,
            env=data.env,
            labels=labels,
            language=_language(data.labels),
            lifecycle="ephemeral" if data.ephemeral else None,
            auto_stop_minutes=daytona_auto_stop(data.auto_stop_interval),
            auto_archive_minutes=daytona_auto_archive(data.auto_archive_interval),
            auto_delete_minutes=daytona_auto_delete(0 if data.ephemeral else data.auto_delete_interval),
            egress=daytona_policy(
                block_all=data.network_block_all,
                allow_list=data.network_allow_list,
                domain_list=data.domain_allow_list,
                update=False,
            ),
        )
        rec = await sandboxes.create(principal.org_id, new)
        if data.public:
            preview: PreviewService = request.app.state.preview
            rec = await preview.configure(principal.org_id, rec.id, public=True)
        return to_daytona(rec, toolbox_base(request))

    @get("/", dependencies={"filters": Provide(listing.provide_filters)})
    async def list_sandboxes(
        self,
        request: Request,
        principal: Principal,
        filters: listing.Filters,
        limit: Annotated[int, Parameter(ge=1, le=listing.MAX_PAGE_SIZE)] = 100,
        cursor: str | None = None,
        sort: str = "createdAt",
        order: str = "desc",
    ) -> DaytonaSandboxList:
        """SDK 0.226.1's ``list``: keyset pages with its filters and sorts (``listing.py``)."""
        records, next_cursor = await listing.keyset(
            request.app.state.db,
            principal.org_id,
            filters,
            language_label=LANGUAGE_LABEL,
            limit=limit,
            cursor=cursor,
            sort=sort,
            order=order,
        )
        base = toolbox_base(request)
        return DaytonaSandboxList(items=[to_daytona(r, base) for r in records], next_cursor=next_cursor)

    @get("/{ref:str}")
    async def read(
        self, request: Request, ref: str, principal: Principal, sandboxes: SandboxService
    ) -> DaytonaSandbox:
        return to_daytona(await sandboxes.get(principal.org_id, ref), toolbox_base(request))

    @delete("/{ref:str}", status_code=200)
    async def remove(
        self, request: Request, ref: str, principal: Principal, sandboxes: SandboxService
    ) -> DaytonaSandbox:
        return to_daytona(await sandboxes.delete(principal.org_id, ref), toolbox_base(request))

    @get("/{ref:str}/toolbox-proxy-url")
    async def toolbox_proxy_url(
        self, request: Request, ref: str, principal: Principal, sandboxes: SandboxService
    ) -> DaytonaToolboxUrl:
        await sandboxes.get(principal.org_id, ref)
        return DaytonaToolboxUrl(url=toolbox_base(request))


class DaytonaToolbox(DaytonaController):
    path = "/toolbox/{sandbox_id:str}"
    dependencies = {
        "principal": Provide(provide_principal),
        "sandboxes": Provide(provide_sandboxes, sync_to_thread=False),
        "runner": Provide(provide_code, sync_to_thread=False),
    }

    @post("/process/execute", status_code=200)
    async def execute(
        self, sandbox_id: str, data: DaytonaExecute, principal: Principal, runner: CodeService
    ) -> DaytonaExecuteResult:
        """Daytona runs ``command`` through a shell and returns stdout and stderr together."""
        timeout_s = data.timeout or DEFAULT_EXEC_TIMEOUT_S
        result = await runner.exec(
            principal.org_id,
            sandbox_id,
            cmd=["/bin/sh", "-c", data.command],
            env=data.envs,
            cwd=data.cwd,
            timeout_ms=timeout_s * 1000,
        )
        if result.timed_out:
            raise ExecTimeout(f"command timed out after {timeout_s} s")
        return DaytonaExecuteResult(exit_code=result.exit_code, result=result.stdout + result.stderr)

    @post("/process/code-run", status_code=200)
    async def code_run(
        self, sandbox_id: str, data: DaytonaCodeRun, principal: Principal, runner: CodeService
    ) -> DaytonaCodeRunResult:
        """The SDK sends the sandbox's ``code-toolbox-language`` label as ``language``."""
        timeout_s = data.timeout or DEFAULT_EXEC_TIMEOUT_S
        result = await runner.run_code(
            principal.org_id,
            sandbox_id,
            code=data.code,
            language=data.language,
            argv=data.argv or [],
            env=data.envs or {},
            cwd=None,
            timeout_ms=timeout_s * 1000,
        )
        if result.timed_out:
            raise ExecTimeout(f"code timed out after {timeout_s} s")
        return DaytonaCodeRunResult(
            exit_code=result.exit_code, result=result.stdout + result.stderr, artifacts=DaytonaCharts()
        )

    @get("/user-home-dir")
    async def user_home_dir(
        self, sandbox_id: str, principal: Principal, sandboxes: SandboxService
    ) -> DaytonaDir:
        return DaytonaDir(dir=(await sandboxes.dirs(principal.org_id, sandbox_id)).home)

    @get("/work-dir")
    async def work_dir(self, sandbox_id: str, principal: Principal, sandboxes: SandboxService) -> DaytonaDir:
        return DaytonaDir(dir=(await sandboxes.dirs(principal.org_id, sandbox_id)).work)

    @get("/project-dir")
    async def project_dir(
        self, sandbox_id: str, principal: Principal, sandboxes: SandboxService
    ) -> DaytonaDir:
        return DaytonaDir(dir=(await sandboxes.dirs(principal.org_id, sandbox_id)).project)
