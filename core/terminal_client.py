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
import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from contracts import guest
from contracts.control import REQUEST_ID_HEADER
from core.db.hosts import HostRecord
from core.errors import BadRequest, Conflict, CoreError, HostUnavailable, NotFound

OPEN_TIMEOUT_S = 10.0
"""Seconds to reach hostd and get the agent's first reply."""

_first = msgspec.json.Decoder(guest.StreamReply)
_HOST_CLOSE: dict[int, type[CoreError]] = {4400: BadRequest, 4404: NotFound, 4409: Conflict}


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
                reply = _first.decode(message)
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
    url = host.api_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    headers = {"authorization": f"Bearer {host.api_token}"}
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    if request_id:
        headers[REQUEST_ID_HEADER] = request_id
    try:
        ws = await connect(
            f"{url}/sandboxes/{sandbox_id}/pty",
            additional_headers=headers,
            open_timeout=OPEN_TIMEOUT_S,
            compression=None,
            proxy=None,
            ping_interval=None,
            max_size=2 * guest.MAX_BINARY_FRAME,
        )
    except InvalidStatus as exc:
        raise HostUnavailable(
            f"host {host.name} refused the terminal: HTTP {exc.response.status_code}"
        ) from exc
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        raise HostUnavailable(f"host {host.name} did not answer: {type(exc).__name__}") from exc
    terminal = HostTerminal(ws)
    try:
        await ws.send(msgspec.json.encode(opener).decode())
        first = await ws.recv()
    except ConnectionClosed as exc:
        await terminal.close()
        code = exc.rcvd.code if exc.rcvd is not None else 1006
        reason = exc.rcvd.reason if exc.rcvd is not None else "closed"
        error = _HOST_CLOSE.get(code, HostUnavailable)
        if error is NotFound:
            raise NotFound(f"sandbox is not on host {host.name} ({reason})") from None
        raise error(f"host {host.name}: {reason}") from None
    try:
        reply = _first.decode(first)
    except msgspec.DecodeError:
        reply = None
    if not isinstance(reply, guest.PtyAttached | guest.Error):
        await terminal.close()
        raise HostUnavailable(f"host {host.name} answered the terminal with {first!r:.80}")
    if isinstance(reply, guest.Error):
        await terminal.close()
    return terminal, reply
