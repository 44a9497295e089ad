"""The HTTP reverse proxy into a sandbox: one ASGI request, one connection to the server.

Each request gets a connection of its own (``netns.connect``), closed when the answer ends:
nothing is pooled, so a sandbox that stops or restarts leaves no stale connection behind,
and one slow server never holds up another request. HTTP/1.1 towards the server is
httpcore's (h11 underneath, strict both ways) over the socket from the netns, the one seam
being ``SocketStream``.

Both directions stream: the request body is read from the ASGI server as httpcore writes it,
the answer is passed on chunk by chunk as it arrives (each ``send`` waits for the ASGI
server, so a slow client slows the read from the sandbox; nothing is held whole), and a
client that leaves ends the read at once, also while the server is silent (server-sent
events, long polls). The server's ``Content-Length`` is kept and its body checked against
it; a server that breaks off its answer breaks off ours (the connection is dropped, never
finished as if complete).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterable
from typing import Any

import httpcore
import msgspec
import structlog

from contracts.host import HostErrorBody
from guard.reply import Receive, Scope, Send
from hosts.ports import headers, netns
from hosts.runtime.base import PortEndpoint

log = structlog.get_logger("hosts.ports")

HOST_ERROR_HEADER = b"x-dnah-host-error"
"""On hostd's own error answers (its ``code``), so the core tells them from the same statuses
sent by the server in the sandbox, which it relays untouched."""


class SocketStream(httpcore.AsyncNetworkStream):
    """httpcore's view of a connected non-blocking socket (its errors as httpcore's)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._loop = asyncio.get_running_loop()

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109 (httpcore's)
        try:
            async with asyncio.timeout(timeout):
                return await self._loop.sock_recv(self._sock, max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ReadError(str(exc)) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109 (httpcore's)
        if not buffer:
            return
        try:
            async with asyncio.timeout(timeout):
                await self._loop.sock_sendall(self._sock, buffer)
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.WriteError(str(exc)) from exc

    async def aclose(self) -> None:
        self._sock.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's)
    ) -> httpcore.AsyncNetworkStream:
        raise NotImplementedError("servers in a sandbox are spoken to in plain HTTP")

    def get_extra_info(self, info: str) -> Any:
        return self._sock if info == "socket" else None


class UpstreamBroken(Exception):
    """The server broke off its answer after it had begun: the client's response is aborted."""


class _Body:
    """The ASGI request body as an async iterable, for httpcore to write as it reads."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.ended = False
        self.disconnected = False

    async def __aiter__(self) -> Any:
        while not self.ended:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.ended = self.disconnected = True
                return
            if chunk := message.get("body", b""):
                yield chunk
            self.ended = not message.get("more_body", False)


async def forward(
    scope: Scope, receive: Receive, send: Send, endpoint: PortEndpoint, port: int, rest: bytes
) -> None:
    """Answer the ASGI request ``scope`` with what the server on ``port`` answers to it;
    ``rest`` is the raw path after ``…/http``."""
    target = headers.target(rest, scope.get("query_string", b""))
    outgoing = headers.request_headers(scope["headers"], f"{endpoint.address}:{port}".encode())
    length, chunked = _framing(scope["headers"])
    body: _Body | None = None
    if chunked:
        outgoing.append((b"transfer-encoding", b"chunked"))
        body = _Body(receive)
    elif length is not None:
        outgoing.append((b"content-length", str(length).encode()))
        body = _Body(receive) if length else None
    try:
        sock = await netns.connect(endpoint, port)
    except OSError as exc:
        await send_error(send, 502, "port_closed", closed_message(port, exc))
        return
    origin = httpcore.Origin(b"http", endpoint.address.encode(), port)
    connection = httpcore.AsyncHTTP11Connection(origin, SocketStream(sock))
    request = httpcore.Request(
        scope["method"].encode(),
        httpcore.URL(scheme=b"http", host=endpoint.address.encode(), port=port, target=target),
        headers=outgoing,
        content=body,
    )
    try:
        try:
            response = await connection.handle_async_request(request)
        except httpcore.LocalProtocolError:
            return  # the client's body ended short of its length: the guard has answered it
        except (httpcore.NetworkError, httpcore.RemoteProtocolError, httpcore.TimeoutException) as exc:
            if body is None or not body.disconnected:
                await send_error(send, 502, "port_closed", closed_message(port, exc))
            return
        try:
            await _answer(response, receive, send)
        finally:
            await response.aclose()
    finally:
        await connection.aclose()


async def _answer(response: httpcore.Response, receive: Receive, send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": response.status,
            "headers": headers.response_headers(response.headers),
        }
    )
    relay = asyncio.ensure_future(_relay(response, send))
    left = asyncio.ensure_future(_client_left(receive))
    done: set[asyncio.Future[None]] = set()
    try:
        done, _ = await asyncio.wait({relay, left}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (relay, left):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if relay in done and left not in done:
        relay.result()  # the server's answer broke off: raised, so the client's is aborted


async def _relay(response: httpcore.Response, send: Send) -> None:
    stream = response.stream
    assert isinstance(stream, AsyncIterable)
    try:
        async for chunk in stream:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except (httpcore.NetworkError, httpcore.RemoteProtocolError) as exc:
        log.warning("the server broke off its answer", error=str(exc))
        raise UpstreamBroken(str(exc)) from None
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _client_left(receive: Receive) -> None:
    """Returns once the client has disconnected (body still arriving, if the server answered
    before reading all of it, is discarded)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _framing(raw: list[tuple[bytes, bytes]]) -> tuple[int | None, bool]:
    """(declared length, chunked) of the client's request, as the ASGI server parsed it; a
    ``Transfer-Encoding`` wins over a ``Content-Length`` (RFC 9112 §6.3)."""
    length: int | None = None
    chunked = False
    for name, value in raw:
        lower = name.lower()
        if lower == b"transfer-encoding":
            chunked = True
        elif lower == b"content-length" and value.strip().isdigit():
            length = int(value)
    return (None, True) if chunked else (length, False)


def closed_message(port: int, exc: BaseException) -> str:
    reason = type(exc).__name__ if not str(exc) else str(exc)
    if isinstance(exc, httpcore.RemoteProtocolError):
        return f"the server on port {port} in the sandbox gave no valid answer ({reason})"
    return f"nothing answered on port {port} in the sandbox ({reason})"


async def send_error(send: Send, status: int, code: str, message: str) -> None:
    body = msgspec.json.encode(HostErrorBody(code=code, message=message))
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (HOST_ERROR_HEADER, code.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})
