"""hostd's HTTP front end: the routes of ``contracts/host.py`` over ``HostController``.

Served by ``granian --interface asgi --factory hosts.app:create_app --workers 1 --loop uvloop``.
Exactly one worker: the controller's per-sandbox locks and agent connections live in this
process, and two workers would race each other on the same sandboxes.

This module only translates: HTTP requests into ``hosts.commands``, results into JSON, and
``HostError`` subclasses into their status code with a ``HostErrorBody``. Every route needs
``Authorization: Bearer <api_token>`` (the token hostd gave the core at registration).

Start-up brings over what the namespace runtime left in var/ (``hosts/runtime/oci/migrate``),
adopts whatever sandboxes a previous hostd left (``runtime.recover()``) and then registers
with the core. Shutdown closes agent connections but deliberately leaves sandboxes
running: a hostd restart or upgrade must not kill users' work, and the next hostd adopts them.

Outermost is the guard (``guard/``): slow, oversized and malformed requests are refused
before Litestar sees them, with a ``HostErrorBody``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import TypeVar, cast

import msgspec
import structlog
from litestar import Litestar, MediaType, Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException, ValidationException
from litestar.middleware import DefineMiddleware
from litestar.types import ASGIApp, HTTPScope, Message, Receive, Scope, Send

from contracts import guest
from contracts.host import (
    DiskUsage,
    ExecRequest,
    ExecResult,
    HostErrorBody,
    HostHealth,
    SandboxInfo,
    SandboxSpec,
)
from contracts.observability import REQUEST_ID_HEADER, bind_request_id, configure_logging
from guard import ASGIApp as GuardedApp
from guard import guard
from hosts import lifecycle, service_ready
from hosts.build_logs import template_build_log
from hosts.commands import (
    AgentCall,
    CreateSandbox,
    DestroySandbox,
    ExecInSandbox,
    GetDiskUsage,
    GetHealth,
    ListSandboxes,
    StartSandbox,
    StopSandbox,
    is_sandbox_id,
)
from hosts.config import HostdConfig, load_config
from hosts.controller import HostController
from hosts.egress.controller import EgressController
from hosts.egress.routes import set_egress
from hosts.egress.service import Egress
from hosts.egress.service import enabled as egress_enabled
from hosts.errors import HostError, TemplateNotFound
from hosts.ports import PortRoutes, is_port_route
from hosts.proc import proc_socket
from hosts.registration import Registrar
from hosts.runtime.base import SandboxRuntime
from hosts.runtime.factory import make_runtime
from hosts.runtime.fake import FakeRuntime
from hosts.runtime.oci.migrate import Target, migrate
from hosts.snapshot_store import EntryStore
from hosts.templates import TemplateStore
from hosts.terminal import pty_socket
from hosts.transfers import read_file, write_file

log = structlog.get_logger("hosts.app")

_S = TypeVar("_S", bound=msgspec.Struct)

_REQUEST_ID_KEY = REQUEST_ID_HEADER.encode()
_UNAUTHORIZED = msgspec.json.encode(
    HostErrorBody(code="unauthorized", message="missing or wrong bearer token")
)
_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed"}


def create_app() -> GuardedApp:
    """Build hostd from the environment (see ``hosts/config.py``)."""
    config = load_config()
    configure_logging("hostd", fmt=config.log_format)
    app = Litestar(
        route_handlers=[
            health,
            list_sandboxes,
            create_sandbox,
            start_sandbox,
            stop_sandbox,
            destroy_sandbox,
            exec_in,
            agent_call,
            write_file,
            read_file,
            disk_usage,
            pty_socket,
            proc_socket,
            template_build_log,
            *lifecycle.ROUTES,
            set_egress,
        ],
        lifespan=[_lifespan(config)],
        middleware=[DefineMiddleware(_AuthAndLog, api_token=config.api_token)],
        exception_handlers={HostError: _host_error, HTTPException: _http_error, Exception: _unexpected_error},
        logging_config=None,
        openapi_config=None,
    )
    # The routes into sandboxes' ports (hosts/ports/) are raw ASGI in front of Litestar.
    routed = PortRoutes(
        app,
        lambda: _controller(app.state),
        lambda inner: _AuthAndLog(cast("ASGIApp", inner), api_token=config.api_token),
    )
    return guard(routed, config.http, _error_body, byte_streams=_byte_stream)


_UPLOAD = re.compile(r"/sandboxes/[^/]+/files/?")
"""The upload route, whose body is a file; the port routes' bodies are the sandbox server's;
every other route's body is JSON."""


def _byte_stream(method: str, path: str) -> bool:
    return (method == "PUT" and _UPLOAD.fullmatch(path) is not None) or is_port_route(path)


def _error_body(status: int, code: str, message: str) -> bytes:
    return msgspec.json.encode(HostErrorBody(code=code, message=message))


