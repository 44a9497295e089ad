"""Opening a WebSocket route onto an agent stream: what hostd's terminal route
(``hosts/terminal.py``) and process route (``hosts/proc.py``) share.

The core's first text message is the stream's opener. A message that is not one of the
route's openers closes the socket with 4400; hostd's own refusal to open the stream (no such
sandbox, not running, the agent unreachable) with ``4000 + the HTTP status`` it would have
answered (4404, 4409, 4502) and the error as the reason. Otherwise the agent's first reply goes
to the core as a text message and, when it is the route's success reply, the route's relay
runs; then the stream is closed, and the socket with 1000.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

import msgspec
from litestar import WebSocket
from litestar.exceptions import WebSocketDisconnect

from contracts import guest
from hosts.agent_stream import AgentStream
from hosts.commands import OpenStream
from hosts.controller import HostController
from hosts.errors import HostError

CLOSE_REASON_MAX = 120
"""A close frame's reason is at most 123 bytes."""

Relay = Callable[[WebSocket, AgentStream], Awaitable[None]]


async def bridge(
    socket: WebSocket,
    sandbox_id: str,
    *,
    openers: tuple[type[msgspec.Struct], ...],
    opened: type[msgspec.Struct],
    relay: Relay,
) -> None:
    """Serve one route's socket: accept it, open the stream its opener (one of ``openers``)
    asks for, and run ``relay`` once the agent answered ``opened``."""
    await socket.accept()
    try:
        first_message = await socket.receive()
    except WebSocketDisconnect:
        return
    if first_message["type"] != "websocket.receive":
        return
    try:
        opener = guest.decode_opener((first_message.get("text") or "").encode())
    except msgspec.DecodeError:
        opener = None
    if not isinstance(opener, openers):
        names = [str(kind.__struct_config__.tag) for kind in openers]
        listed = " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
        await socket.close(4400, f"the first message must be a {listed} opener")
        return
    controller: HostController = socket.app.state.controller
    try:
        stream, first = await controller.handle(OpenStream(sandbox_id=sandbox_id, opener=opener))
    except HostError as exc:
        await socket.close(4000 + exc.status_code, (str(exc) or exc.code)[:CLOSE_REASON_MAX])
        return
    try:
        await socket.send_text(msgspec.json.encode(first).decode())
        if isinstance(first, opened):
            await relay(socket, stream)
    finally:
        await stream.close()
    with contextlib.suppress(Exception):  # the core may be gone already
        await socket.close(1000)
