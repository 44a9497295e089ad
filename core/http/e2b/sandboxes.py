"""E2B's sandbox routes (``/v2/sandboxes``, ``/sandboxes/{id}/…``) over ``E2bService``: only
wire translation and E2B's status conventions live here (create answers 201, kill and pause
204, connect 200 when the sandbox was running and 201 when it was brought back, pagination
by ``nextToken`` in and ``x-next-token`` out)."""

from __future__ import annotations

import asyncio
import urllib.parse
from datetime import UTC, datetime
from typing import Annotated, Literal

from litestar import Controller, Request, Response, delete, get, post, put
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import Parameter

from contracts.e2b import ENVD_VERSION
from contracts.e2b_api import (
    E2bConnect,
    E2bLifecycle,
    E2bListedSandbox,
    E2bNetworkInfo,
    E2bNetworkUpdate,
    E2bNewSandbox,
    E2bPause,
    E2bRefresh,
    E2bResume,
    E2bSandbox,
    E2bSandboxDetail,
    E2bSandboxesWithMetrics,
    E2bSandboxLog,
    E2bSandboxLogEntry,
    E2bSandboxLogs,
    E2bSandboxLogsV2,
    E2bSandboxMetric,
    E2bSetTimeout,
)
from core.config import CoreConfig
from core.db.sandboxes import SandboxRecord
from core.errors import BadRequest, CoreError
from core.http.common.inputs import well_formed
from core.http.e2b.auth import provide_principal
from core.services.auth import Principal
from core.services.e2b import (
    Created,
    E2bService,
    LogEvent,
    e2b_state,
    egress_policy,
    end_at,
    log_events,
    network_of,
    states_of,
)
from core.services.sandboxes import SandboxMetrics

CLIENT_ID = "dnah"
"""E2B's ``clientID`` (any string; the SDK does not read it)."""
MAX_PAGE = 1000
NEXT_TOKEN_HEADER = "x-next-token"  # noqa: S105 - a header name


def provide_e2b(state: State) -> E2bService:
    """The E2B service, made on first use from the services on ``app.state``."""
    service: E2bService | None = state.get("e2b")
    if service is None:
        service = E2bService(
            state.db,
            state.sandboxes,
            state.lifecycle,
            state.snapshots,
            state.preview,
            state.egress,
            default_template=state.config.default_template,
        )
        state.e2b = service
    return service


def preview_domain(request: Request) -> str | None:
    config: CoreConfig = request.app.state.config
    return config.preview_domain


def to_sandbox(created: Created, domain: str | None) -> E2bSandbox:
    rec = created.sandbox
    return E2bSandbox(
        template_id=rec.template,
        sandbox_id=rec.id,
        client_id=CLIENT_ID,
        envd_version=ENVD_VERSION,
        alias=rec.template,
        envd_access_token=rec.envd_token,
        traffic_access_token=created.traffic_token,
        domain=domain,
    )


def to_listed(rec: SandboxRecord) -> E2bListedSandbox:
    return E2bListedSandbox(
        template_id=rec.template,
        sandbox_id=rec.id,
        client_id=CLIENT_ID,
        started_at=rec.created_at,
        end_at=end_at(rec),
        cpu_count=rec.cpu,
        memory_mb=rec.ram_mb,
        disk_size_mb=rec.disk_gb * 1024,
        state=e2b_state(rec.state),  # type: ignore[arg-type]  # one of the two
        envd_version=ENVD_VERSION,
        alias=rec.template,
        metadata=rec.labels,
    )


def to_detail(rec: SandboxRecord, domain: str | None) -> E2bSandboxDetail:
    internet, allow_out, deny_out = network_of(rec)
    return E2bSandboxDetail(
        template_id=rec.template,
        sandbox_id=rec.id,
        client_id=CLIENT_ID,
        started_at=rec.created_at,
        end_at=end_at(rec),
        envd_version=ENVD_VERSION,
        cpu_count=rec.cpu,
        memory_mb=rec.ram_mb,
        disk_size_mb=rec.disk_gb * 1024,
        state=e2b_state(rec.state),  # type: ignore[arg-type]  # one of the two
        alias=rec.template,
        envd_access_token=rec.envd_token,
        allow_internet_access=internet,
        domain=domain,
        metadata=rec.labels,
        network=E2bNetworkInfo(allow_public_traffic=rec.public, allow_out=allow_out, deny_out=deny_out),
        lifecycle=E2bLifecycle(
            auto_resume=rec.wake_on_traffic, on_timeout="pause" if rec.on_deadline == "pause" else "kill"
        ),
    )