def _lifespan(config: HostdConfig) -> Callable[[Litestar], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        templates = TemplateStore(config.template_cache, config.build_script)
        egress = Egress(config) if egress_enabled(config) else None
        runtime = make_runtime(config, templates, egress)
        ready: Callable[[], list[str]] = functools.partial(_ready_templates, templates)
        if isinstance(runtime, FakeRuntime):
            # Only DNAH_HOST_RUNTIME=fake gets here: said loudly, as nothing is isolated.
            log.warning("DNAH_HOST_RUNTIME=fake: sandboxes are plain processes, NOT isolated; tests only")
            ready = runtime.ready_templates
        elif not ready():
            log.warning("no template is built; run `dnah template build`", cache=str(config.template_cache))
        if config.runtime == "oci":
            # A var/ from the namespace runtime is brought over before recover reads it.
            await asyncio.to_thread(migrate, Target.from_hostd(config, templates))
        inventory = await runtime.recover()
        log.info(
            "hostd starting",
            runtime=runtime.kind,
            because=config.runtime_reason,
            adopted=len(inventory),
            api_url=config.api_url,
        )
        snapshots = EntryStore(config.snapshot_dir, "snapshot")
        archives = EntryStore(config.archive_dir, "archive")
        for store in (snapshots, archives):
            # Whatever a killed hostd was writing or deleting there is not an entry: drop it.
            if swept := await asyncio.to_thread(store.sweep):
                log.warning("removed unfinished store entries", store=str(store.root), entries=swept)
        if egress is not None:
            await egress.start(runtime)
            controller: HostController = EgressController(
                runtime, egress, snapshots=snapshots, archives=archives
            )
        else:
            controller = HostController(runtime, snapshots=snapshots, archives=archives)
        controller.service_ports = functools.partial(service_ready.ready_ports, templates)
        app.state.controller = controller
        app.state.templates = templates
        registrar = Registrar(config, runtime, ready)
        registration = asyncio.create_task(registrar.run(), name="hostd-registration")
        preparing = asyncio.create_task(
            _prepare_templates(runtime, templates, config.prepare_templates), name="hostd-prepare"
        )
        try:
            yield
        finally:
            for task in (preparing, registration):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await controller.close()
            if egress is not None:
                await egress.close()
            log.info("hostd stopped; sandboxes left running", sandboxes=len(runtime.list()))

    return lifespan


def _ready_templates(store: TemplateStore) -> list[str]:
    """The templates sandboxes can be created from right now: those with a recipe whose
    current build is in the cache. hostd never builds one itself: a build is minutes of
    debootstrap and apt, done beforehand by ``dnah template build``."""
    ready = []
    for name in store.names():
        try:
            store.get(name)
        except TemplateNotFound:
            continue
        ready.append(name)
    return ready


async def _prepare_templates(runtime: SandboxRuntime, store: TemplateStore, names: tuple[str, ...]) -> None:
    """Ready ``names`` (``all``: every built template) for fast creates, one after the other,
    in the background: a failure is logged, and that template's first create does the work."""
    wanted = store.names() if "all" in names else list(names)
    for name in wanted:
        started = time.monotonic()
        try:
            template = await asyncio.to_thread(store.get, name)
            await runtime.prepare(template)
        except HostError as exc:
            log.warning("template not prepared", template=name, error=str(exc))
            continue
        log.info("template prepared", template=name, seconds=round(time.monotonic() - started, 1))


# routes -------------------------------------------------------------------------------------


@get("/health")
async def health(state: State) -> HostHealth:
    return await _controller(state).handle(GetHealth())


@get("/sandboxes")
async def list_sandboxes(state: State) -> list[SandboxInfo]:
    return await _controller(state).handle(ListSandboxes())


@post("/sandboxes", status_code=200)
async def create_sandbox(request: Request, state: State) -> SandboxInfo:
    spec = await _decode(request, SandboxSpec)
    if not is_sandbox_id(spec.id):
        raise ValidationException(f"spec.id {spec.id!r} is not 1-63 letters, digits, '-' or '_'")
    return await _controller(state).handle(CreateSandbox(spec=spec))


@post("/sandboxes/{sandbox_id:str}/start", status_code=200)
async def start_sandbox(sandbox_id: str, request: Request, state: State) -> SandboxInfo:
    spec = await _decode(request, SandboxSpec)
    if spec.id != sandbox_id:
        raise ValidationException(f"spec.id {spec.id!r} does not match the path's {sandbox_id!r}")
    return await _controller(state).handle(StartSandbox(spec=spec))


@post("/sandboxes/{sandbox_id:str}/stop", status_code=200)
async def stop_sandbox(sandbox_id: str, state: State) -> SandboxInfo:
    return await _controller(state).handle(StopSandbox(sandbox_id=sandbox_id))


@delete("/sandboxes/{sandbox_id:str}")
async def destroy_sandbox(sandbox_id: str, state: State) -> None:
    await _controller(state).handle(DestroySandbox(sandbox_id=sandbox_id))


@post("/sandboxes/{sandbox_id:str}/exec", status_code=200)
async def exec_in(sandbox_id: str, request: Request, state: State) -> ExecResult:
    exec_request = await _decode(request, ExecRequest)
    return await _controller(state).handle(ExecInSandbox(sandbox_id=sandbox_id, request=exec_request))


@post("/sandboxes/{sandbox_id:str}/agent", status_code=200)
async def agent_call(sandbox_id: str, request: Request, state: State) -> Response[bytes]:
    """The generic relay: one guest request in, the agent's reply out (see contracts/host.py)."""
    try:
        message = guest.decode_relayed(await request.body())
    except msgspec.DecodeError as exc:
        raise ValidationException(f"invalid agent request: {exc}") from None
    reply = await _controller(state).handle(AgentCall(sandbox_id=sandbox_id, message=message))
    return Response(msgspec.json.encode(reply), media_type=MediaType.JSON)


@get("/sandboxes/{sandbox_id:str}/disk")
async def disk_usage(sandbox_id: str, state: State) -> DiskUsage:
    return await _controller(state).handle(GetDiskUsage(sandbox_id=sandbox_id))


def _controller(state: State) -> HostController:
    controller: HostController = state.controller
    return controller


async def _decode(request: Request, type_: type[_S]) -> _S:
    """Decode the body strictly with the contract Struct (unknown fields are rejected)."""
    try:
        return msgspec.json.decode(await request.body(), type=type_)
    except msgspec.DecodeError as exc:  # ValidationError (valid JSON, wrong shape) included
        raise ValidationException(f"invalid {type_.__name__}: {exc}") from None


# errors -------------------------------------------------------------------------------------


def _error(status: int, code: str, message: str) -> Response[HostErrorBody]:
    return Response(HostErrorBody(code=code, message=message), status_code=status)


def _host_error(_: Request, exc: Exception) -> Response[HostErrorBody]:
    assert isinstance(exc, HostError)
    return _error(exc.status_code, exc.code, str(exc) or exc.code)


def _http_error(_: Request, exc: Exception) -> Response[HostErrorBody]:
    assert isinstance(exc, HTTPException)
    return _error(exc.status_code, _HTTP_CODES.get(exc.status_code, "http_error"), exc.detail)


def _unexpected_error(request: Request, exc: Exception) -> Response[HostErrorBody]:
    log.error("unhandled error", method=request.method, path=request.url.path, exc_info=exc)
    return _error(500, "internal", "internal error; see hostd's log")


# middleware ---------------------------------------------------------------------------------


class _AuthAndLog:
    """ASGI middleware: bind the request id, check the bearer token, log one line per request.

    Litestar runs it once a route matched (an unknown path is a 404 whatever the token); a
    rejected request is answered here, before its body is read or a handler runs.
    """

    def __init__(self, app: ASGIApp, *, api_token: str) -> None:
        self._app = app
        self._token = api_token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(cast("HTTPScope", scope), receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self._app(scope, receive, send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The terminal route needs the token as much as any other: a refused upgrade is
        closed before it is accepted (the client sees HTTP 403)."""
        started = time.perf_counter()
        headers = dict(scope["headers"])
        bind_request_id(headers.get(_REQUEST_ID_KEY, b"").decode("latin-1"))
        authorized = self._authorized(headers.get(b"authorization", b""))
        try:
            if authorized:
                await self._app(scope, receive, send)
            else:
                await send({"type": "websocket.close", "code": 1008, "reason": ""})
        finally:
            log.info(
                "websocket",
                path=scope["path"],
                authorized=authorized,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )

    def _authorized(self, authorization: bytes) -> bool:
        scheme, _, token = authorization.partition(b" ")
        # The scheme is case-insensitive (RFC 9110 §11.1); compare_digest keeps the time taken
        # independent of where a wrong token differs from the right one.
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self._token)

    async def _http(self, scope: HTTPScope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        headers = dict(scope["headers"])
        request_id = bind_request_id(headers.get(_REQUEST_ID_KEY, b"").decode("latin-1"))
        status = 500

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (_REQUEST_ID_KEY, request_id.encode())]
            await send(message)

        try:
            if self._authorized(headers.get(b"authorization", b"")):
                await self._app(scope, receive, send_with_request_id)
            else:
                await _send_unauthorized(send_with_request_id)
        finally:
            log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )


async def _send_unauthorized(send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")],
        }
    )
    await send({"type": "http.response.body", "body": _UNAUTHORIZED, "more_body": False})
