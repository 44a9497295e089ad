"""The WebSocket routes into a sandbox: a WebSocket proxied to the server's, and a raw tunnel.

``WS …/ports/{port}/http/{rest}``: hostd opens a WebSocket to the server in the sandbox
(``websockets`` as the client, over the socket from the netns) with the client's
subprotocols and end-to-end headers, accepts the core's socket with the subprotocol the
server chose, and relays messages as they are (text stays text, binary stays binary). A
close on either side closes the other with the same code and reason (codes that may not be
sent, 1005/1006/1015, become 1000 for a clean end and 1011 for a broken one).

``WS …/ports/{port}/tunnel``: a TCP byte pipe. Binary messages from the core are written to
the connection, what the server sends comes back in binary messages (at most 64 KiB each);
either end closing closes the other. A text message is refused (close 1003).

When the sandbox side cannot be reached, the socket is accepted and closed at once with
``4000 + the HTTP status`` the HTTP route would answer (4400, 4404, 4409, 4502) and the
message as its reason, as hostd's terminal route does. Each direction waits for the other
side's writer, so nothing is buffered beyond one message.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable

import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.frames import CloseCode
from websockets.typing import Subprotocol

from guard.reply import Message, Receive, Scope, Send
from hosts.ports import headers, netns
from hosts.ports.http import closed_message
from hosts.runtime.base import PortEndpoint

log = structlog.get_logger("hosts.ports")

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""The largest message taken from the server (larger ones close its socket with 1009)."""
READ_BYTES = 64 * 1024
CLOSE_REASON_MAX = 120
"""A close frame's reason is at most 123 bytes."""

_HANDSHAKE = frozenset(
    {
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"sec-websocket-accept",
        b"user-agent",
    }
)
_Close = tuple[int, str] | None
"""How to close the core's socket: (code, reason), or None when the core closed it."""
_UNSENDABLE = frozenset({1005, 1006, 1015})
_SENDABLE = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015), *range(3000, 5000)})


async def refuse(receive: Receive, send: Send, status: int, message: str) -> None:
    """Accept the socket and close it at once with ``4000 + status``."""
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": 4000 + status, "reason": message[:CLOSE_REASON_MAX]})


async def proxy(
    scope: Scope, receive: Receive, send: Send, endpoint: PortEndpoint, port: int, rest: bytes
) -> None:
    """Relay the core's WebSocket ``scope`` to the server's WebSocket at ``rest``."""
    default_host = f"{endpoint.address}:{port}".encode()
    outgoing = headers.request_headers(scope["headers"], default_host, drop=_HANDSHAKE)
    (_, host), extra = outgoing[0], outgoing[1:]
    user_agent = next((value for name, value in scope["headers"] if name.lower() == b"user-agent"), None)
    # websockets splits ";params" off the last segment (urlparse): escaped, they stay in the path.
    target = headers.target(rest, scope.get("query_string", b"")).replace(b";", b"%3B")
    try:
        sock = await netns.connect(endpoint, port)
    except OSError as exc:
        await refuse(receive, send, 502, closed_message(port, exc))
        return
    try:
        upstream = await connect(
            f"ws://{host.decode('latin-1')}{target.decode('ascii')}",
            sock=sock,
            subprotocols=[Subprotocol(p) for p in scope.get("subprotocols", ())] or None,
            additional_headers=[(n.decode("latin-1"), v.decode("latin-1")) for n, v in extra],
            user_agent_header=user_agent.decode("latin-1") if user_agent is not None else None,
            compression=None,
            max_size=MAX_MESSAGE_BYTES,
            open_timeout=netns.CONNECT_TIMEOUT_S,
        )
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        sock.close()
        await refuse(receive, send, 502, f"the server on port {port} refused the WebSocket: {exc}")
        return
    try:
        if (await receive())["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})
        close = await _both(_server_to_core(upstream, send), _core_to_server(upstream, receive))
    finally:
        await upstream.close()
    await _close(send, close)


async def _server_to_core(upstream: ClientConnection, send: Send) -> _Close:
    try:
        async for message in upstream:
            if isinstance(message, str):
                await send({"type": "websocket.send", "text": message})
            else:
                await send({"type": "websocket.send", "bytes": message})
    except ConnectionClosed:
        pass
    code, reason = upstream.close_code or 1006, upstream.close_reason or ""
    return (code if code not in _UNSENDABLE else (1000 if code == 1005 else 1011)), reason


async def _core_to_server(upstream: ClientConnection, receive: Receive) -> _Close:
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            code = int(message.get("code") or 1000)
            reason = message.get("reason") or ""
            await upstream.close(code if code in _SENDABLE else CloseCode.NORMAL_CLOSURE, reason)
            return None
        if message["type"] != "websocket.receive":
            continue
        if message.get("bytes") is not None:
            await upstream.send(message["bytes"])
        elif message.get("text") is not None:
            await upstream.send(message["text"])


async def tunnel(receive: Receive, send: Send, endpoint: PortEndpoint, port: int) -> None:
    """Pipe the core's WebSocket to a TCP connection to ``port``."""
    try:
        sock = await netns.connect(endpoint, port)
    except OSError as exc:
        await refuse(receive, send, 502, closed_message(port, exc))
        return
    try:
        if (await receive())["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        close = await _both(_socket_to_core(sock, send), _core_to_socket(sock, receive))
    finally:
        sock.close()
    await _close(send, close)


async def _socket_to_core(sock: socket.socket, send: Send) -> _Close:
    loop = asyncio.get_running_loop()
    while True:
        try:
            data = await loop.sock_recv(sock, READ_BYTES)
        except OSError:
            data = b""
        if not data:
            return 1000, ""
        await send({"type": "websocket.send", "bytes": data})


async def _core_to_socket(sock: socket.socket, receive: Receive) -> _Close:
    loop = asyncio.get_running_loop()
    while True:
        message: Message = await receive()
        if message["type"] == "websocket.disconnect":
            return None
        if message["type"] != "websocket.receive":
            continue
        if message.get("bytes") is None:
            return 1003, "binary messages only"
        try:
            await loop.sock_sendall(sock, message["bytes"])
        except OSError:
            return 1000, ""


async def _both(first: Awaitable[_Close], second: Awaitable[_Close]) -> _Close:
    """Run both directions until one of them ends, stop the other, and return how the core's
    socket is to be closed (None: the core left). The close is sent only once both have
    stopped: under Granian, a close sent while the other direction's ``receive`` was still
    pending never reached the client."""
    tasks = [asyncio.ensure_future(first), asyncio.ensure_future(second)]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    for task in tasks:
        if task in done and not task.cancelled() and task.exception() is None:
            return task.result()
    return 1011, ""


async def _close(send: Send, close: _Close) -> None:
    if close is None:
        return
    code, reason = close
    with contextlib.suppress(Exception):  # the core may be gone already
        await send({"type": "websocket.close", "code": code, "reason": reason[:CLOSE_REASON_MAX]})
