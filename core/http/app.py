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

from contracts.e2b import ENVD_PREFIX
from contracts.observability import configure_logging
from contracts.public import ErrorBody, Health
from core.cache import Cache
from core.config import CoreConfig, load_config
from core.db.migrate import migrate
from core.db.pool import create_pool
from core.hostclient import HostClient
from core.http import daytona, native
from core.http.common.errors import EXCEPTION_HANDLERS
from core.http.e2b import E2B_ROUTES
from core.http.e2b.envd import EnvdApp, with_e2b_headers
from core.http.edge import EdgePayments
from core.http.internal import InternalHosts, ssh_auth
from core.http.metrics import metrics
from core.http.middleware import paid_requests, request_context
from core.http.preview import PREFIX as PREVIEW_PREFIX
from core.http.preview import PreviewProxy
from core.http.ssh_relay import SSH_RELAYS
from core.port_client import PortClient
from core.services.auth import AuthService
from core.services.backups import BackupService
from core.services.build_logs import BuildLogService
from core.services.egress import EgressService
from core.services.hosts import HostService
from core.services.lifecycle import LifecycleService
from core.services.payments import PaymentService
from core.services.preview import PreviewService
from core.services.processes import ProcessService
from core.services.reaper import Reaper
from core.services.sandboxes import SandboxService
from core.services.secrets import SecretBox, SecretService
from core.services.snapshots import SnapshotService
from core.services.ssh import SshService
from core.services.startup import StartupSettler
from core.services.toolbox.code import CodeService
from core.services.toolbox.files import FileService
from core.services.toolbox.git import GitService
from core.services.toolbox.sessions import SessionService
from core.services.toolbox.terminals import TerminalService
from core.services.toolbox.watch import WatchService
from core.services.warm_pool import WarmPool
from core.services.webhook_dispatch import Dispatcher
from core.services.webhooks import WebhookService
from guard import ASGIApp, guard
from guard.reply import Receive, Scope, Send

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
    native.ROUTER,
    daytona.ROUTER,
    *E2B_ROUTES,
    InternalHosts,
    EdgePayments,
    ssh_auth,
    *SSH_RELAYS,
]
"""Every route the core serves (listed for the gateway in ``contracts/core_routes.py``)."""


_UPLOADS = re.compile(r"/v1/sandboxes/[^/]+/files/?|/toolbox/[^/]+/files/(?:bulk-)?upload/?")
"""The routes whose body is a file (or multipart files), streamed: every other route decodes
its body as JSON."""


def _byte_stream(method: str, path: str) -> bool:
    if path.startswith((PREVIEW_PREFIX, ENVD_PREFIX + "/")):
        return True  # the body is the server's in the sandbox, or envd's (files, Connect envelopes)
    return method in ("PUT", "POST") and _UPLOADS.fullmatch(path) is not None


def _with_preview(app: ASGIApp, preview: ASGIApp, envd: ASGIApp) -> ASGIApp:
    """``/preview/…`` to the preview proxy (``core/http/preview.py``), ``/envd/…`` to E2B's
    data plane (``core/http/e2b/envd/``), the rest to Litestar."""

    async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and scope["path"].startswith(PREVIEW_PREFIX):
            await preview(scope, receive, send)
        elif scope["type"] in ("http", "websocket") and scope["path"].startswith(ENVD_PREFIX + "/"):
            await envd(scope, receive, send)
        else:
            await app(scope, receive, send)

    return dispatch


def _in_app(app: Litestar, inner: ASGIApp) -> ASGIApp:
    """``inner`` (raw ASGI) with ``app`` in its scope, where Litestar's middleware looks for it."""

    async def call(scope: Scope, receive: Receive, send: Send) -> None:
        await inner({**scope, "litestar_app": app}, receive, send)

    return call


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
        state.files = FileService(state.sandboxes)
        state.git = GitService(state.sandboxes)
        state.sessions = SessionService(state.sandboxes)
        state.terminals = TerminalService(state.sandboxes)
        state.code = CodeService(state.sandboxes)
        state.processes = ProcessService(state.sandboxes, db)
        state.watches = WatchService(state.sandboxes)
        state.hosts = HostService(db, host_client, config)
        state.ssh = SshService(db, state.sandboxes, config)
        state.lifecycle = LifecycleService(db, host_client, config)
        state.snapshots = SnapshotService(db, host_client, config, state.sandboxes, state.lifecycle)
        state.backups = BackupService(
            db, state.sandboxes, state.snapshots, stale_after_s=config.stale_long_operation_s
        )
        state.build_logs = BuildLogService(db, host_client)
        state.webhooks = WebhookService(db, allow_private=config.webhooks.allow_private)
        state.preview = PreviewService(db, state.lifecycle, state.auth, config)
        state.ports = PortClient()
        state.egress = EgressService(db, host_client)
        state.secrets = SecretService(db, SecretBox(config.secrets_key))
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
            await state.ports.close()
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
    preview = request_context(PreviewProxy(lambda: (app.state.preview, app.state.ports)))  # type: ignore[arg-type]
    # paid envd calls are marked served as Litestar's are (paid_requests finds the app in the scope)
    envd = request_context(_in_app(app, paid_requests(EnvdApp(lambda: app.state))))  # type: ignore[arg-type]
    guarded = guard(_with_preview(app, preview, envd), config.http, _error_body, byte_streams=_byte_stream)
    return with_e2b_headers(guarded)  # outermost: the guard sees the rewritten path
