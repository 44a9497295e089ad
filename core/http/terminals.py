"""Terminals over WebSockets, and Daytona's PTY routes, over the service layer.

Native: ``GET /v1/sandboxes/{id}/terminal?cols=&rows=&cwd=&session_id=`` (WebSocket). Without
``session_id`` it opens a new terminal that lives as long as this socket (killed, with every
process it started, when the socket goes away); with one it attaches to an existing session
(made with Daytona's ``POST /process/pty``). Messages are described in ``contracts/public.py``
(``TerminalReady``, ``TerminalResize``, ``TerminalExit``): the server sends ``ready`` as text,
then the output as binary messages, and when the shell exits ``{"type":"exit","exit_code":N}``
as text and closes with 1000. The client's binary messages are input; so are its text
messages, except a ``{"type":"resize","cols":..,"rows":..}``.

Daytona (its toolbox API, ``/toolbox/{id}/process/pty…``; seed 004's ``/sandbox/{id}/toolbox/…``
is mapped by the gateway): REST create (201 ``{sessionId}``), list, get, kill (DELETE), resize,
and two WebSockets. ``create-connect?id=&cols=&rows=&cwd=`` makes a session that lives as long
as its clients (the native rule) and attaches; ``{sessionId}/connect`` attaches to an existing
one. The client offers the ``X-Daytona-Pty-Exit-Control`` subprotocol, which is selected, and
may offer ``X-Daytona-Pty-Envs~<base64url JSON object>`` to pass environment variables (never
selected). The server sends ``{"type":"control","status":"connected"}`` as text, then output as
binary messages; at the shell's exit ``{"type":"control","status":"exited","exitCode":N}``
(with exit control) and a close with 1000 and the reason ``{"exitCode":N}``. Input is binary
(or text) messages; resizing goes through the REST route.

Authentication is the HTTP routes': a bearer key (or the gateway's edge token and payer) in
the upgrade's ``Authorization`` header. Every refusal before the upgrade (401, 404, 409, 400…)
is an HTTP answer with the usual error body (ASGI's ``websocket.http.response``), so clients
see the same status as on the REST routes. A plain GET (no upgrade) on a terminal's path is a
``426 Upgrade Required``. Opening, typing and the REST routes count as
activity (typing at most one write a second).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import time
import uuid
from collections.abc import Callable, Mapping

import msgspec
import structlog
from litestar import MediaType, Response, WebSocket, delete, get, post, websocket
from litestar.di import Provide
from litestar.exceptions import WebSocketDisconnect
from litestar.types import ControllerRouterHandler

from contracts import guest
from contracts.control import PAYER_HEADER, REQUEST_ID_HEADER
from contracts.fields import checked
from contracts.observability import bind_request_id
from contracts.public import (
    DaytonaPtyCreate,
    DaytonaPtyCreated,
    DaytonaPtyList,
    DaytonaPtyResize,
    DaytonaPtySessionInfo,
    ErrorBody,
    TerminalExit,
    TerminalReady,
    TerminalResize,
)
from core.errors import BadRequest, CoreError
from core.http.deps import provide_principal, provide_sandboxes
from core.http.errors import plain
from core.http.inputs import DaytonaController
from core.services.auth import AuthService, Principal
from core.services.sandboxes import ACTIVITY_GRANULARITY_S, SandboxService
from core.terminal_client import HostTerminal

log = structlog.get_logger()

EXIT_CONTROL = "X-Daytona-Pty-Exit-Control"
ENVS_PREFIX = "X-Daytona-Pty-Envs~"
CONNECTED = b'{"type":"control","status":"connected"}'

_resize = msgspec.json.Decoder(TerminalResize)
_envs = msgspec.json.Decoder(dict[str, str])
_json = msgspec.json.Encoder()

OpenerFactory = Callable[[], guest.PtyAttach]
"""Builds the opener from the upgrade request; may raise ``BadRequest``."""


# the native WebSocket --------------------------------------------------------------------------


@websocket("/v1/sandboxes/{sandbox_id:str}/terminal")
async def native_terminal(sandbox_id: str, socket: WebSocket) -> None:
    started = time.perf_counter()
    opened = await _open(socket, sandbox_id, lambda: _native_opener(socket.query_params))
    if opened is None:
        _log(socket, started, "refused")
        return
    real_id, terminal, info = opened
    await socket.accept()
    ready = TerminalReady(session_id=info.session_id, cols=info.cols, rows=info.rows)
    exit_code = await _pump(
        socket, terminal, real_id, info.session_id, ready=_json.encode(ready), resize=True
    )
    await _finish(
        socket, None if exit_code is None else _json.encode(TerminalExit(exit_code=exit_code)), exit_code
    )
    _log(socket, started, "closed", exit_code)


def _native_opener(query: Mapping[str, str]) -> guest.PtyAttach:
    session_id = query.get("session_id")
    if session_id:
        return guest.PtyAttach(id=0, session_id=session_id)
    cols, rows = _size(query)
    return guest.PtyAttach(
        id=0, session_id=str(uuid.uuid4()), create=True, cols=cols, rows=rows, cwd=query.get("cwd") or None
    )


# Daytona's WebSockets ---------------------------------------------------------------------------


@websocket("/toolbox/{sandbox_id:str}/process/pty/create-connect")
async def daytona_create_connect(sandbox_id: str, socket: WebSocket) -> None:
    started = time.perf_counter()

    def opener() -> guest.PtyAttach:
        query = socket.query_params
        session_id = query.get("id")
        if not session_id:
            raise BadRequest("the 'id' query parameter names the new pty session")
        cols, rows = _size(query)
        return guest.PtyAttach(
            id=0,
            session_id=session_id,
            create=True,
            cols=cols,
            rows=rows,
            cwd=query.get("cwd") or None,
            env=_offered_envs(socket),
        )

    await _daytona(socket, sandbox_id, opener, started)


@websocket("/toolbox/{sandbox_id:str}/process/pty/{session_id:str}/connect")
async def daytona_connect(sandbox_id: str, session_id: str, socket: WebSocket) -> None:
    started = time.perf_counter()
    await _daytona(socket, sandbox_id, lambda: guest.PtyAttach(id=0, session_id=session_id), started)


async def _daytona(socket: WebSocket, sandbox_id: str, opener: OpenerFactory, started: float) -> None:
    opened = await _open(socket, sandbox_id, opener)
    if opened is None:
        _log(socket, started, "refused")
        return
    real_id, terminal, info = opened
    exit_control = EXIT_CONTROL in _offered(socket)
    await socket.accept(subprotocols=EXIT_CONTROL if exit_control else None)
    exit_code = await _pump(socket, terminal, real_id, info.session_id, ready=CONNECTED, resize=False)
    last = None
    if exit_code is not None and exit_control:
        last = _json.encode({"type": "control", "status": "exited", "exitCode": exit_code})
    await _finish(
        socket, last, exit_code, reason=None if exit_code is None else f'{{"exitCode":{exit_code}}}'
    )
    _log(socket, started, "closed", exit_code)


def _offered(socket: WebSocket) -> list[str]:
    return list(socket.scope.get("subprotocols") or [])


def _offered_envs(socket: WebSocket) -> dict[str, str]:
    """The environment a Daytona client passes in its ``X-Daytona-Pty-Envs~`` subprotocol."""
    for offer in _offered(socket):
        if offer.startswith(ENVS_PREFIX):
            encoded = offer[len(ENVS_PREFIX) :]
            try:
                raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
                return _envs.decode(raw)
            except (binascii.Error, ValueError, msgspec.DecodeError):
                raise BadRequest(
                    "the X-Daytona-Pty-Envs subprotocol is not a base64url JSON object of strings"
                ) from None
    return {}


# Daytona's REST routes -----------------------------------------------------------------------------


def _daytona_info(info: guest.PtyInfo) -> DaytonaPtySessionInfo:
    return DaytonaPtySessionInfo(
        id=info.session_id,
        cols=info.cols,
        rows=info.rows,
        cwd=info.cwd,
        envs=info.env,
        created_at=info.created_at,
        active=info.active,
        lazy_start=info.lazy_start,
    )


class DaytonaPty(DaytonaController):
    path = "/toolbox/{sandbox_id:str}/process/pty"
    dependencies = {
        "principal": Provide(provide_principal),
        "sandboxes": Provide(provide_sandboxes, sync_to_thread=False),
    }

    @post("/", status_code=201)
    async def create(
        self,
        sandbox_id: str,
        principal: Principal,
        sandboxes: SandboxService,
        data: DaytonaPtyCreate | None = None,
    ) -> DaytonaPtyCreated:
        """A session that lives until it is killed or its shell exits (not tied to clients)."""
        data = data or DaytonaPtyCreate()  # no body: all defaults
        msg = guest.PtyCreate(
            id=0,
            session_id=data.id,
            cols=data.cols if data.cols is not None else 80,
            rows=data.rows if data.rows is not None else 24,
            cwd=data.cwd,
            env=data.envs or {},
            lazy_start=bool(data.lazy_start),
        )
        info = await sandboxes.pty_create(principal.org_id, sandbox_id, msg)
        return DaytonaPtyCreated(session_id=info.session_id)

    @get("/")
    async def list_sessions(
        self, sandbox_id: str, principal: Principal, sandboxes: SandboxService
    ) -> DaytonaPtyList:
        found = await sandboxes.pty_list(principal.org_id, sandbox_id)
        return DaytonaPtyList(sessions=[_daytona_info(info) for info in found])

    @get("/{session_id:str}")
    async def read(
        self, sandbox_id: str, session_id: str, principal: Principal, sandboxes: SandboxService
    ) -> DaytonaPtySessionInfo:
        return _daytona_info(await sandboxes.pty_get(principal.org_id, sandbox_id, session_id))

    @delete("/{session_id:str}", status_code=200)
    async def kill(
        self, sandbox_id: str, session_id: str, principal: Principal, sandboxes: SandboxService
    ) -> dict[str, str]:
        await sandboxes.pty_kill(principal.org_id, sandbox_id, session_id)
        return {"message": f"pty session {session_id!r} killed"}

    @post("/{session_id:str}/resize", status_code=200)
    async def resize(
        self,
        sandbox_id: str,
        session_id: str,
        data: DaytonaPtyResize,
        principal: Principal,
        sandboxes: SandboxService,
    ) -> DaytonaPtySessionInfo:
        info = await sandboxes.pty_resize(principal.org_id, sandbox_id, session_id, data.cols, data.rows)
        return _daytona_info(info)


# a plain GET on a WebSocket path --------------------------------------------------------------------

_SOCKETS = (native_terminal, daytona_create_connect, daytona_connect)


@get([path for handler in _SOCKETS for path in handler.paths], status_code=426, sync_to_thread=False)
def upgrade_required() -> Response[ErrorBody]:
    """A GET without the WebSocket upgrade on a terminal's path: ``426 Upgrade Required``
    (RFC 9110, with the ``Upgrade`` header it requires), not the router's 405, which would say
    the path takes no GET at all, though a terminal is opened with one. No key is needed to
    learn that a path is a WebSocket."""
    body = ErrorBody(status_code=426, message="a WebSocket: send the upgrade", code="upgrade_required")
    headers = {"upgrade": "websocket", "connection": "upgrade"}
    return Response(body, status_code=426, media_type=MediaType.JSON, headers=headers)


TERMINAL_ROUTES: list[ControllerRouterHandler] = [*_SOCKETS, upgrade_required, DaytonaPty]
"""Everything this module serves, for the app's route list."""