def to_metric(rec: SandboxRecord, metrics: SandboxMetrics) -> E2bSandboxMetric:
    """Our metrics as one E2B sample; ``cpuUsedPct`` is the 1-minute load per CPU."""
    now = datetime.now(UTC)
    return E2bSandboxMetric(
        timestamp=now,
        timestamp_unix=int(now.timestamp()),
        cpu_count=metrics.cpu_count,
        cpu_used_pct=round(min(100.0, 100.0 * metrics.load_1m / metrics.cpu_count), 2),
        mem_used=metrics.mem_used_mb * 2**20,
        mem_total=metrics.mem_total_mb * 2**20,
        mem_cache=0,
        disk_used=metrics.disk_used_mb * 2**20,
        disk_total=rec.disk_gb * 2**30,
    )


def metadata_filter(text: str | None) -> dict[str, str] | None:
    """The SDK's ``metadata`` query: ``k=v&…``, each key and value percent-encoded once more
    before the whole is (``urlencode`` of ``quote``d pairs)."""
    if not text:
        return None
    try:
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise BadRequest("metadata must be key=value pairs joined by &") from None
    return {urllib.parse.unquote(k): urllib.parse.unquote(v) for k, v in pairs}


def _listed_page(records: list[SandboxRecord], token: str | None) -> Response[list[E2bListedSandbox]]:
    headers = {NEXT_TOKEN_HEADER: token} if token else {}
    return Response([to_listed(r) for r in records], headers=headers)


def _entry(event: LogEvent) -> E2bSandboxLogEntry:
    return E2bSandboxLogEntry(
        timestamp=event.timestamp, message=event.message, level=event.level, fields=event.fields
    )


def _since(events: list[LogEvent], start_ms: int | None) -> list[LogEvent]:
    if start_ms is None:
        return events
    return [e for e in events if e.timestamp.timestamp() * 1000 >= start_ms]


DEPENDENCIES = {
    "principal": Provide(provide_principal),
    "e2b": Provide(provide_e2b, sync_to_thread=False),
}


