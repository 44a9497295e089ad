"""The native ``/v1`` API (seed 000's shape) over the service layer."""

from __future__ import annotations

import base64
from datetime import datetime

import msgspec
from litestar import delete, get, post
from litestar.di import Provide
from litestar.params import Parameter

from contracts.public import (
    ApiKeyCreated,
    CreateApiKey,
    CreateSandbox,
    Dirs,
    Exec,
    ExecResult,
    Metrics,
    RunCode,
    Sandbox,
    SandboxList,
)
from core.db.sandboxes import SandboxRecord
from core.errors import BadRequest
from core.http.common.deps import (
    provide_admin,
    provide_auth,
    provide_code,
    provide_preview,
    provide_sandboxes,
)
from core.http.common.formats import iso
from core.http.common.inputs import NativeController
from core.http.native.auth import provide_principal
from core.services.auth import AuthService, Principal
from core.services.preview import PreviewService
from core.services.sandboxes import NewSandbox, SandboxService
from core.services.toolbox.code import CodeService
from core.states import ALL_STATES, STATE_ALIASES


def to_native(rec: SandboxRecord) -> Sandbox:
    return Sandbox(
        id=rec.id,
        name=rec.name,
        org_id=rec.org_id,
        template=rec.template,
        state=rec.state,
        cpu=rec.cpu,
        ram_mb=rec.ram_mb,
        disk_gb=rec.disk_gb,
        env=rec.env,
        labels=rec.labels,
        language=rec.language,
        error_reason=rec.error_reason,
        lifecycle=rec.lifecycle,
        auto_stop_minutes=rec.auto_stop_minutes or 0,
        auto_archive_days=_days(rec.auto_archive_minutes),
        auto_delete_days=_days(rec.auto_delete_minutes),
        auto_archive_minutes=rec.auto_archive_minutes,
        auto_delete_minutes=rec.auto_delete_minutes,
        created_at=iso(rec.created_at),
        updated_at=iso(rec.updated_at),
        last_activity_at=iso(rec.last_activity_at),
        stopped_at=iso(rec.stopped_at) if rec.stopped_at else None,
        parent_id=rec.parent_id,
        source_snapshot_id=rec.source_snapshot_id,
        from_memory=rec.from_memory,
        public=rec.public,
        wake_on_traffic=rec.wake_on_traffic,
    )


