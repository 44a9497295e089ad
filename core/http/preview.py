"""The core's preview proxy: ``/preview/{sandbox id}/{port}/{rest}``, HTTP and WebSocket, to a
server listening on that port inside the sandbox (docs/network.md, "Preview URLs and tokens").

A plain ASGI app beside Litestar (``core/http/app.py`` sends ``/preview/`` here), because
nothing of a preview request is the core's to parse: the body is streamed to hostd as it
arrives and the answer streamed back, for as long as the client listens (server-sent events),
and a WebSocket is relayed message by message.

For each request: the credentials are taken off it (``x-daytona-preview-token`` /
``x-dnah-preview-token``, the port's cookie ``dnah_preview_<port>``, the query's
``dnah_preview_token``, an ``Authorization`` that is the caller's API key), the service
decides (``PreviewService.admit``: 401/403, 404, 409, or a woken sandbox), and only then is
anything sent on. A signed token in the query of a plain request is answered with a 302 to
the same URL without it, setting the port's cookie, so the token leaves the address bar and
the page's own requests carry the cookie. The gateway says where the client's URL starts
(``x-dnah-preview-prefix``: empty for a host-based URL, ``/preview/{id}/{port}`` for a
path-based one); the cookie's ``Path``, the redirect and ``x-forwarded-prefix`` follow it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import unquote

import httpx
import msgspec
import structlog
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from contracts.control import (
    FORWARDED_HOST_HEADER,
    FORWARDED_PREFIX_HEADER,
    FORWARDED_PROTO_HEADER,
    HOP_BY_HOP_HEADERS,
    REQUEST_ID_HEADER,
)
from contracts.public import ErrorBody
from core.errors import BadRequest, CoreError, HostUnavailable
from core.port_client import HOST_ERROR_HEADER, PortClient, host_error
from core.services.preview import Admitted, Credentials, PreviewService

log = structlog.get_logger()

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PREFIX = "/preview/"
PREFIX_HEADER = b"x-dnah-preview-prefix"
QUERY_TOKEN = b"dnah_preview_token"
TOKEN_HEADERS = frozenset({b"x-daytona-preview-token", b"x-dnah-preview-token", b"e2b-traffic-access-token"})
"""Headers carrying the sandbox's preview token (E2B's SDK sends it as its traffic access token)."""
ACCESS_TOKEN_HEADER = b"x-access-token"
"""E2B's envd access token, which also opens the sandbox's other ports; passed on to the
server, since it is an ordinary header name an app may use for itself."""
CLIENT_AUTHORIZATION = b"x-dnah-authorization"
"""The client's own ``Authorization`` on its way to the server (hostd's carries its token)."""

_DROPPED = frozenset(name.encode() for name in HOP_BY_HOP_HEADERS) | {
    b"authorization",
    b"cookie",
    REQUEST_ID_HEADER.encode(),
    FORWARDED_HOST_HEADER.encode(),
    FORWARDED_PROTO_HEADER.encode(),
    FORWARDED_PREFIX_HEADER.encode(),
    b"expect",
}
"""Never copied as they are to hostd: set anew (or filtered: the cookie) below."""
_NOT_RELAYED_BACK = frozenset(name.encode() for name in HOP_BY_HOP_HEADERS if name != "content-length") | {
    HOST_ERROR_HEADER.encode(),
}
_UNSENDABLE = {1005: 1000, 1006: 1011, 1015: 1011}
_ERROR = msgspec.json.Encoder()


class Request(msgspec.Struct, kw_only=True):
    """A preview request taken apart: where it goes, what it carries for the server, and its
    credentials (already removed from the rest)."""

    sandbox_id: str
    port: int
    rest: str
    """The path after the port, still percent-encoded, starting with ``/``."""
    query: bytes
    headers: list[tuple[bytes, bytes]]
    creds: Credentials
    query_token: bool
    prefix: str
    host: str
    proto: str
    request_id: str | None
    length: bytes | None = None
    """The body's declared length, passed on so the server gets the body as it was framed
    (not chunked, which many servers' request parsers do not take)."""


def parse(scope: Scope) -> Request:
    """Take a ``/preview/…`` scope apart (400 for a malformed one)."""
    raw = scope.get("raw_path") or scope["path"].encode()
    parts = raw.decode("latin-1")[len(PREFIX) :].split("/", 2)
    if len(parts) < 2 or not parts[0] or not parts[1].isdigit():
        raise BadRequest("a preview path is /preview/{sandbox id}/{port}/…")
    sandbox_id, port = unquote(parts[0]), int(parts[1]) if len(parts[1]) <= 6 else 0
    rest = "/" + (parts[2] if len(parts) == 3 else "")
    if any(unquote(segment) in (".", "..") for segment in rest.split("/")):
        # browsers resolve them before sending; on the way to hostd one would climb out of
        # the port route into hostd's own API
        raise BadRequest("a preview path may not have . or .. segments")
    query, query_token = _strip_query(scope.get("query_string", b""))
    token = authorization = access_token = prefix = None
    host, proto, request_id = "", scope.get("scheme", "http"), None
    cookies: list[bytes] = []
    headers: list[tuple[bytes, bytes]] = []
    length: bytes | None = None
    chunked = False
    for name, value in scope["headers"]:
        if name in TOKEN_HEADERS:
            token = value.decode("latin-1")
        elif name == PREFIX_HEADER:
            prefix = value.decode("latin-1").rstrip("/")
        elif name == b"authorization":
            authorization = value.decode("latin-1")
        elif name == ACCESS_TOKEN_HEADER:
            access_token = value.decode("latin-1")
        elif name == b"cookie":
            cookies.append(value)
        elif name == FORWARDED_HOST_HEADER.encode():
            host = value.decode("latin-1")
        elif name == FORWARDED_PROTO_HEADER.encode():
            proto = value.decode("latin-1")
        elif name == REQUEST_ID_HEADER.encode():
            request_id = value.decode("latin-1")
        elif name == b"host":
            host = host or value.decode("latin-1")
        elif name == b"content-length":
            length = value.strip()
        elif name == b"transfer-encoding":
            chunked = True
        if name not in _DROPPED and name not in TOKEN_HEADERS and not name.startswith(b"x-dnah-"):
            headers.append((name, value))
    cookie_token, kept = _strip_cookie(cookies, port)
    if kept:
        headers.append((b"cookie", kept))
    return Request(
        sandbox_id=sandbox_id,
        port=port,
        rest=rest,
        query=query,
        headers=headers,
        creds=Credentials(
            token=token,
            signed=query_token or cookie_token,
            authorization=authorization,
            access_token=access_token,
        ),
        query_token=query_token is not None,
        prefix=f"/preview/{parts[0]}/{parts[1]}" if prefix is None or not _is_prefix(prefix) else prefix,
        host=host,
        proto=proto,
        request_id=request_id,
        length=None if chunked or not length or not length.isdigit() else length,
    )


def _is_prefix(prefix: str) -> bool:
    """Whether the gateway's prefix is one it could have sent: empty, or an absolute path."""
    return prefix == "" or (prefix.startswith("/") and not prefix.startswith(("//", "/\\")))


def _strip_query(query: bytes) -> tuple[bytes, str | None]:
    """The query without ``dnah_preview_token`` (kept byte for byte otherwise), and its value."""
    token = None
    kept = []
    for pair in query.split(b"&") if query else []:
        name, _, value = pair.partition(b"=")
        if name == QUERY_TOKEN:
            token = unquote(value.decode("latin-1"))
        else:
            kept.append(pair)
    return b"&".join(kept), token


def cookie_name(port: int) -> str:
    return f"dnah_preview_{port}"


def _strip_cookie(headers: list[bytes], port: int) -> tuple[str | None, bytes]:
    """The port's preview cookie, and the ``Cookie`` header without it (other cookies are the
    server's business and pass)."""
    name = cookie_name(port).encode()
    token = None
    kept = []
    for header in headers:
        for pair in header.split(b";"):
            pair = pair.strip()
            if not pair:
                continue
            if pair.partition(b"=")[0].strip() == name:
                with contextlib.suppress(CookieError):
                    cookie: SimpleCookie = SimpleCookie(pair.decode("latin-1"))
                    token = cookie[cookie_name(port)].value
            else:
                kept.append(pair)
    return token, b"; ".join(kept)


def upstream_headers(req: Request, admitted: Admitted) -> list[tuple[bytes, bytes]]:
    headers = list(req.headers)
    if req.creds.authorization and not admitted.api_key_used:
        headers.append((CLIENT_AUTHORIZATION, req.creds.authorization.encode("latin-1")))
    if req.host:
        headers.append((FORWARDED_HOST_HEADER.encode(), req.host.encode("latin-1")))
    headers.append((FORWARDED_PROTO_HEADER.encode(), req.proto.encode("latin-1")))
    if req.prefix:
        headers.append((FORWARDED_PREFIX_HEADER.encode(), req.prefix.encode("latin-1")))
    if req.request_id:
        headers.append((REQUEST_ID_HEADER.encode(), req.request_id.encode("latin-1")))
    if req.length is not None:
        headers.append((b"content-length", req.length))
    return headers


class PreviewProxy:
    """The ASGI app. ``services`` gives the running core's preview service and port client
    (they exist once the lifespan has started)."""

    def __init__(self, services: Callable[[], tuple[PreviewService, PortClient]]) -> None:
        self._services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self._http(scope, receive, send)

    async def _admit(self, scope: Scope) -> tuple[Request, Admitted]:
        req = parse(scope)
        preview, _ = self._services()
        return req, await preview.admit(req.sandbox_id, req.port, req.creds)

    # HTTP --------------------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            req, admitted = await self._admit(scope)
        except CoreError as exc:
            await _error(send, exc)
            return
        if req.query_token:
            await _redirect(send, req, admitted)
            return
        _, ports = self._services()
        await _Exchange(ports, req, admitted, receive, send).run(scope["method"])

    # WebSocket ---------------------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        try:
            req, admitted = await self._admit(scope)
            _, ports = self._services()
            server = await ports.open_websocket(
                admitted.host,
                admitted.sandbox.id,
                req.port,
                rest=req.rest,
                query=req.query,
                headers=[
                    (k.decode("latin-1"), v.decode("latin-1"))
                    for k, v in upstream_headers(req, admitted)
                    if not k.startswith(b"sec-websocket-") and k != b"user-agent"
                ],
                subprotocols=scope.get("subprotocols") or None,
            )
        except CoreError as exc:
            await _ws_refuse(scope, send, exc.status_code, _error_body(exc), [])
            return
        if not isinstance(server, ClientConnection):
            marked = server.headers.get(HOST_ERROR_HEADER)
            if marked:
                refused = host_error(server.status_code, marked, bytes(server.body or b""))
                await _ws_refuse(scope, send, refused.status_code, _error_body(refused), [])
            else:
                relayed = [
                    (k.lower().encode("latin-1"), v.encode("latin-1"))
                    for k, v in server.headers.raw_items()
                    if k.lower().encode("latin-1") not in _NOT_RELAYED_BACK and k.lower() != "content-length"
                ]
                await _ws_refuse(scope, send, server.status_code, bytes(server.body or b""), relayed)
            return
        await send({"type": "websocket.accept", "subprotocol": server.subprotocol})
        await _bridge(receive, send, server)


class _Exchange:
    """One HTTP request to the server and its answer, streamed both ways; the client leaving
    cancels it (so a server-sent event stream ends with its reader)."""

    def __init__(
        self, ports: PortClient, req: Request, admitted: Admitted, receive: Receive, send: Send
    ) -> None:
        self._ports, self._req, self._admitted = ports, req, admitted
        self._receive, self._send = receive, send
        self._body_done = asyncio.Event()
        self._started = False

    async def run(self, method: str) -> None:
        first = await self._receive()
        if first["type"] == "http.disconnect":
            return
        content: bytes | AsyncIterator[bytes] | None
        if first.get("more_body"):
            content = self._body(first.get("body", b""))
        else:
            content = first.get("body", b"") or None
            self._body_done.set()
        exchange = asyncio.create_task(self._exchange(method, content))
        watcher = asyncio.create_task(self._watch())
        try:
            await asyncio.wait({exchange, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (watcher, exchange):
                task.cancel()
            # their outcomes are read below; a task that failed must not raise here
            await asyncio.gather(watcher, exchange, return_exceptions=True)
        if not exchange.cancelled() and exchange.exception() is not None:
            exc = exchange.exception()
            if isinstance(exc, CoreError) and not self._started:
                await _error(self._send, exc)
            elif not isinstance(exc, CoreError):
                log.warning("preview_exchange_failed", error=f"{type(exc).__name__}: {exc}")

    async def _body(self, first: bytes) -> AsyncIterator[bytes]:
        if first:
            yield first
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise HostUnavailable("the client went away during its request")
            chunk = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body"):
                break
        self._body_done.set()

    async def _watch(self) -> None:
        """After the request's body, the only thing left to receive is the client leaving."""
        await self._body_done.wait()
        while (await self._receive())["type"] != "http.disconnect":
            pass

    async def _exchange(self, method: str, content: bytes | AsyncIterator[bytes] | None) -> None:
        req, admitted = self._req, self._admitted
        response = await self._ports.send(
            admitted.host,
            admitted.sandbox.id,
            req.port,
            method=method,
            rest=req.rest,
            query=req.query,
            headers=upstream_headers(req, admitted),
            content=content,
        )
        try:
            marked = response.headers.get(HOST_ERROR_HEADER)
            if marked:
                raise host_error(response.status_code, marked, await response.aread())
            headers = [(k.lower(), v) for k, v in response.headers.raw if k.lower() not in _NOT_RELAYED_BACK]
            self._started = True
            await self._send(
                {"type": "http.response.start", "status": response.status_code, "headers": headers}
            )
            async for chunk in response.aiter_raw():
                await self._send({"type": "http.response.body", "body": chunk, "more_body": True})
            await self._send({"type": "http.response.body", "body": b"", "more_body": False})
        except httpx.HTTPError as exc:
            raise HostUnavailable(f"the host's answer broke off: {type(exc).__name__}") from exc
        finally:
            await response.aclose()


def _error_body(exc: CoreError) -> bytes:
    return _ERROR.encode(ErrorBody(status_code=exc.status_code, message=exc.message, code=exc.code))


async def _error(send: Send, exc: CoreError) -> None:
    body = _error_body(exc)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _redirect(send: Send, req: Request, admitted: Admitted) -> None:
    """302 to the URL without the token; a valid signed token becomes the port's cookie, for
    as long as the token lives."""
    # one leading slash, whatever the client's path began with: "//host/…" (or "/\\host", which
    # browsers read alike) would send the client to another site
    path = "/" + (req.prefix + req.rest).lstrip("/\\")
    location = path + ("?" + req.query.decode("latin-1") if req.query else "")
    headers = [
        (b"location", location.encode("latin-1")),
        (b"content-length", b"0"),
        (b"cache-control", b"no-store"),
    ]
    if admitted.via == "signed" and admitted.signed_expires_at is not None and req.creds.signed:
        max_age = max(1, admitted.signed_expires_at - int(time.time()))
        cookie = (
            f"{cookie_name(req.port)}={req.creds.signed}; Path={req.prefix or '/'}; Max-Age={max_age};"
            " HttpOnly; SameSite=Lax" + ("; Secure" if req.proto == "https" else "")
        )
        headers.append((b"set-cookie", cookie.encode("latin-1")))
    await send({"type": "http.response.start", "status": 302, "headers": headers})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _ws_refuse(
    scope: Scope, send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    """Answer the upgrade with an HTTP response where the server can, else close before
    accepting (which a client sees as a 403)."""
    if "websocket.http.response" not in (scope.get("extensions") or {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    if not any(k == b"content-type" for k, _ in headers):
        headers = [*headers, (b"content-type", b"application/json")]
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body, "more_body": False})


async def _bridge(receive: Receive, send: Send, server: ClientConnection) -> None:
    """Messages both ways, as they are; the first side to close closes the other with its code."""
    to_client = asyncio.create_task(_server_to_client(send, server))
    to_server = asyncio.create_task(_client_to_server(receive, server))
    try:
        await asyncio.wait({to_client, to_server}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (to_server, to_client):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await server.close()
    if to_client.done() and not to_client.cancelled():
        code = server.close_code if server.close_code is not None else 1006
        with contextlib.suppress(Exception):
            await send(
                {
                    "type": "websocket.close",
                    "code": _UNSENDABLE.get(code, code),
                    "reason": server.close_reason or "",
                }
            )


async def _server_to_client(send: Send, server: ClientConnection) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for message in server:
            if isinstance(message, bytes):
                await send({"type": "websocket.send", "bytes": message})
            else:
                await send({"type": "websocket.send", "text": message})


async def _client_to_server(receive: Receive, server: ClientConnection) -> None:
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            code: int = message.get("code") or 1000
            with contextlib.suppress(Exception):
                await server.close(_UNSENDABLE.get(code, code), message.get("reason") or "")
            return
        data = message.get("bytes")
        try:
            await server.send(data if data is not None else message.get("text") or "")
        except ConnectionClosed:
            return
