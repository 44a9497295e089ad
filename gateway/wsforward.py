"""Forward a client's WebSocket (a terminal) to the core, message by message.

The upgrade is checked and rewritten exactly like an HTTP request (``forward.prepare``: the
request id, ``x-forwarded-*``, hop-by-hop headers dropped, seed 004's
``/sandbox/{id}/toolbox/…`` mapped, ``.``/``..`` segments and ``/internal`` refused), then
opened to the core with the ``websockets`` client, offering the subprotocols the client
offered. Only once the core has accepted is the client accepted, with the subprotocol the core
selected; a core that refuses (401, 404, 409…) has its status, headers and body relayed to the
client as the answer to the upgrade (ASGI's ``websocket.http.response``), so a client sees the
same refusal through the gateway as from the core.

Then messages flow both ways unchanged, text as text and binary as binary, each direction
awaiting the other side's writer, and the first side to close closes the other with the same
code and reason (a vanished side becomes 1011 for the other).

Payments. A WebSocket cannot be paid per call: the 402 challenge binds one request and its
answer, not a stream that lasts an hour. In the payment modes the price table still decides
(``PaymentGate.refuse_websocket``): a route marked ``payable = false`` (the terminals, in the
default table) needs an API key, and a priced one is refused, saying why.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import msgspec
import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from contracts.public import ErrorBody
from gateway.forward import (
    MAX_CONNECT_TIMEOUT_S,
    Gate,
    Headers,
    Receive,
    Scope,
    Send,
    has_dot_segment,
    is_internal,
    log_request,
    prepare,
)

log = structlog.get_logger()

_NOT_FORWARDED = frozenset({b"user-agent", b"sec-websocket-protocol"})
"""Set by the ``websockets`` client itself (subprotocols go through its own parameter); the
other handshake headers (``sec-websocket-key``…) are dropped by prefix."""
_NOT_RELAYED_BACK = frozenset(
    {b"connection", b"upgrade", b"content-length", b"transfer-encoding", b"keep-alive", b"x-request-id"}
)
_UNSENDABLE = {1005: 1000, 1006: 1011, 1015: 1011}
"""Close codes that describe a close but may not be sent in one."""
_ERROR = msgspec.json.Encoder()


async def forward_websocket(
    scope: Scope, receive: Receive, send: Send, core_url: str, gate: Gate | None
) -> None:
    """Serve one WebSocket scope: refuse it, or bridge it to the core until either side closes."""
    started = time.perf_counter()
    http_scope = {**scope, "method": "GET", "scheme": "https" if scope.get("scheme") == "wss" else "http"}
    upstream = prepare(http_scope, core_url)
    path = upstream.raw_path.decode("latin-1")
    if (await receive())["type"] != "websocket.connect":
        return
    refusal: tuple[int, str, str] | None = None
    if has_dot_segment(upstream.raw_path):
        refusal = (400, "invalid_path", "path has . or .. segments")
    elif is_internal(upstream.raw_path):
        refusal = (404, "not_found", "Not Found")
    elif gate is not None:
        refusal = gate.refuse_websocket(upstream)
    if refusal is not None:
        await _deny(scope, send, *refusal, upstream.request_id)
        log_request("WS", path, refusal[0], started, refusal[1])
        return

    headers = [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in upstream.headers
        if name not in _NOT_FORWARDED and not name.startswith(b"sec-websocket-")
    ]
    offered = scope.get("subprotocols") or None
    url = "ws" + upstream.url.removeprefix("http")
    try:
        core = await connect(
            url,
            additional_headers=headers,
            subprotocols=offered,
            user_agent_header=None,
            compression=None,
            proxy=None,
            open_timeout=MAX_CONNECT_TIMEOUT_S,
            ping_interval=None,
            max_size=None,
        )
    except InvalidStatus as exc:
        response = exc.response
        relayed = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in response.headers.raw_items()
            if name.lower().encode("latin-1") not in _NOT_RELAYED_BACK
        ]
        await _answer(
            scope, send, response.status_code, relayed, bytes(response.body or b""), upstream.request_id
        )
        log_request("WS", path, response.status_code, started)
        return
    except (OSError, TimeoutError, InvalidHandshake):
        await _deny(scope, send, 502, "upstream_unavailable", "the core is unreachable", upstream.request_id)
        log_request("WS", path, 502, started, "upstream_unavailable")
        return

    await send(
        {
            "type": "websocket.accept",
            "subprotocol": core.subprotocol,
            "headers": [(b"x-request-id", upstream.request_id.encode())],
        }
    )
    await _bridge(receive, send, core)
    log_request("WS", path, 101, started)


async def _bridge(receive: Receive, send: Send, core: ClientConnection) -> None:
    """Pump both ways; when the core closes, stop reading the client, then close it with the
    core's code (Granian drops a close sent while a ``receive`` is still pending)."""
    to_client = asyncio.create_task(_core_to_client(send, core))
    to_core = asyncio.create_task(_client_to_core(receive, core))
    try:
        await asyncio.wait({to_client, to_core}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (to_core, to_client):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await core.close()
    if to_client.done() and not to_client.cancelled() and to_client.exception() is None:
        code = core.close_code if core.close_code is not None else 1006
        with contextlib.suppress(Exception):
            await send(
                {
                    "type": "websocket.close",
                    "code": _UNSENDABLE.get(code, code),
                    "reason": core.close_reason or "",
                }
            )


async def _core_to_client(send: Send, core: ClientConnection) -> None:
    try:
        async for message in core:
            if isinstance(message, bytes):
                await send({"type": "websocket.send", "bytes": message})
            else:
                await send({"type": "websocket.send", "text": message})
    except ConnectionClosed:
        pass


async def _client_to_core(receive: Receive, core: ClientConnection) -> None:
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            code: int = message.get("code") or 1000
            with contextlib.suppress(Exception):
                await core.close(_UNSENDABLE.get(code, code), message.get("reason") or "")
            return
        data = message.get("bytes")
        try:
            await core.send(data if data is not None else message.get("text") or "")
        except ConnectionClosed:
            return


async def _deny(scope: Scope, send: Send, status: int, code: str, message: str, request_id: str) -> None:
    body = _ERROR.encode(ErrorBody(status_code=status, message=message, code=code))
    await _answer(scope, send, status, [(b"content-type", b"application/json")], body, request_id)


async def _answer(
    scope: Scope, send: Send, status: int, headers: Headers, body: bytes, request_id: str
) -> None:
    """Answer the upgrade with an HTTP response (or, where the server cannot, a close before
    accepting: an HTTP 403)."""
    if "websocket.http.response" not in (scope.get("extensions") or {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    headers = [*headers, (b"content-length", str(len(body)).encode()), (b"x-request-id", request_id.encode())]
    await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body, "more_body": False})
