"""The core's client for hostd's terminal route (``WS /sandboxes/{id}/pty``, see
``contracts/host.py``): one WebSocket per terminal client, never pooled, since a terminal
holds its connection for as long as someone types in it.

Like ``core/hostclient.py`` for HTTP, this is the one place where the ``websockets``
library's errors and hostd's refusals (its ``4000 + status`` close codes) become the core's
errors, and where the request id of the call being served travels on.
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


class HostTerminal:
    """An attached terminal: ``send`` input, ``resize``, ``receive`` output until the end."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws

    async def send(self, data: bytes) -> None:
        """Type ``data``; a terminal that has gone away swallows it (``receive`` says why)."""
        if data:
            with contextlib.suppress(ConnectionClosed):
                await self._ws.send(data)

    async def resize(self, session_id: str, cols: int, rows: int) -> None:
        message = guest.PtyResize(id=0, session_id=session_id, cols=cols, rows=rows)
        with contextlib.suppress(ConnectionClosed):
            await self._ws.send(msgspec.json.encode(message).decode())

    async def receive(self) -> bytes | guest.PtyExited | None:
        """The next piece of output, the shell's exit, or None when hostd closed the
        terminal without one (the sandbox stopped, the agent went away)."""
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
            if isinstance(reply, guest.PtyExited):
                return reply

    async def close(self) -> None:
        """Detach (hostd closes the agent stream; an ephemeral session is then killed)."""
        with contextlib.suppress(Exception):
            await self._ws.close()


async def open_terminal(
    host: HostRecord, sandbox_id: str, opener: guest.PtyAttach
) -> tuple[HostTerminal, guest.PtyAttached | guest.Error]:
    """Connect to hostd, send ``opener`` and return the terminal with the agent's first
    reply; on a ``guest.Error`` reply the terminal is already closed."""
    ws, reply = await open_stream(host, sandbox_id, "pty", opener, "terminal")
    terminal = HostTerminal(ws)
    if not isinstance(reply, guest.PtyAttached | guest.Error):
        await terminal.close()
        raise HostUnavailable(f"host {host.name} answered the terminal with {reply!r:.80}")
    if isinstance(reply, guest.Error):
        await terminal.close()
    return terminal, reply
