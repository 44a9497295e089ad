"""The SSH gateway's WebSocket relays to hostd: terminals, processes and port tunnels.

``WS /internal/ssh/sandboxes/{id}/pty``, ``…/proc`` and ``…/ports/{port}/tunnel`` (see
``contracts/ssh.py``). The upgrade must carry ``Authorization: Bearer
<DNAH_SSH_GATEWAY_TOKEN>`` (else it is refused with 403 before anything is looked up). The
core then checks the sandbox (by id: the SSH gateway already authenticated the user for it)
is started and has a host, counts the stream as activity, opens hostd's route of the same
name with the host's token and from then on is a pipe: every message is passed on as it is,
text as text and binary as binary, in both directions, and either side's close closes the
other with the same code and reason. A sandbox the core cannot relay to closes with ``4000
+ status`` (4404, 4409, 4502) and the reason, as hostd's own refusals do.

Nothing is buffered beyond one message in each direction: each pump awaits the other side's
send, so a slow SSH client slows the process in the sandbox and not the core's memory.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from core.errors import CoreError
from core.host_stream import connect_host
from core.services.ssh import SshService

log = structlog.get_logger()

CLOSE_REASON_MAX = 120


@websocket("/internal/ssh/sandboxes/{sandbox_id:str}/pty")
async def ssh_pty(sandbox_id: str, socket: WebSocket) -> None:
    await _relay(socket, sandbox_id, "pty")


@websocket("/internal/ssh/sandboxes/{sandbox_id:str}/proc")
async def ssh_proc(sandbox_id: str, socket: WebSocket) -> None:
    await _relay(socket, sandbox_id, "proc")


@websocket("/internal/ssh/sandboxes/{sandbox_id:str}/ports/{port:int}/tunnel")
async def ssh_tunnel(sandbox_id: str, port: int, socket: WebSocket) -> None:
    await _relay(socket, sandbox_id, f"ports/{port}/tunnel")


SSH_RELAYS = [ssh_pty, ssh_proc, ssh_tunnel]


async def _relay(socket: WebSocket, sandbox_id: str, route: str) -> None:
    service: SshService = socket.app.state.ssh
    value = socket.headers.get("authorization", "")
    bearer = value[7:].strip() if value.lower().startswith("bearer ") else None
    if not service.gateway_allowed(bearer):
        await socket.close(4403, "this route is the SSH gateway's")  # before accepting: a 403
        return
    await socket.accept()
    try:
        rec, host = await service.relay_target(sandbox_id)
    except CoreError as exc:
        await socket.close(4000 + exc.status_code, str(exc)[:CLOSE_REASON_MAX])
        return
    try:
        upstream = await connect_host(host, rec.id, route)
    except (OSError, TimeoutError, InvalidHandshake, InvalidStatus) as exc:
        await socket.close(4502, f"host {host.name} did not answer: {type(exc).__name__}"[:CLOSE_REASON_MAX])
        return
    log.info("ssh relay", sandbox_id=rec.id, route=route)
    to_host = asyncio.create_task(_gateway_to_host(socket, upstream))
    to_gateway = asyncio.create_task(_host_to_gateway(socket, upstream))
    try:
        done, _ = await asyncio.wait({to_host, to_gateway}, return_when=asyncio.FIRST_COMPLETED)
        if to_host in done and to_host.exception() is None and not to_host.result():
            # hostd closed while the gateway was still sending: what hostd sent before its
            # close (a process's last output, its exit) is still to be delivered
            await to_gateway
    finally:
        for task in (to_host, to_gateway):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await upstream.close()
        code = upstream.close_code or 1000
        reason = upstream.close_reason or ""
        with contextlib.suppress(Exception):
            await socket.close(code if code in (1000, 1001) or 4000 <= code < 5000 else 1011, reason)


async def _gateway_to_host(socket: WebSocket, upstream: ClientConnection) -> bool:
    """Pass the gateway's messages on; True when the gateway left, False when hostd did."""
    while True:
        try:
            message = await socket.receive()
        except WebSocketDisconnect:
            return True
        if message["type"] != "websocket.receive":
            return True
        data, text = message.get("bytes"), message.get("text")
        try:
            await upstream.send(data if data is not None else (text or ""))
        except ConnectionClosed:
            return False


async def _host_to_gateway(socket: WebSocket, upstream: ClientConnection) -> None:
    while True:
        try:
            message = await upstream.recv()
        except ConnectionClosed:
            return
        if isinstance(message, bytes):
            await socket.send_bytes(message)
        else:
            await socket.send_text(message)
