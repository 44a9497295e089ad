"""hostd's process route: a WebSocket bridged to a process stream of the sandbox's agent.

``WS /sandboxes/{id}/proc`` (see ``contracts/host.py``), the SSH gateway's way to run a
command, ``sftp-server`` or ``scp`` in a sandbox, and the E2B data plane's for processes of
the agent's registry (both through the core). It works as the terminal route does
(``hosts/terminal.py``): the first text message is the opener, ``guest.ProcSpawn``,
``guest.ProcStart`` or ``guest.ProcConnect``; hostd answers with the agent's first reply as
text (``proc.started`` or the agent's ``error``). Then binary messages from the core are the
process's stdin, an *empty* binary message closes its stdin, and the agent's output frames
come back as binary messages exactly as the agent tagged them (first byte ``PROC_STDOUT``,
``PROC_STDERR`` or ``PROC_PTY``; the tag alone ends that stream). ``proc.exited`` is
forwarded as text; the core then closes the socket, and hostd closes it with 1000 itself
only if the core has not within ``CLOSE_WAIT_S``. When
hostd cannot open the stream it closes with ``4000 + the HTTP status`` (4404, 4409, 4502) and
the error as the reason; a malformed opener closes with 4400.

Why the core closes. Until its close hostd keeps reading what the core sends (stdin sent as
the process ended, an empty message closing it). Closing first would leave that input
unread: the server's close (granian sends its close frame and drops the connection without
waiting for the answer) then resets the connection, the core's answering close frame fails,
and a client may drop the frames it read with the close (the ``websockets`` client does:
``proc.exited`` lost in about 1 run in 250 of ``true`` with its stdin's end on the way).

Either side leaving ends both. For ``proc.spawn`` the agent then kills the process's whole
session; a ``proc.start`` or ``proc.connect`` stream only detaches (the process stays in the
agent's registry, for ``proc.connect`` later). As for terminals, nothing is buffered beyond
one message in either direction.
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

CLOSE_WAIT_S = 5.0
"""Seconds hostd waits, after ``proc.exited``, for the core to close the socket."""


@websocket("/sandboxes/{sandbox_id:str}/proc")
async def proc_socket(sandbox_id: str, socket: WebSocket) -> None:
    """Bridge one process (for the core's SSH relay and E2B's process service) to the
    sandbox's agent."""
    await bridge(
        socket,
        sandbox_id,
        openers=(guest.ProcSpawn, guest.ProcStart, guest.ProcConnect),
        opened=guest.ProcStarted,
        relay=_relay,
    )


async def _relay(socket: WebSocket, stream: AgentStream) -> None:
    """Pump both directions until the process's end (or either side leaving); after the end,
    read the core's messages until it closes (see the module doc), for ``CLOSE_WAIT_S`` at most."""
    to_core = asyncio.create_task(_agent_to_core(socket, stream))
    to_agent = asyncio.create_task(_core_to_agent(socket, stream))
    try:  # the output's end (the process exited) or the core leaving ends the relay
        await asyncio.wait({to_core, to_agent}, return_when=asyncio.FIRST_COMPLETED)
        if to_core.done() and not to_core.cancelled() and to_core.exception() is None and to_core.result():
            await asyncio.wait({to_agent}, timeout=CLOSE_WAIT_S)
    finally:
        for task in (to_core, to_agent):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def _agent_to_core(socket: WebSocket, stream: AgentStream) -> bool:
    """The agent's frames to the core until the stream's end; True when that was ``proc.exited``
    (the core then closes)."""
    while True:
        try:
            frame = await stream.read()
        except AgentUnavailable:
            return False
        if isinstance(frame, bytes):
            await socket.send_bytes(frame)
        elif isinstance(frame, guest.ProcExited | guest.Error):
            await socket.send_text(msgspec.json.encode(frame).decode())
            return isinstance(frame, guest.ProcExited)


async def _core_to_agent(socket: WebSocket, stream: AgentStream) -> None:
    """stdin, until the core's socket ends (``ConnectionResetError``: the relay ends and the
    process is killed). An empty message closes stdin; the socket is still watched after
    that, so a client that leaves while the process runs still ends it. When the agent has
    already ended the stream (the process exited without reading everything), further input
    is dropped: the output side delivers what is left and ``proc.exited``."""
    stdin_open = True
    while True:
        message = await socket.receive()
        if message["type"] != "websocket.receive":
            raise ConnectionResetError("the core left")
        data = message.get("bytes")
        if data is None or not stdin_open:
            continue
        try:
            if data:
                await stream.send(data)
            else:
                await stream.end()
                stdin_open = False
        except AgentUnavailable:
            stdin_open = False