# shared machinery -----------------------------------------------------------------------------------


async def _open(
    socket: WebSocket, sandbox_id: str, opener: OpenerFactory
) -> tuple[str, HostTerminal, guest.PtyInfo] | None:
    """Authenticate, build the opener and attach; on any refusal answer the upgrade with the
    error's status and body, and return None."""
    bind_request_id(socket.headers.get(REQUEST_ID_HEADER))
    try:
        auth: AuthService = socket.app.state.auth
        principal = await auth.authenticate(
            socket.headers.get("authorization"), socket.headers.get(PAYER_HEADER)
        )
        try:
            attach = checked(opener())
        except msgspec.ValidationError as exc:
            raise BadRequest(f"invalid terminal request: {plain(str(exc))}") from None
        sandboxes: SandboxService = socket.app.state.sandboxes
        return await sandboxes.pty_attach(principal.org_id, sandbox_id, attach)
    except CoreError as exc:
        await _deny(socket, exc)
        return None


async def _deny(socket: WebSocket, exc: CoreError) -> None:
    """Refuse the upgrade with an HTTP answer; where the server cannot (no
    ``websocket.http.response`` extension), a close before accepting, which is a 403."""
    body = _json.encode(ErrorBody(status_code=exc.status_code, message=str(exc) or exc.code, code=exc.code))
    if "websocket.http.response" not in (socket.scope.get("extensions") or {}):
        await socket.close(1008)
        return
    await socket.receive()  # websocket.connect
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if exc.status_code == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await socket.send(
        {"type": "websocket.http.response.start", "status": exc.status_code, "headers": headers}
    )
    await socket.send({"type": "websocket.http.response.body", "body": body, "more_body": False})