class E2bSandboxesV2(Controller):
    path = "/v2/sandboxes"
    dependencies = DEPENDENCIES
    guards = [well_formed]

    @post("/", status_code=201)
    async def create(
        self, request: Request, principal: Principal, e2b: E2bService, data: E2bNewSandbox
    ) -> E2bSandbox:
        refused = [
            name
            for name, given in (("mcp", data.mcp), ("iam", data.iam), ("volumeMounts", data.volume_mounts))
            if given
        ]
        network = data.network
        if network is not None:
            refused += [
                f"network.{name}"
                for name, given in (("rules", network.rules), ("egressProxy", network.egress_proxy))
                if given
            ]
        if refused:
            raise BadRequest(f"not served here: {', '.join(refused)}")
        policy = egress_policy(
            allow_internet_access=data.allow_internet_access,
            allow_out=network.allow_out if network else None,
            deny_out=network.deny_out if network else None,
        )
        public = network is None or network.allow_public_traffic is not False
        created = await e2b.create(
            principal.org_id,
            template=data.template_id,
            timeout_s=data.timeout,
            auto_pause=data.auto_pause,
            auto_resume=data.auto_resume is not None and data.auto_resume.enabled,
            metadata=data.metadata,
            env=data.env_vars,
            egress=policy,
            public=public,
        )
        return to_sandbox(created, preview_domain(request))

    @get("/")
    async def list_sandboxes(
        self,
        principal: Principal,
        e2b: E2bService,
        metadata: str | None = None,
        states: Annotated[str | None, Parameter(query="state")] = None,
        order: Literal["asc", "desc"] = "desc",
        started_after: Annotated[datetime | None, Parameter(query="startedAfter")] = None,
        template: str | None = None,
        next_token: Annotated[str | None, Parameter(query="nextToken")] = None,
        limit: Annotated[int, Parameter(ge=1, le=MAX_PAGE)] = 100,
    ) -> Response[list[E2bListedSandbox]]:
        records, token = await e2b.page(
            principal.org_id,
            states=states_of([s.strip() for s in states.split(",") if s.strip()] if states else []),
            labels=metadata_filter(metadata),
            template=template,
            started_after=started_after,
            ascending=order == "asc",
            next_token=next_token,
            limit=limit,
        )
        return _listed_page(records, token)

    @post("/{sandbox_id:str}/connect", status_code=200)
    async def connect(
        self,
        request: Request,
        sandbox_id: str,
        principal: Principal,
        e2b: E2bService,
        data: E2bConnect | None = None,
    ) -> Response[E2bSandbox]:
        created, brought_back = await e2b.connect(
            principal.org_id, sandbox_id, data.timeout if data else None
        )
        return Response(
            to_sandbox(created, preview_domain(request)), status_code=201 if brought_back else 200
        )

    @get("/{sandbox_id:str}/logs")
    async def logs(
        self,
        sandbox_id: str,
        principal: Principal,
        e2b: E2bService,
        cursor: int | None = None,
        limit: Annotated[int, Parameter(ge=0, le=MAX_PAGE)] = 1000,
        direction: Literal["forward", "backward"] = "forward",
        level: Literal["debug", "info", "warn", "error"] | None = None,
        search: str | None = None,
    ) -> E2bSandboxLogsV2:
        events = log_events(await e2b.get(principal.org_id, sandbox_id))
        if cursor is not None:
            forward = direction == "forward"
            events = [e for e in events if (e.timestamp.timestamp() * 1000 >= cursor) == forward]
        if direction == "backward":
            events.reverse()
        if level is not None:
            events = [e for e in events if e.at_least(level)]
        if search:
            events = [e for e in events if search in e.message]
        return E2bSandboxLogsV2(logs=[_entry(e) for e in events[:limit]])


