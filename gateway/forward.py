"""Forward a client's request to the core and stream the core's answer back.

This is the gateway's hot path, written as a plain ASGI app that Litestar only routes to,
so no body is ever parsed or buffered: request chunks flow from Granian's ``receive`` to the
core through one shared keep-alive ``httpx.AsyncClient``, and response chunks flow back the
same way. A request holds at most a few chunks in memory, whatever the size of its body.

For each request, ``Forwarder.__call__``:

1. ``prepare`` (no I/O) maps the path, drops hop-by-hop headers and adds the request id and
   ``x-forwarded-*`` headers: the result is exactly what will be sent upstream. In the
   payment modes a ``Gate`` (``gateway.payments``) takes over from there: it decides
   whether the request may reach the core at all and calls ``Forwarder.forward`` itself,
   with the body it has read and a ``ResponseTap`` to see (and add to) the answer.
2. ``_exchange`` sends it upstream and relays the status, headers and body, or answers
   502/504 itself when the core is unreachable or silent.
3. ``_watch_client`` runs alongside: it feeds the rest of the request body to the exchange
   and cancels the exchange when the client disconnects, so an abandoned request does not
   keep a core connection busy.
4. One log line.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import quote, unquote_to_bytes

import httpcore
import httpx
import msgspec
import structlog

from contracts.control import (
    FORWARDED_HOST_HEADER,
    FORWARDED_PROTO_HEADER,
    HOP_BY_HOP_HEADERS,
    PAYER_HEADER,
    PAYMENT_ID_HEADER,
    REQUEST_ID_HEADER,
)
from contracts.observability import bind_request_id
from contracts.public import ErrorBody

if TYPE_CHECKING:
    import ssl
    from http.client import HTTPResponse
    from urllib.request import Request

Message = MutableMapping[str, Any]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

CLIENT_CLOSED = 499
"""Logged status when the client leaves before its answer is complete (nginx's convention)."""

CORE_HEALTH_TIMEOUT_S = 2.0
"""``/health`` must answer fast even when the core hangs."""

MAX_CONNECT_TIMEOUT_S = 10.0
"""Connecting to the core takes milliseconds when it is up; waiting the full upstream
timeout (minutes) for a TCP handshake would only delay the 504."""

_REQUEST_ID = REQUEST_ID_HEADER.encode()
_HOP_BY_HOP = frozenset(name.encode() for name in HOP_BY_HOP_HEADERS)
# ``content-length`` is the one entry of HOP_BY_HOP_HEADERS relayed in both directions: bodies
# are relayed byte for byte (still compressed, if they were), so the length holds on the next
# hop too. Kept, it lets the core refuse an oversized upload from the header alone, and lets
# clients see a download's size.
_RELAYED_FRAMING = frozenset({b"content-length"})
_NOT_COPIED_UPSTREAM = (_HOP_BY_HOP - _RELAYED_FRAMING) | {
    _REQUEST_ID,
    # The gateway is the edge: forwarding headers from a client are lies, so they are replaced.
    FORWARDED_HOST_HEADER.encode(),
    FORWARDED_PROTO_HEADER.encode(),
    # Granian has already answered the client's 100-continue, and this hop does not wait
    # for one (which also keeps _EarlyAnswerStream's "readable means answered" true).
    b"expect",
    # Only the gateway names a payer (with the edge token); a client's claim is dropped.
    PAYER_HEADER.encode(),
    PAYMENT_ID_HEADER.encode(),
}
_NOT_COPIED_DOWNSTREAM = (_HOP_BY_HOP - _RELAYED_FRAMING) | {_REQUEST_ID}
_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
_TOOLBOX = re.compile(rb"/sandbox/([^/]+)/toolbox(?=/|$)")
_DOT_SEGMENTS = frozenset({b".", b".."})
_ERROR = msgspec.json.Encoder()

log = structlog.get_logger()


class Upstream(msgspec.Struct, kw_only=True):
    """The request as it will be sent to the core, plus what the log line needs."""

    method: str
    raw_path: bytes
    """The client's path as sent (still percent-encoded)."""
    query: bytes = b""
    """The client's query string as sent, without ``?``."""
    url: str
    headers: Headers
    request_id: str


class Outcome:
    """What happened to one request, filled in as it goes; read by the log line."""

    __slots__ = ("complete", "error", "intercepted", "status")

    def __init__(self, status: int = CLIENT_CLOSED, error: str | None = None) -> None:
        self.status = status
        self.error = error
        self.complete = False
        self.intercepted = False
        """The core answered, but a ``ResponseTap`` kept its answer from the client (the
        caller answers instead)."""


class ResponseTap(Protocol):
    """Sees a forwarded answer on its way to the client (used by the payment gate)."""

    def start(self, status: int, headers: Headers) -> Headers | None:
        """The headers to send (amended as needed), or None to keep the answer from the
        client: the exchange then ends with ``Outcome.intercepted`` and sends nothing."""

    def chunk(self, data: bytes) -> None:
        """One chunk of the body, as relayed."""


class Gate(Protocol):
    """Admits (or refuses) a request before the core sees it; see ``gateway.payments``."""

    async def admit(self, upstream: Upstream, receive: Receive, send: Send, forwarder: Forwarder) -> Outcome:
        """Answer the request: itself, or through ``forwarder.forward``."""
        ...

    def refuse_websocket(self, upstream: Upstream) -> tuple[int, str, str] | None:
        """Why a WebSocket upgrade may not go to the core (status, code, message), or None."""
        ...


def map_path(raw_path: bytes) -> bytes:
    """Seed 004's route shape: ``/sandbox/{id}/toolbox/{rest}`` is the core's
    ``/toolbox/{id}/{rest}``; every other path is the core's own."""
    match = _TOOLBOX.match(raw_path)
    if match is None:
        return raw_path
    return b"/toolbox/" + match[1] + raw_path[match.end() :]


def has_dot_segment(raw_path: bytes) -> bool:
    """``.`` or ``..`` segments, literal or percent-encoded.

    httpx resolves literal ones before sending, so the core would serve a different path
    from the one the gateway mapped (and, with payments, priced); encoded ones the core
    decodes itself. Real clients normalise paths, so such a request is refused.
    """
    if b"." not in raw_path and b"%2" not in raw_path:
        return False
    segments = raw_path.lower().replace(b"%2e", b".").split(b"/")
    return any(segment in _DOT_SEGMENTS for segment in segments)


def is_internal(raw_path: bytes) -> bool:
    """``/internal/...`` is the core's host-facing API (registration, heartbeats): hosts reach
    the core directly, never through the public edge, so the gateway refuses it in any
    spelling (percent-encoded, upper case, doubled slashes)."""
    path = unquote_to_bytes(raw_path.split(b"?", 1)[0]).lower()
    return path.lstrip(b"/").split(b"/", 1)[0] == b"internal"


def prepare(scope: Scope, core_url: str) -> Upstream:
    """Build the upstream request from an ASGI ``http`` scope and bind its request id.

    Header names arrive lowercased from the ASGI server. Besides the fixed hop-by-hop set,
    headers the client names in ``Connection`` are hop-by-hop too (RFC 9110 §7.6.1).
    """
    headers: Headers = []
    host = request_id = connection = None
    for name, value in scope["headers"]:
        if name not in _NOT_COPIED_UPSTREAM:
            headers.append((name, value))
        elif name == b"host":
            host = value
        elif name == _REQUEST_ID:
            request_id = value
        elif name == b"connection":
            connection = value
    if connection is not None:
        headers = _without_connection_options(headers, connection)

    rid = bind_client_request_id(request_id)
    headers.append((_REQUEST_ID, rid.encode()))
    if host is not None:
        headers.append((FORWARDED_HOST_HEADER.encode(), host))
    headers.append((FORWARDED_PROTO_HEADER.encode(), scope["scheme"].encode()))

    raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
    query: bytes = scope["query_string"]
    target = map_path(raw_path) + b"?" + query if query else map_path(raw_path)
    return Upstream(
        method=scope["method"],
        raw_path=raw_path,
        query=query,
        url=core_url + target.decode("latin-1"),
        headers=headers,
        request_id=rid,
    )


def bind_client_request_id(raw: bytes | None) -> str:
    """Bind this request's id for its log lines: the client's own when it is a short token
    (so a caller can follow its call through our logs), otherwise a fresh one."""
    return bind_request_id(raw.decode() if raw and _SANE_REQUEST_ID.fullmatch(raw) else None)


def _without_connection_options(headers: Headers, connection: bytes) -> Headers:
    named = {token.strip().lower() for token in connection.split(b",")}
    return [(name, value) for name, value in headers if name not in named]


def _response_headers(raw: Headers, request_id: str) -> Headers:
    """The core's headers minus hop-by-hop ones, plus the request id."""
    headers: Headers = []
    connection = None
    for raw_name, value in raw:
        name = raw_name.lower()
        if name not in _NOT_COPIED_DOWNSTREAM:
            headers.append((name, value))
        elif name == b"connection":
            connection = value
    if connection is not None:
        headers = _without_connection_options(headers, connection)
    headers.append((_REQUEST_ID, request_id.encode()))
    return headers


async def send_error(send: Send, status: int, code: str, message: str, request_id: str) -> None:
    """Answer with the public ``ErrorBody`` shape; never an internal detail or traceback."""
    body = _ERROR.encode(ErrorBody(status_code=status, message=message, code=code))
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (_REQUEST_ID, request_id.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


def log_request(method: str, path: str, status: int, started: float, error: str | None = None) -> None:
    """The one log line per request; the request id comes from the bound context."""
    duration_ms = round((time.perf_counter() - started) * 1000, 2)
    if error is None:
        log.info("request", method=method, path=path, status=status, duration_ms=duration_ms)
    else:
        log.warning("request", method=method, path=path, status=status, duration_ms=duration_ms, error=error)


class _DiscardCookies(http.cookiejar.CookieJar):
    """A jar that never stores anything.

    The shared client serves every user, so it must not remember one user's ``Set-Cookie``
    (the header is relayed to that user untouched), and a jar would grow without bound.
    """

    def extract_cookies(self, response: HTTPResponse, request: Request) -> None:
        return None


class _EarlyAnswerStream(httpcore.AsyncNetworkStream):
    """A connection to the core that stops sending the request once the core has answered.

    The core may answer before it has read the whole body (401 for a bad key, 413 for an
    oversized upload), then close. httpcore sends the whole body before reading, and its
    anyio streams do not read while writing, so the next write fails and the socket is torn
    down with the answer still unread: the client would get a 502. Refusing to write once
    there is something to read turns this into the ``WriteError`` that httpcore handles by
    reading the response. Nothing else can arrive mid-request (see ``expect`` above).
    """

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner

    # The timeout parameters below are httpcore's interface (ASYNC109 wants asyncio.timeout).
    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        if self._inner.get_extra_info("is_readable"):
            raise httpcore.WriteError("the core answered before the request was sent")
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> httpcore.AsyncNetworkStream:
        return _EarlyAnswerStream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _EarlyAnswerBackend(httpcore.AsyncNetworkBackend):
    """httpcore's own anyio backend, its TCP connections wrapped in ``_EarlyAnswerStream``."""

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _EarlyAnswerStream(stream)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class Forwarder:
    """The catch-all ASGI app: everything the gateway does not serve itself goes to the core.

    Enter it (it is the app's lifespan context) to open the shared client, which holds the
    keep-alive pool to the core, and leave it to close that pool.
    """

    _client: httpx.AsyncClient

    def __init__(self, core_url: str, timeout_s: float, gate: Gate | None = None) -> None:
        self._core_url = core_url
        self._timeout_s = timeout_s
        self._gate = gate

    async def __aenter__(self) -> Forwarder:
        transport = httpx.AsyncHTTPTransport()
        # httpx 0.28 has no public way to choose the network backend, hence the private
        # attribute; tests/gateway covers what it is for (a 413 sent mid-upload arrives).
        transport._pool = httpcore.AsyncConnectionPool(
            # Granian's backpressure already bounds concurrent requests; a second cap here
            # would only make long uploads starve short calls until a pool timeout.
            max_connections=None,
            max_keepalive_connections=100,
            keepalive_expiry=5.0,
            network_backend=_EarlyAnswerBackend(),
        )
        self._client = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(self._timeout_s, connect=min(self._timeout_s, MAX_CONNECT_TIMEOUT_S)),
            cookies=_DiscardCookies(),
            trust_env=False,  # no proxy or netrc settings from the environment
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._client.aclose()

    async def core_health(self, request_id: str) -> Literal["ok", "unhealthy", "unreachable"]:
        """Ask the core's ``GET /health``; ``unhealthy`` means it answered, but not 2xx."""
        try:
            response = await self._client.get(
                self._core_url + "/health",
                headers={REQUEST_ID_HEADER: request_id},
                timeout=CORE_HEALTH_TIMEOUT_S,
            )
        except httpx.TransportError:
            return "unreachable"
        return "ok" if response.is_success else "unhealthy"

    async def key_status(self, sandbox_id: str, key: str, request_id: str) -> int | None:
        """What the core answers ``GET /v1/sandboxes/{sandbox_id}`` with ``key`` as the bearer
        key: 200 when the key is valid and its org owns the sandbox, 401 for a bad key, 404
        for another org's sandbox; None when the core cannot be asked. The payment gate's check
        for routes the core serves without an API key (``PaymentGate._keyed_stream``)."""
        try:
            response = await self._client.get(
                f"{self._core_url}/v1/sandboxes/{quote(sandbox_id, safe='')}",
                headers=[
                    (b"authorization", b"Bearer " + key.encode("latin-1")),
                    (_REQUEST_ID, request_id.encode()),
                ],
                timeout=CORE_HEALTH_TIMEOUT_S,
            )
        except (httpx.TransportError, httpx.InvalidURL, ValueError):
            return None
        return response.status_code

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            # Terminals: see gateway/wsforward.py (imported here, as it builds on this module).
            from gateway.wsforward import forward_websocket

            await forward_websocket(scope, receive, send, self._core_url, self._gate)
            return
        started = time.perf_counter()
        upstream = prepare(scope, self._core_url)
        if has_dot_segment(upstream.raw_path):
            outcome = Outcome(400, "invalid_path")
            await send_error(send, 400, "invalid_path", "path has . or .. segments", upstream.request_id)
        elif is_internal(upstream.raw_path):
            outcome = Outcome(404, "internal_path")
            await send_error(send, 404, "not_found", "Not Found", upstream.request_id)
        elif self._gate is not None:
            outcome = await self._gate.admit(upstream, receive, send, self)
        else:
            outcome = await self.forward(upstream, receive, send)
        path = upstream.raw_path.decode("latin-1")
        log_request(upstream.method, path, outcome.status, started, outcome.error)

    async def forward(
        self,
        upstream: Upstream,
        receive: Receive,
        send: Send,
        *,
        body: bytes | None = None,
        more_body: bool = False,
        tap: ResponseTap | None = None,
        finish_without_client: bool = False,
    ) -> Outcome:
        """Send ``upstream`` to the core and relay the answer.

        ``body``: what the caller has already read of the request body (``more_body``: and
        the rest is still to be received); None to read it all from ``receive``.
        ``finish_without_client``: a client that leaves does not cancel the exchange, so the
        core's real status is known (a paid request's outcome decides a refund).
        """
        if body is None:
            first = await receive()
            if first["type"] == "http.disconnect":
                return Outcome(CLIENT_CLOSED)
            body = first.get("body", b"")
            more_body = first.get("more_body", False)
        content: bytes | AsyncIterator[bytes] = body
        rest_of_body: asyncio.Queue[Message] | None = None
        if more_body:
            # One slot: the client is read no faster than the core accepts the body.
            rest_of_body = asyncio.Queue(maxsize=1)
            content = _stream_body(body, rest_of_body)

        outcome = Outcome()
        loop = asyncio.get_running_loop()
        exchange = loop.create_task(self._exchange(upstream, content, send, outcome, tap))
        watcher = loop.create_task(_watch_client(receive, rest_of_body, exchange, not finish_without_client))
        try:
            await exchange
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the server is cancelling us, not the watcher
            if not outcome.complete:
                outcome.status = CLIENT_CLOSED
        finally:
            watcher.cancel()
        return outcome

    async def _exchange(
        self,
        upstream: Upstream,
        content: bytes | AsyncIterator[bytes],
        send: Send,
        outcome: Outcome,
        tap: ResponseTap | None = None,
    ) -> None:
        request = httpx.Request(upstream.method, upstream.url, headers=upstream.headers, content=content)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TimeoutException:
            message = f"the core did not answer within {self._timeout_s:g} s"
            await self._fail(send, outcome, upstream, 504, "upstream_timeout", message)
            return
        except httpx.ConnectError:
            await self._fail(send, outcome, upstream, 502, "upstream_unavailable", "the core is unreachable")
            return
        except httpx.TransportError:
            message = "the core closed the connection without answering"
            await self._fail(send, outcome, upstream, 502, "upstream_unavailable", message)
            return

        outcome.status = response.status_code
        headers = _response_headers(response.headers.raw, upstream.request_id)
        if tap is not None:
            tapped = tap.start(response.status_code, headers)
            if tapped is None:
                outcome.intercepted = outcome.complete = True
                await response.aclose()
                return
            headers = tapped
        try:
            await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
            async for chunk in response.aiter_raw():
                if tap is not None:
                    tap.chunk(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except httpx.TransportError:
            # The status line is already out, so the only honest signal left is a cut-off
            # body: returning without the final message makes Granian drop the connection.
            outcome.error = "upstream_broken"
            return
        finally:
            # Before the final send: once that is out the client may leave at any moment,
            # and the watcher's cancel must not land in the middle of returning the
            # connection to the pool.
            await response.aclose()
        outcome.complete = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    @staticmethod
    async def _fail(
        send: Send, outcome: Outcome, upstream: Upstream, status: int, code: str, message: str
    ) -> None:
        outcome.status, outcome.error, outcome.complete = status, code, True
        await send_error(send, status, code, message, upstream.request_id)


async def _stream_body(first: bytes, rest: asyncio.Queue[Message]) -> AsyncIterator[bytes]:
    if first:
        yield first
    while True:
        message = await rest.get()
        if message.get("body"):
            yield message["body"]
        if not message.get("more_body", False):
            return


async def _watch_client(
    receive: Receive,
    rest_of_body: asyncio.Queue[Message] | None,
    exchange: asyncio.Task[None],
    cancel_on_disconnect: bool = True,
) -> None:
    """Own ``receive`` once the first message is in: pass body messages to the exchange,
    then wait for ``http.disconnect`` and cancel the exchange if it is still running.

    Granian does not fail ``send`` after a disconnect, it drops the data; without this, a
    client that walks away from a long answer would keep the core connection busy until
    the core finished.
    """
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            # A body cut short cannot be finished for the client, whatever the caller asked.
            if cancel_on_disconnect or rest_of_body is not None:
                exchange.cancel()
            return
        if rest_of_body is not None:
            await rest_of_body.put(message)
            if not message.get("more_body", False):
                rest_of_body = None