def _size(query: Mapping[str, str]) -> tuple[int, int]:
    try:
        cols, rows = int(query.get("cols") or 80), int(query.get("rows") or 24)
    except ValueError:
        raise BadRequest("cols and rows must be integers") from None
    limit = guest.PTY_MAX_SIZE
    if not (1 <= cols <= limit and 1 <= rows <= limit):
        raise BadRequest(f"cols and rows must be 1 to {limit}")
    return cols, rows


async def _pump(
    socket: WebSocket, terminal: HostTerminal, sandbox_id: str, session_id: str, *, ready: bytes, resize: bool
) -> int | None:
    """Relay until the shell exits (its exit code), hostd ends the terminal, or the client
    leaves (None for both). The terminal is closed on return."""
    sandboxes: SandboxService = socket.app.state.sandboxes

    async def to_client() -> int | None:
        await socket.send_text(ready.decode())
        while True:
            out = await terminal.receive()
            if out is None:
                return None
            if isinstance(out, guest.PtyExited):
                return out.exit_code
            await socket.send_bytes(out)

    async def from_client() -> None:
        touched = time.monotonic()
        while True:
            try:
                message = await socket.receive()
            except WebSocketDisconnect:
                return
            if message["type"] != "websocket.receive":
                return
            data, text = message.get("bytes"), message.get("text")
            if text is not None and resize:
                with contextlib.suppress(msgspec.DecodeError):
                    size = _resize.decode(text)
                    await terminal.resize(session_id, size.cols, size.rows)
                    continue
            await terminal.send(data if data is not None else (text or "").encode())
            if time.monotonic() - touched >= ACTIVITY_GRANULARITY_S:
                touched = time.monotonic()
                await sandboxes.pty_activity(sandbox_id)

    output = asyncio.create_task(to_client())
    inputs = asyncio.create_task(from_client())
    try:
        await asyncio.wait({output, inputs}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        inputs.cancel()
        if not output.done():
            output.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await inputs
        await terminal.close()
    if output.cancelled() or output.exception() is not None:
        return None
    return output.result()


async def _finish(
    socket: WebSocket, last: bytes | None, exit_code: int | None, *, reason: str | None = None
) -> None:
    """Send the last text message and close: 1000 after an exit, 1011 when the terminal ended
    without one. A client that already left is not an error."""
    with contextlib.suppress(Exception):
        if last is not None:
            await socket.send_text(last.decode())
        if exit_code is not None:
            await socket.close(1000, reason)
        else:
            await socket.close(1011, "the terminal ended without an exit status")


def _log(socket: WebSocket, started: float, outcome: str, exit_code: int | None = None) -> None:
    duration_ms = round((time.perf_counter() - started) * 1000, 2)
    log.info(
        "websocket", path=socket.scope["path"], outcome=outcome, exit_code=exit_code, duration_ms=duration_ms
    )
