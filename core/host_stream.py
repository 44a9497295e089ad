"""Opening one of hostd's agent-stream WebSockets (``/sandboxes/{id}/pty`` and ``…/proc``):
connect with the host's token and the request id of the call being served, send the opener,
read the agent's first reply. The one place where the ``websockets`` library's errors and
hostd's refusals (its ``4000 + status`` close codes) become the core's errors for both."""

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

replies = msgspec.json.Decoder(guest.StreamReply)
"""Decodes the agent's JSON frames on a stream."""
_HOST_CLOSE: dict[int, type[CoreError]] = {4400: BadRequest, 4404: NotFound, 4409: Conflict}


async def open_stream(
    host: HostRecord, sandbox_id: str, route: str, opener: msgspec.Struct, what: str
) -> tuple[ClientConnection, guest.StreamReply]:
    """Open ``/sandboxes/{sandbox_id}/{route}``, send ``opener`` and return the socket with the
    agent's first reply; ``what`` names the stream in errors. On an error the socket is closed."""
    try:
        ws = await connect_host(host, sandbox_id, route)
    except InvalidStatus as exc:
        raise HostUnavailable(
            f"host {host.name} refused the {what}: HTTP {exc.response.status_code}"
        ) from exc
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        raise HostUnavailable(f"host {host.name} did not answer: {type(exc).__name__}") from exc
    try:
        await ws.send(msgspec.json.encode(opener).decode())
        first = await ws.recv()
    except ConnectionClosed as exc:
        await _close(ws)
        code = exc.rcvd.code if exc.rcvd is not None else 1006
        reason = exc.rcvd.reason if exc.rcvd is not None else "closed"
        error = _HOST_CLOSE.get(code, HostUnavailable)
        if error is NotFound:
            raise NotFound(f"sandbox is not on host {host.name} ({reason})") from None
        raise error(f"host {host.name}: {reason}") from None
    try:
        return ws, replies.decode(first)
    except msgspec.DecodeError:
        await _close(ws)
        raise HostUnavailable(f"host {host.name} answered the {what} with {first!r:.80}") from None


async def connect_host(host: HostRecord, sandbox_id: str, route: str) -> ClientConnection:
    """The WebSocket to hostd's ``/sandboxes/{sandbox_id}/{route}`` with the host's token and
    the request id of the call being served (also the SSH relay's). Raises what ``websockets``
    raises: ``InvalidStatus`` for a refused upgrade, ``OSError``/``TimeoutError``/
    ``InvalidHandshake`` when hostd did not answer."""
    url = host.api_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    headers = {"authorization": f"Bearer {host.api_token}"}
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    if request_id:
        headers[REQUEST_ID_HEADER] = request_id
    return await connect(
        f"{url}/sandboxes/{sandbox_id}/{route}",
        additional_headers=headers,
        open_timeout=OPEN_TIMEOUT_S,
        compression=None,
        proxy=None,
        ping_interval=None,
        max_size=2 * guest.MAX_BINARY_FRAME,
    )


async def _close(ws: ClientConnection) -> None:
    with contextlib.suppress(Exception):
        await ws.close()
