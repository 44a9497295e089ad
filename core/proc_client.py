"""The core's client for hostd's process route (``WS /sandboxes/{id}/proc``, see
``contracts/host.py`` and ``hosts/proc.py``): one WebSocket per attached process, never pooled.

The opener is a ``guest.ProcStart`` (a new process of the agent's registry) or
``guest.ProcConnect`` (attach to one again). Closing the socket detaches: the process keeps
running in the sandbox. As ``core/terminal_client.py`` does for terminals, this is where the
``websockets`` library's errors and hostd's refusals (``4000 + status`` close codes) become
the core's errors and where the request id of the call being served travels on.
"""

from __future__ import annotations

import contextlib

import msgspec
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from contracts import guest
from core.db.hosts import HostRecord
from core.errors import HostUnavailable
from core.host_stream import open_stream, replies


class HostProcess:
    """An attached process: ``receive`` its output frames until ``guest.ProcExited``."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws

    async def receive(self) -> bytes | guest.ProcExited | guest.Error | None:
        """The next output frame (its first byte names the stream: ``guest.PROC_STDOUT``,
        ``PROC_STDERR``, ``PROC_PTY``), the exit, the agent's error, or None when hostd closed
        without either (the sandbox stopped, the agent went away)."""
        while True:
            try:
                message = await self._ws.recv()
            except ConnectionClosed:
                return None
            if isinstance(message, bytes):
                return message
            try:
                reply = replies.decode(message)
            except msgspec.DecodeError:
                continue
            if isinstance(reply, guest.ProcExited | guest.Error):
                return reply

    async def close(self) -> None:
        """Detach; the process runs on."""
        with contextlib.suppress(Exception):
            await self._ws.close()


async def open_process(
    host: HostRecord, sandbox_id: str, opener: guest.ProcStart | guest.ProcConnect
) -> tuple[HostProcess, guest.ProcStarted | guest.Error]:
    """Connect to hostd, send ``opener`` and return the process with the agent's first reply;
    on a ``guest.Error`` reply the connection is already closed."""
    ws, reply = await open_stream(host, sandbox_id, "proc", opener, "process")
    process = HostProcess(ws)
    if not isinstance(reply, guest.ProcStarted | guest.Error):
        await process.close()
        raise HostUnavailable(f"host {host.name} answered the process with {reply!r:.80}")
    if isinstance(reply, guest.Error):
        await process.close()
    return process, reply