class E2bSandboxes(Controller):
    path = "/sandboxes"
    dependencies = DEPENDENCIES
    guards = [well_formed]

    @get("/")
    async def list_running(
        self, principal: Principal, e2b: E2bService, metadata: str | None = None
    ) -> list[E2bListedSandbox]:
        """v1's list: the running sandboxes (up to ``MAX_PAGE``), newest first."""
        records, _ = await e2b.page(
            principal.org_id,
            states=states_of(["running"]),
            labels=metadata_filter(metadata),
            template=None,
            started_after=None,
            ascending=False,
            next_token=None,
            limit=MAX_PAGE,
        )
        return [to_listed(r) for r in records]

    @get("/metrics")
    async def metrics_of_many(
        self,
        principal: Principal,
        e2b: E2bService,
        sandbox_ids: Annotated[str, Parameter(query="sandbox_ids")],
    ) -> E2bSandboxesWithMetrics:
        """The latest sample of each named sandbox that runs (others are left out)."""
        ids = list(dict.fromkeys(i.strip() for i in sandbox_ids.split(",") if i.strip()))
        if not 1 <= len(ids) <= 100:
            raise BadRequest("sandbox_ids names 1 to 100 sandboxes, comma-separated")

        async def one(sandbox_id: str) -> tuple[str, E2bSandboxMetric] | None:
            try:
                rec = await e2b.get(principal.org_id, sandbox_id)
                metrics = await e2b.metrics(principal.org_id, rec.id)
            except CoreError:
                return None
            return (rec.id, to_metric(rec, metrics)) if metrics is not None else None

        found = [item for item in await asyncio.gather(*(one(i) for i in ids)) if item is not None]
        return E2bSandboxesWithMetrics(sandboxes=dict(found))

    @get("/{sandbox_id:str}")
    async def read(
        self, request: Request, sandbox_id: str, principal: Principal, e2b: E2bService
    ) -> E2bSandboxDetail:
        return to_detail(await e2b.detail(principal.org_id, sandbox_id), preview_domain(request))

    @delete("/{sandbox_id:str}", status_code=204)
    async def kill(self, sandbox_id: str, principal: Principal, e2b: E2bService) -> None:
        await e2b.kill(principal.org_id, sandbox_id)

    @post("/{sandbox_id:str}/pause", status_code=204)
    async def pause(
        self, sandbox_id: str, principal: Principal, e2b: E2bService, data: E2bPause | None = None
    ) -> None:
        await e2b.pause(principal.org_id, sandbox_id)

    @post("/{sandbox_id:str}/resume", status_code=201)
    async def resume(
        self,
        request: Request,
        sandbox_id: str,
        principal: Principal,
        e2b: E2bService,
        data: E2bResume | None = None,
    ) -> E2bSandbox:
        data = data or E2bResume()
        created = await e2b.resume(principal.org_id, sandbox_id, data.timeout, data.auto_pause)
        return to_sandbox(created, preview_domain(request))

    @post("/{sandbox_id:str}/connect", status_code=200)
    async def connect(
        self,
        request: Request,
        sandbox_id: str,
        principal: Principal,
        e2b: E2bService,
        data: E2bConnect | None = None,
    ) -> Response[E2bSandbox]:
        """v1's connect, as v2's (no body, or no ``timeout``: the deadline as v2 leaves it)."""
        created, brought_back = await e2b.connect(
            principal.org_id, sandbox_id, data.timeout if data else None
        )
        return Response(
            to_sandbox(created, preview_domain(request)), status_code=201 if brought_back else 200
        )

    @post("/{sandbox_id:str}/timeout", status_code=204)
    async def set_timeout(
        self, sandbox_id: str, principal: Principal, e2b: E2bService, data: E2bSetTimeout
    ) -> None:
        await e2b.set_timeout(principal.org_id, sandbox_id, data.timeout)

    @post("/{sandbox_id:str}/refreshes", status_code=204)
    async def refresh(
        self, sandbox_id: str, principal: Principal, e2b: E2bService, data: E2bRefresh | None = None
    ) -> None:
        await e2b.refresh(principal.org_id, sandbox_id, data.duration if data else None)

    @put("/{sandbox_id:str}/network", status_code=204)
    async def set_network(
        self, sandbox_id: str, principal: Principal, e2b: E2bService, data: E2bNetworkUpdate | None = None
    ) -> None:
        """Replace the egress lists; what the body omits (or no body) is cleared."""
        data = data or E2bNetworkUpdate()
        if data.rules or data.egress_proxy:
            raise BadRequest("not served here: rules, egressProxy")
        await e2b.set_network(principal.org_id, sandbox_id, allow_out=data.allow_out, deny_out=data.deny_out)

    @get("/{sandbox_id:str}/metrics")
    async def metrics(
        self,
        sandbox_id: str,
        principal: Principal,
        e2b: E2bService,
        start: int | None = None,
        end: int | None = None,
    ) -> list[E2bSandboxMetric]:
        """One sample, taken now, for a running sandbox; none for a paused one (the core keeps
        no history of metrics: ``start`` and ``end`` select nothing more)."""
        rec = await e2b.get(principal.org_id, sandbox_id)
        metrics = await e2b.metrics(principal.org_id, rec.id)
        return [to_metric(rec, metrics)] if metrics is not None else []

    @get("/{sandbox_id:str}/logs")
    async def logs(
        self,
        sandbox_id: str,
        principal: Principal,
        e2b: E2bService,
        start: int | None = None,
        limit: Annotated[int, Parameter(ge=0, le=MAX_PAGE)] = 1000,
    ) -> E2bSandboxLogs:
        events = _since(log_events(await e2b.get(principal.org_id, sandbox_id)), start)[:limit]
        return E2bSandboxLogs(
            logs=[E2bSandboxLog(timestamp=e.timestamp, line=e.message) for e in events],
            log_entries=[_entry(e) for e in events],
        )
