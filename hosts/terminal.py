"""hostd's terminal route: a WebSocket bridged to a ``pty.attach`` stream of the sandbox's agent.

``WS /sandboxes/{id}/pty`` (see ``contracts/host.py``). The core sends the ``guest.PtyAttach``
opener as the first text message; hostd opens the stream (``OpenStream``) and answers with the
agent's first reply as a text message (``pty.attached``, or the agent's ``error``). From then
on it is a byte pipe: binary messages from the core are the terminal's input, text messages
are ``guest.PtyResize`` frames, and the terminal's output comes back in binary messages. When
the shell exits the agent's ``pty.exited`` is forwarded as a text message and the socket is
closed with 1000. When hostd itself cannot open the stream (no such sandbox, not running, the
agent unreachable), it closes with ``4000 + the HTTP status`` it would have answered (4404,
4409, 4502) and the error message as the reason; a malformed opener closes with 4400.

Either side leaving ends both: the core's socket closing closes the agent stream, which
detaches the client (and the agent kills an ephemeral session whose last client left), and
the agent's stream ending closes the socket. Nothing is buffered beyond one message: each
direction awaits the other side's writer, so a slow reader slows the writer.
"""

from __future__ import annotations

import asyncio
import contextlib

import msgspec
from litestar import WebSocket, websocket

from contracts import guest
from hosts.agent_socket import bridge
from hosts.agent_stream import AgentStream
from hosts.errors import AgentUnavailable

_resize = msgspec.json.Decoder(guest.PtyResize)


@websocket("/sandboxes/{sandbox_id:str}/pty")
async def pty_socket(sandbox_id: str, socket: WebSocket) -> None:
    """Bridge one terminal client (the core) to the sandbox's agent."""
    await bridge(socket, sandbox_id, openers=(guest.PtyAttach,), opened=guest.PtyAttached, relay=_relay)


async def _relay(socket: WebSocket, stream: AgentStream) -> None:
    """Pump both directions until one of them ends."""
    to_core = asyncio.create_task(_agent_to_core(socket, stream))
    to_agent = asyncio.create_task(_core_to_agent(socket, stream))
    try:
        await asyncio.wait({to_core, to_agent}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (to_core, to_agent):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def _agent_to_core(socket: WebSocket, stream: AgentStream) -> None:
    while True:
        try:
            frame = await stream.read()
        except AgentUnavailable:
            return
        if isinstance(frame, bytes):
            if not frame:
                return
            await socket.send_bytes(frame)
        elif isinstance(frame, guest.PtyExited):
            await socket.send_text(msgspec.json.encode(frame).decode())
            return


async def _core_to_agent(socket: WebSocket, stream: AgentStream) -> None:
    while True:
        message = await socket.receive()
        if message["type"] != "websocket.receive":
            return
        data, text = message.get("bytes"), message.get("text")
        if data is not None:
            if data:
                await stream.send(data)
        elif text is not None:
            try:
                resize = _resize.decode(text)
            except msgspec.DecodeError:
                continue
            await stream.send_message(resize)
