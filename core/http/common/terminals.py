"""Terminals over WebSockets, what both shapes share: authenticating the upgrade, attaching
to the sandbox's terminal, relaying, closing (the shapes' sockets are
``core/http/native/terminals.py`` and ``core/http/daytona/terminals.py``).

Authentication is the HTTP routes': a bearer key (or the gateway's edge token and payer) in
the upgrade's ``Authorization`` header. Every refusal before the upgrade (401, 404, 409, 400…)
is an HTTP answer with the usual error body (ASGI's ``websocket.http.response``), so clients
see the same status as on the REST routes. A plain GET (no upgrade) on a terminal's path is a
``426 Upgrade Required``. Opening, typing and the REST routes count as activity (typing at most
one write a second)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping

import msgspec
import structlog
from litestar import MediaType, Response, WebSocket, get
from litestar.exceptions import WebSocketDisconnect
from litestar.handlers import HTTPRouteHandler, WebsocketRouteHandler

from contracts import guest
from contracts.control import PAYER_HEADER, REQUEST_ID_HEADER
from contracts.fields import checked
from contracts.observability import bind_request_id
from contracts.public import (
    ErrorBody,
    TerminalResize,
)
from core.errors import BadRequest, CoreError
from core.http.common.errors import plain
from core.services.auth import AuthService
from core.services.sandboxes import ACTIVITY_GRANULARITY_S
from core.services.toolbox.terminals import TerminalOpen, TerminalService
from core.terminal_client import HostTerminal

log = structlog.get_logger()
_resize = msgspec.json.Decoder(TerminalResize)
_json = msgspec.json.Encoder()
OpenerFactory = Callable[[], TerminalOpen]
"""Builds the opener from the upgrade request; may raise ``BadRequest``."""


def upgrade_required(*sockets: WebsocketRouteHandler) -> HTTPRouteHandler:
    """A GET route on ``sockets``' paths answering ``426 Upgrade Required``, for each shape's
    list of routes."""

    @get([path for handler in sockets for path in handler.paths], status_code=426, sync_to_thread=False)
    def upgrade_required() -> Response[ErrorBody]:
        """A GET without the WebSocket upgrade on a terminal's path: ``426 Upgrade Required``
        (RFC 9110, with the ``Upgrade`` header it requires), not the router's 405, which would
        say the path takes no GET at all, though a terminal is opened with one. No key is
        needed to learn that a path is a WebSocket."""
        body = ErrorBody(status_code=426, message="a WebSocket: send the upgrade", code="upgrade_required")
        headers = {"upgrade": "websocket", "connection": "upgrade"}
        return Response(body, status_code=426, media_type=MediaType.JSON, headers=headers)

    return upgrade_required


async def attach(
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
            request = checked(opener())
        except msgspec.ValidationError as exc:
            raise BadRequest(f"invalid terminal request: {plain(str(exc))}") from None
        terminals: TerminalService = socket.app.state.terminals
        return await terminals.attach(principal.org_id, sandbox_id, request)
    except CoreError as exc:
        await deny(socket, exc)
        return None


async def deny(socket: WebSocket, exc: CoreError) -> None:
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


def size(query: Mapping[str, str]) -> tuple[int, int]:
    try:
        cols, rows = int(query.get("cols") or 80), int(query.get("rows") or 24)
    except ValueError:
        raise BadRequest("cols and rows must be integers") from None
    limit = guest.PTY_MAX_SIZE
    if not (1 <= cols <= limit and 1 <= rows <= limit):
        raise BadRequest(f"cols and rows must be 1 to {limit}")
    return cols, rows


async def pump(
    socket: WebSocket, terminal: HostTerminal, sandbox_id: str, session_id: str, *, ready: bytes, resize: bool
) -> int | None:
    """Relay until the shell exits (its exit code), hostd ends the terminal, or the client
    leaves (None for both). The terminal is closed on return."""
    terminals: TerminalService = socket.app.state.terminals

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
                await terminals.activity(sandbox_id)

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


async def finish(
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


def log_socket(socket: WebSocket, started: float, outcome: str, exit_code: int | None = None) -> None:
    duration_ms = round((time.perf_counter() - started) * 1000, 2)
    log.info(
        "websocket", path=socket.scope["path"], outcome=outcome, exit_code=exit_code, duration_ms=duration_ms
    )