def _days(minutes: int | None) -> int:
    """Whole days, rounded up (0 only for never)."""
    return 0 if minutes is None else max(1, -(-minutes // 1440))


def _never_if_zero(value: int | msgspec.UnsetType, per: int) -> int | msgspec.UnsetType | None:
    """The native body's timers: 0 is never, otherwise ``value`` × ``per`` minutes."""
    if isinstance(value, msgspec.UnsetType):
        return value
    return None if value == 0 else value * per


def parse_states(raw: str | None) -> list[str] | None:
    """``?state=started,stopped`` (also ``running``, seed 000's word for started)."""
    if not raw:
        return None
    states = [STATE_ALIASES.get(s.strip(), s.strip()) for s in raw.split(",") if s.strip()]
    unknown = [s for s in states if s not in ALL_STATES]
    if unknown:
        raise BadRequest(f"unknown state {unknown[0]!r}; one of {', '.join(sorted(ALL_STATES))}")
    return states


def encode_cursor(rec: SandboxRecord) -> str:
    return base64.urlsafe_b64encode(f"{rec.created_at.isoformat()}|{rec.id}".encode()).decode()


def decode_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    if not cursor:
        return None
    try:
        stamp, sandbox_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        if "\x00" in sandbox_id:  # never in a cursor we made; Postgres cannot compare it
            raise ValueError(sandbox_id)
        return datetime.fromisoformat(stamp), sandbox_id
    except ValueError:
        raise BadRequest("invalid cursor") from None


class NativeSandboxes(NativeController):
    path = "/v1/sandboxes"
    dependencies = {
        "principal": Provide(provide_principal),
        "sandboxes": Provide(provide_sandboxes, sync_to_thread=False),
        "runner": Provide(provide_code, sync_to_thread=False),
    }

    @post("/", status_code=201, dependencies={"preview": Provide(provide_preview, sync_to_thread=False)})
    async def create(
        self,
        principal: Principal,
        sandboxes: SandboxService,
        preview: PreviewService,
        data: CreateSandbox | None = None,
    ) -> Sandbox:
        data = data or CreateSandbox()  # no body: all defaults
        new = NewSandbox(
            template=data.template or data.templateID,
            name=data.name,
            cpu=data.cpu,
            ram_mb=data.ram_mb,
            disk_gb=data.disk_gb,
            env={**data.envVars, **data.env},
            labels={**data.metadata, **data.labels},
            language=data.language,
            lifecycle=data.lifecycle,
            auto_stop_minutes=_never_if_zero(data.auto_stop_minutes, 1),
            auto_archive_minutes=_never_if_zero(data.auto_archive_days, 1440),
            auto_delete_minutes=_never_if_zero(data.auto_delete_days, 1440),
            egress=data.egress.policy() if data.egress else None,
            secrets=list(dict.fromkeys(data.secrets)),
        )
        rec = await sandboxes.create(principal.org_id, new)
        if data.public or data.wake_on_traffic:
            rec = await preview.configure(
                principal.org_id, rec.id, public=data.public, wake_on_traffic=data.wake_on_traffic
            )
        return to_native(rec)

    @get("/")
    async def list_sandboxes(
        self,
        principal: Principal,
        sandboxes: SandboxService,
        state_filter: str | None = Parameter(query="state", default=None),
        limit: int = Parameter(default=100, ge=1, le=1000),
        cursor: str | None = None,
    ) -> SandboxList:
        records = await sandboxes.list_for_org(
            principal.org_id, states=parse_states(state_filter), limit=limit, before=decode_cursor(cursor)
        )
        next_cursor = encode_cursor(records[-1]) if len(records) == limit else None
        return SandboxList(items=[to_native(r) for r in records], next_cursor=next_cursor)

    @get("/{sandbox_id:str}")
    async def read(self, sandbox_id: str, principal: Principal, sandboxes: SandboxService) -> Sandbox:
        return to_native(await sandboxes.get(principal.org_id, sandbox_id))

    @delete("/{sandbox_id:str}", status_code=200)
    async def remove(self, sandbox_id: str, principal: Principal, sandboxes: SandboxService) -> Sandbox:
        return to_native(await sandboxes.delete(principal.org_id, sandbox_id))

    @post("/{sandbox_id:str}/exec", status_code=200)
    async def exec(
        self, sandbox_id: str, data: Exec, principal: Principal, runner: CodeService
    ) -> ExecResult:
        result = await runner.exec(
            principal.org_id, sandbox_id, cmd=data.cmd, env=data.env, cwd=data.cwd, timeout_ms=data.timeout_ms
        )
        return ExecResult(
            stdout=result.stdout,
            stderr=result.stderr,
            exit_code=result.exit_code,
            duration_ms=result.duration_ms,
            timed_out=result.timed_out,
            truncated=result.truncated,
        )

    @post("/{sandbox_id:str}/run-code", status_code=200)
    async def run_code(
        self, sandbox_id: str, data: RunCode, principal: Principal, runner: CodeService
    ) -> ExecResult:
        """A timeout is a result (``timed_out``, exit code -9), as for exec."""
        result = await runner.run_code(
            principal.org_id,
            sandbox_id,
            code=data.code,
            language=data.lang,
            argv=data.argv,
            env=data.env,
            cwd=data.cwd,
            timeout_ms=data.timeout_ms,
        )
        return ExecResult(
            stdout=result.stdout,
            stderr=result.stderr,
            exit_code=result.exit_code,
            duration_ms=result.duration_ms,
            timed_out=result.timed_out,
            truncated=result.truncated,
        )

    @get("/{sandbox_id:str}/dirs")
    async def dirs(self, sandbox_id: str, principal: Principal, sandboxes: SandboxService) -> Dirs:
        found = await sandboxes.dirs(principal.org_id, sandbox_id)
        return Dirs(home=found.home, work=found.work, project=found.project)

    @get("/{sandbox_id:str}/metrics")
    async def metrics(self, sandbox_id: str, principal: Principal, sandboxes: SandboxService) -> Metrics:
        m = await sandboxes.metrics(principal.org_id, sandbox_id)
        return Metrics(
            cpu_count=m.cpu_count,
            mem_total_mb=m.mem_total_mb,
            mem_used_mb=m.mem_used_mb,
            load_1m=m.load_1m,
            disk_used_mb=m.disk_used_mb,
            age_seconds=m.age_seconds,
            state=m.state,
            last_activity_at=iso(m.last_activity_at),
        )


class ApiKeys(NativeController):
    path = "/v1/api-keys"
    dependencies = {"auth": Provide(provide_auth, sync_to_thread=False)}

    @post("/", status_code=201, dependencies={"principal": Provide(provide_admin)})
    async def mint(
        self, principal: Principal, auth: AuthService, data: CreateApiKey | None = None
    ) -> ApiKeyCreated:
        data = data or CreateApiKey()  # no body: all defaults
        minted = await auth.mint(name=data.name, org_id=data.org_id, org_name=data.org_name)
        return ApiKeyCreated(
            id=minted.record.id,
            key=minted.token,
            org_id=minted.record.org_id,
            name=minted.record.name,
            created_at=iso(minted.record.created_at),
        )

    @delete("/{key_id:str}", status_code=204, dependencies={"principal": Provide(provide_principal)})
    async def revoke(self, key_id: str, principal: Principal, auth: AuthService) -> None:
        """Admins revoke any key; anyone else only keys of their own org."""
        await auth.revoke(key_id, org_id=None if principal.is_admin else principal.org_id)
