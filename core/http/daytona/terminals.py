"""Daytona's PTY routes (its toolbox API, ``/toolbox/{id}/process/pty…``; seed 004's
``/sandbox/{id}/toolbox/…`` is mapped by the gateway): REST create (201 ``{sessionId}``), list,
get, kill (DELETE), resize, and two WebSockets. ``create-connect?id=&cols=&rows=&cwd=`` makes a
session that lives as long as its clients (the native rule) and attaches; ``{sessionId}/connect``
attaches to an existing one. The client offers the ``X-Daytona-Pty-Exit-Control`` subprotocol,
which is selected, and may offer ``X-Daytona-Pty-Envs~<base64url JSON object>`` to pass
environment variables (never selected). The server sends ``{"type":"control","status":"connected"}``
as text, then output as binary messages; at the shell's exit
``{"type":"control","status":"exited","exitCode":N}`` (with exit control) and a close with 1000
and the reason ``{"exitCode":N}``. Input is binary (or text) messages; resizing goes through the
REST route. The machinery is ``core/http/common/terminals.py``."""

from __future__ import annotations

import base64
import binascii
import time

import msgspec
from litestar import WebSocket, delete, get, post, websocket
from litestar.di import Provide
from litestar.types import ControllerRouterHandler

from contracts import guest
from contracts.public import (
    DaytonaPtyCreate,
    DaytonaPtyCreated,
    DaytonaPtyList,
    DaytonaPtyResize,
    DaytonaPtySessionInfo,
)
from core.errors import BadRequest
from core.http.common.deps import provide_terminals
from core.http.common.inputs import DaytonaController
from core.http.common.terminals import OpenerFactory, attach, finish, log_socket, pump, size, upgrade_required
from core.http.daytona.auth import provide_principal
from core.services.auth import Principal
from core.services.toolbox.terminals import TerminalOpen, TerminalService

EXIT_CONTROL = "X-Daytona-Pty-Exit-Control"
ENVS_PREFIX = "X-Daytona-Pty-Envs~"
CONNECTED = b'{"type":"control","status":"connected"}'
_envs = msgspec.json.Decoder(dict[str, str])
_json = msgspec.json.Encoder()


@websocket("/toolbox/{sandbox_id:str}/process/pty/create-connect")
async def daytona_create_connect(sandbox_id: str, socket: WebSocket) -> None:
    started = time.perf_counter()

    def opener() -> TerminalOpen:
        query = socket.query_params
        session_id = query.get("id")
        if not session_id:
            raise BadRequest("the 'id' query parameter names the new pty session")
        cols, rows = size(query)
        return TerminalOpen(
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
    await _daytona(socket, sandbox_id, lambda: TerminalOpen(session_id=session_id), started)


async def _daytona(socket: WebSocket, sandbox_id: str, opener: OpenerFactory, started: float) -> None:
    opened = await attach(socket, sandbox_id, opener)
    if opened is None:
        log_socket(socket, started, "refused")
        return
    real_id, terminal, info = opened
    exit_control = EXIT_CONTROL in _offered(socket)
    await socket.accept(subprotocols=EXIT_CONTROL if exit_control else None)
    exit_code = await pump(socket, terminal, real_id, info.session_id, ready=CONNECTED, resize=False)
    last = None
    if exit_code is not None and exit_control:
        last = _json.encode({"type": "control", "status": "exited", "exitCode": exit_code})
    await finish(socket, last, exit_code, reason=None if exit_code is None else f'{{"exitCode":{exit_code}}}')
    log_socket(socket, started, "closed", exit_code)


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
        "terminals": Provide(provide_terminals, sync_to_thread=False),
    }

    @post("/", status_code=201)
    async def create(
        self,
        sandbox_id: str,
        principal: Principal,
        terminals: TerminalService,
        data: DaytonaPtyCreate | None = None,
    ) -> DaytonaPtyCreated:
        """A session that lives until it is killed or its shell exits (not tied to clients)."""
        data = data or DaytonaPtyCreate()  # no body: all defaults
        info = await terminals.create(
            principal.org_id,
            sandbox_id,
            session_id=data.id,
            cols=data.cols if data.cols is not None else 80,
            rows=data.rows if data.rows is not None else 24,
            cwd=data.cwd,
            env=data.envs or {},
            lazy_start=bool(data.lazy_start),
        )
        return DaytonaPtyCreated(session_id=info.session_id)

    @get("/")
    async def list_sessions(
        self, sandbox_id: str, principal: Principal, terminals: TerminalService
    ) -> DaytonaPtyList:
        found = await terminals.list(principal.org_id, sandbox_id)
        return DaytonaPtyList(sessions=[_daytona_info(info) for info in found])

    @get("/{session_id:str}")
    async def read(
        self, sandbox_id: str, session_id: str, principal: Principal, terminals: TerminalService
    ) -> DaytonaPtySessionInfo:
        return _daytona_info(await terminals.get(principal.org_id, sandbox_id, session_id))

    @delete("/{session_id:str}", status_code=200)
    async def kill(
        self, sandbox_id: str, session_id: str, principal: Principal, terminals: TerminalService
    ) -> dict[str, str]:
        await terminals.kill(principal.org_id, sandbox_id, session_id)
        return {"message": f"pty session {session_id!r} killed"}

    @post("/{session_id:str}/resize", status_code=200)
    async def resize(
        self,
        sandbox_id: str,
        session_id: str,
        data: DaytonaPtyResize,
        principal: Principal,
        terminals: TerminalService,
    ) -> DaytonaPtySessionInfo:
        info = await terminals.resize(principal.org_id, sandbox_id, session_id, data.cols, data.rows)
        return _daytona_info(info)


_SOCKETS = (daytona_create_connect, daytona_connect)
TERMINAL_ROUTES: list[ControllerRouterHandler] = [*_SOCKETS, upgrade_required(*_SOCKETS), DaytonaPty]
"""The sockets, their plain-GET answer and the REST routes."""
