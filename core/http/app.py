"""The core's ASGI app: wiring only. Served by Granian:
``granian --interface asgi --factory core.http.app:create_app``.

Outermost is the guard (``guard/``): slow, oversized and malformed requests are refused
before Litestar sees them, with the core's error body."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator

import msgspec
import structlog
from litestar import Litestar, Response, get
from litestar.datastructures import State
from litestar.types import ControllerRouterHandler

from contracts.observability import configure_logging
from contracts.public import ErrorBody, Health
from core.cache import Cache
from core.config import CoreConfig, load_config
from core.db.migrate import migrate
from core.db.pool import create_pool
from core.hostclient import HostClient
from core.http.daytona import DaytonaSandboxes, DaytonaToolbox
from core.http.edge import EdgePayments
from core.http.errors import EXCEPTION_HANDLERS
from core.http.files import DaytonaFiles, NativeFiles
from core.http.git import DaytonaGit, NativeGit
from core.http.internal import InternalHosts
from core.http.lifecycle import DaytonaLifecycle, NativeLifecycle, NativeSnapshots
from core.http.metrics import metrics
from core.http.middleware import paid_requests, request_context
from core.http.native import ApiKeys, NativeSandboxes
from core.http.sessions import DaytonaSessions, NativeSessions
from core.http.terminals import TERMINAL_ROUTES
from core.http.transfers import DaytonaTransfers
from core.http.webhooks import NativeWebhooks
from core.services.auth import AuthService
from core.services.hosts import HostService
from core.services.lifecycle import LifecycleService
from core.services.payments import PaymentService
from core.services.reaper import Reaper
from core.services.sandboxes import SandboxService
from core.services.snapshots import SnapshotService
from core.services.startup import StartupSettler
from core.services.warm_pool import WarmPool
from core.services.webhook_dispatch import Dispatcher
from core.services.webhooks import WebhookService
from guard import ASGIApp, guard

log = structlog.get_logger()


@get("/health")
async def health(state: State) -> Response[Health]:
    checks = {"postgres": "ok", "redis": "ok"}
    try:
        await state.db.fetchval("SELECT 1")
    except Exception:
        checks["postgres"] = "unreachable"
    if not await state.cache.ping():
        checks["redis"] = "unreachable"
    ok = all(v == "ok" for v in checks.values())
    return Response(Health(status="ok" if ok else "degraded", checks=checks), status_code=200 if ok else 503)


async def _sweeper(
    hosts: HostService, lifecycle: LifecycleService, snapshots: SnapshotService, interval_s: float
) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            await hosts.sweep_stale()
            await lifecycle.sweep_stale()
            await snapshots.sweep_stale()
        except Exception:
            log.exception("sweep_failed")


ROUTE_HANDLERS: list[ControllerRouterHandler] = [
    health,
    metrics,
    NativeSandboxes,
    NativeLifecycle,
    NativeSnapshots,
    DaytonaLifecycle,
    ApiKeys,
    DaytonaSandboxes,
    DaytonaToolbox,
    NativeSessions,
    DaytonaSessions,
    NativeGit,
    DaytonaGit,
    NativeFiles,
    DaytonaFiles,
    DaytonaTransfers,
    NativeWebhooks,
    InternalHosts,
    EdgePayments,
    *TERMINAL_ROUTES,
]
"""Every route the core serves (listed for the gateway in ``contracts/core_routes.py``)."""


_UPLOADS = re.compile(r"/v1/sandboxes/[^/]+/files/?|/toolbox/[^/]+/files/(?:bulk-)?upload/?")
"""The routes whose body is a file (or multipart files), streamed: every other route decodes
its body as JSON."""


def _byte_stream(method: str, path: str) -> bool:
    return method in ("PUT", "POST") and _UPLOADS.fullmatch(path) is not None


def _error_body(status: int, code: str, message: str) -> bytes:
    return msgspec.json.encode(ErrorBody(status_code=status, message=message, code=code))


def create_app(config: CoreConfig | None = None) -> ASGIApp:
    config = config or load_config()
    configure_logging("core", fmt=config.log_format)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        db = await create_pool(config.database_url)
        async with db.acquire() as conn:
            await migrate(conn)
        cache = Cache(config.redis_url)
        host_client = HostClient(timeout_s=config.host_timeout_s, vm_timeout_s=config.vm_host_timeout_s)
        state = app.state
        state.config, state.db, state.cache = config, db, cache
        state.auth = AuthService(db, cache, edge_token=config.edge_token)
        state.payments = PaymentService(db, config.edge_token)
        state.sandboxes = SandboxService(db, host_client, config)
        state.hosts = HostService(db, host_client, config)
        state.lifecycle = LifecycleService(db, host_client, config)
        state.snapshots = SnapshotService(db, host_client, config, state.sandboxes, state.lifecycle)
        state.webhooks = WebhookService(db, allow_private=config.webhooks.allow_private)
        dispatcher = Dispatcher(db, config.webhooks, database_url=config.database_url)
        # rows a dead predecessor (or a Postgres restart) left mid-operation are settled at
        # once, not after the staleness limit
        settling = asyncio.create_task(
            StartupSettler(db, host_client, state.lifecycle).watch(config.reconcile_interval_s),
            name="startup-settling",
        )
        sweeper = asyncio.create_task(
            _sweeper(state.hosts, state.lifecycle, state.snapshots, config.reconcile_interval_s)
        )
        warm_pool = asyncio.create_task(
            WarmPool(db, state.sandboxes, config).run(config.reconcile_interval_s), name="warm-pool"
        )
        reaper = asyncio.create_task(
            Reaper(db, state.lifecycle, state.sandboxes).run(config.reaper_interval_s), name="reaper"
        )
        payment_sweep = asyncio.create_task(
            state.payments.sweep(config.payment_settle_after_s, config.reconcile_interval_s),
            name="payment-sweep",
        )
        dispatching = asyncio.create_task(dispatcher.run())
        log.info("core_started", port=config.port)
        try:
            yield
        finally:
            settling.cancel()
            payment_sweep.cancel()
            sweeper.cancel()
            reaper.cancel()
            warm_pool.cancel()
            dispatching.cancel()
            await asyncio.gather(dispatching, return_exceptions=True)
            await dispatcher.close()
            await state.hosts.wait_idle()
            await host_client.close()
            await cache.close()
            await db.close()

    app = Litestar(
        route_handlers=ROUTE_HANDLERS,
        lifespan=[lifespan],
        middleware=[request_context, paid_requests],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        openapi_config=None,
        debug=False,
    )
    return guard(app, config.http, _error_body, byte_streams=_byte_stream)
