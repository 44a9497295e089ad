"""The native terminal: ``GET /v1/sandboxes/{id}/terminal?cols=&rows=&cwd=&session_id=``
(WebSocket). Without ``session_id`` it opens a new terminal that lives as long as this socket
(killed, with every process it started, when the socket goes away); with one it attaches to an
existing session (made with Daytona's ``POST /process/pty``). Messages are described in
``contracts/public.py`` (``TerminalReady``, ``TerminalResize``, ``TerminalExit``): the server
sends ``ready`` as text, then the output as binary messages, and when the shell exits
``{"type":"exit","exit_code":N}`` as text and closes with 1000. The client's binary messages
are input; so are its text messages, except a ``{"type":"resize","cols":..,"rows":..}``.
The machinery is ``core/http/common/terminals.py``."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping

import msgspec
from litestar import WebSocket, websocket
from litestar.types import ControllerRouterHandler

from contracts.public import (
    TerminalExit,
    TerminalReady,
)
from core.http.common.terminals import attach, finish, log_socket, pump, size, upgrade_required
from core.services.toolbox.terminals import TerminalOpen

_json = msgspec.json.Encoder()


@websocket("/v1/sandboxes/{sandbox_id:str}/terminal")
async def native_terminal(sandbox_id: str, socket: WebSocket) -> None:
    started = time.perf_counter()
    opened = await attach(socket, sandbox_id, lambda: _native_opener(socket.query_params))
    if opened is None:
        log_socket(socket, started, "refused")
        return
    real_id, terminal, info = opened
    await socket.accept()
    ready = TerminalReady(session_id=info.session_id, cols=info.cols, rows=info.rows)
    exit_code = await pump(socket, terminal, real_id, info.session_id, ready=_json.encode(ready), resize=True)
    await finish(
        socket, None if exit_code is None else _json.encode(TerminalExit(exit_code=exit_code)), exit_code
    )
    log_socket(socket, started, "closed", exit_code)


def _native_opener(query: Mapping[str, str]) -> TerminalOpen:
    session_id = query.get("session_id")
    if session_id:
        return TerminalOpen(session_id=session_id)
    cols, rows = size(query)
    return TerminalOpen(
        session_id=str(uuid.uuid4()), create=True, cols=cols, rows=rows, cwd=query.get("cwd") or None
    )


TERMINAL_ROUTES: list[ControllerRouterHandler] = [native_terminal, upgrade_required(native_terminal)]
"""The socket and its plain-GET answer."""
