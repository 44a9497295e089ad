"""The core's client for hostd's port routes (``contracts/host.py`` seam, docs/network.md): a
request or a WebSocket to a port inside a sandbox, which hostd connects to in the sandbox's
network namespace.

    ANY /sandboxes/{id}/ports/{port}/http/{rest}   streamed both ways
    WS  /sandboxes/{id}/ports/{port}/http/{rest}   messages both ways

hostd's own refusals on these routes (unknown sandbox, not running, nothing listening) carry
``x-dnah-host-error: <code>``; any other answer is the server's in the sandbox, relayed as it
is. Transport failures become ``HostUnavailable`` here, once.
"""

from __future__ import annotations

from collections.abc import AsyncIterable

import httpx
import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidStatus
from websockets.http11 import Response as WsResponse

from contracts.host import HostErrorBody
from core.db.hosts import HostRecord
from core.errors import CoreError, HostUnavailable, NotFound, NotRunning, PortClosed

HOST_ERROR_HEADER = "x-dnah-host-error"
CONNECT_TIMEOUT_S = 5.0
OPEN_TIMEOUT_S = 10.0


def host_error(status: int, code: str, body: bytes) -> CoreError:
    """The core's error for hostd's own refusal (``x-dnah-host-error``) on a port route."""
    try:
        message = msgspec.json.decode(body, type=HostErrorBody).message
    except msgspec.DecodeError:
        message = f"the host refused with HTTP {status}"
    if code == "port_closed":
        return PortClosed(message)
    if status == 404:
        return NotFound(message)
    if status == 409:
        return NotRunning(message)
    return HostUnavailable(message, answered=status < 500)


def _path(host: HostRecord, sandbox_id: str, port: int, rest: str) -> str:
    return f"{host.api_url}/sandboxes/{sandbox_id}/ports/{port}/http/{rest.lstrip('/')}"


class PortClient:
    """One keep-alive pool for every preview request. No read timeout: a server may stream an
    answer (server-sent events) for as long as its client listens; the client's going away
    ends the exchange (``core/http/preview.py``)."""

    def __init__(self) -> None:
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(None, connect=CONNECT_TIMEOUT_S, pool=CONNECT_TIMEOUT_S),
            limits=httpx.Limits(max_keepalive_connections=64, max_connections=1024),
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def send(
        self,
        host: HostRecord,
        sandbox_id: str,
        port: int,
        *,
        method: str,
        rest: str,
        query: bytes,
        headers: list[tuple[bytes, bytes]],
        content: bytes | AsyncIterable[bytes] | None,
    ) -> httpx.Response:
        """Send the request; the answer's body is not read yet (``aiter_raw``, then ``aclose``)."""
        url = httpx.URL(_path(host, sandbox_id, port, rest), query=query)
        request = self._http.build_request(
            method,
            url,
            headers=[*headers, (b"authorization", f"Bearer {host.api_token}".encode())],
            content=content,
        )
        try:
            return await self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise HostUnavailable(f"host {host.name} did not answer: {type(exc).__name__}") from exc

    async def open_websocket(
        self,
        host: HostRecord,
        sandbox_id: str,
        port: int,
        *,
        rest: str,
        query: bytes,
        headers: list[tuple[str, str]],
        subprotocols: list[str] | None,
    ) -> ClientConnection | WsResponse:
        """The WebSocket to the server, or hostd's (or the server's) answer refusing it."""
        url = (
            _path(host, sandbox_id, port, rest)
            .replace("http://", "ws://", 1)
            .replace("https://", "wss://", 1)
        )
        if query:
            url += "?" + query.decode("latin-1")
        try:
            return await connect(
                url,
                additional_headers=[*headers, ("authorization", f"Bearer {host.api_token}")],
                subprotocols=subprotocols,  # type: ignore[arg-type]
                user_agent_header=None,
                compression=None,
                proxy=None,
                open_timeout=OPEN_TIMEOUT_S,
                ping_interval=None,
                max_size=None,
            )
        except InvalidStatus as exc:
            return exc.response
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise HostUnavailable(f"host {host.name} did not answer: {type(exc).__name__}") from exc
