"""A stand-in for the core behind the gateway under test, served by Granian like the real one:
``granian --interface asgi --factory tests.gateway.upstream:create_app``.

It reports what actually arrived (method, raw path, query, headers, a digest of the body,
read as a stream so 200 MB uploads cost nothing), and can answer with any status, a large
or slow body, or headers a proxy must not relay. ``GET /control/seen`` lists every request
that reached it, so a test can show that something did *not*; a WebSocket on any path is
echoed (served with ``--ws``). ``GET /v1/sandboxes/{id}`` with ``Authorization: Bearer
status-NNN`` answers NNN, and ``POST /envd/{id}/held/{token}`` is an exchange a test paces.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

from litestar import HttpMethod, Litestar, Request, Response, get, head, post, put, route
from litestar.response import Stream

ECHO_METHODS = [HttpMethod.GET, HttpMethod.POST, HttpMethod.PUT, HttpMethod.PATCH, HttpMethod.DELETE]
CHUNK = 64 * 1024
_BLOCK = bytes(range(256)) * (CHUNK // 256)


def pattern(size: int) -> Iterator[bytes]:
    """The bytes ``/download/{size}`` serves, in chunks, so tests can compute its digest."""
    full, tail = divmod(size, CHUNK)
    for _ in range(full):
        yield _BLOCK
    if tail:
        yield _BLOCK[:tail]


class _Health:
    status = 200


@route(["/", "/{path:path}"], http_method=ECHO_METHODS, status_code=200)
async def echo(request: Request) -> dict[str, object]:
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.stream():
        digest.update(chunk)
        size += len(chunk)
    return {
        "method": request.method,
        "raw_path": request.scope["raw_path"].decode("latin-1"),
        "query": request.scope["query_string"].decode("latin-1"),
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.scope["headers"]],
        "body_sha256": digest.hexdigest(),
        "body_bytes": size,
    }


@route("/status/{code:int}", http_method=ECHO_METHODS)
async def status(code: int) -> Response[bytes]:
    """Any status, with a JSON error body (none for 204/304)."""
    body = (
        b"" if code in (204, 304) else b'{"statusCode":%d,"message":"upstream says no","code":"nope"}' % code
    )
    return Response(
        body,
        status_code=code,
        media_type="application/json",
        headers={"x-upstream": "yes", "www-authenticate": 'Bearer realm="dnah"'},
    )


@post("/limited", request_max_body_size=1024)
async def limited(data: bytes) -> dict[str, int]:
    """Refuses bodies over 1 KiB with 413, as the core refuses uploads over its limit."""
    return {"body_bytes": len(data)}


@get("/cookies")
async def cookies() -> Response[bytes]:
    response = Response(b"{}", media_type="application/json")
    response.set_cookie("a", "1")
    response.set_cookie("b", "2")
    return response


@get("/download/{size:int}")
async def download(size: int, chunked: bool = False) -> Stream:
    async def body() -> AsyncIterator[bytes]:
        for chunk in pattern(size):
            yield chunk

    headers = {} if chunked else {"content-length": str(size)}
    return Stream(body(), media_type="application/octet-stream", headers=headers)


@head("/download/{size:int}")
async def download_head(size: int) -> Response[None]:
    return Response(None, media_type="text/plain", headers={"content-length": str(size)})


@get("/drip")
async def drip(pause: float = 0.0) -> Stream:
    """Two chunks with a pause between them: a relay that buffers shows only the second."""

    async def body() -> AsyncIterator[bytes]:
        yield b"first\n"
        await asyncio.sleep(pause)
        yield b"second\n"

    return Stream(body(), media_type="text/plain")


@get("/slow")
async def slow(seconds: float) -> dict[str, str]:
    await asyncio.sleep(seconds)
    return {"slept": str(seconds)}


@get("/stall")
async def stall(seconds: float) -> Stream:
    """Headers and a first chunk at once, then silence: the relay can only cut the body."""

    async def body() -> AsyncIterator[bytes]:
        yield b"partial"
        await asyncio.sleep(seconds)
        yield b"never seen"

    return Stream(body(), media_type="text/plain")


_HELD: dict[str, asyncio.Event] = {}
_RECEIVED: dict[str, int] = {}


@get("/control/received/{token:str}")
async def received(token: str) -> dict[str, int]:
    return {"bytes": _RECEIVED.get(token, -1)}


@post("/control/release/{token:str}", status_code=204)
async def release(token: str) -> None:
    _HELD.setdefault(token, asyncio.Event()).set()


@get("/hop-by-hop")
async def hop_by_hop() -> Response[bytes]:
    return Response(
        b"{}",
        media_type="application/json",
        headers={
            "keep-alive": "timeout=5",
            "proxy-authenticate": "Basic",
            "trailers": "x-checksum",
            "connection": "x-private",
            "x-private": "only for the next hop",
            "x-request-id": "set-by-upstream",
            "x-kept": "yes",
        },
    )


@get("/health")
async def health() -> Response[dict[str, str]]:
    return Response({"status": "ok" if _Health.status == 200 else "down"}, status_code=_Health.status)


@put("/control/health/{code:int}")
async def set_health(code: int) -> None:
    """Lets a test make ``/health`` fail (and restore it) without starting another server."""
    _Health.status = code


_SEEN: list[str] = []
"""``METHOD raw_path?query`` of every request that arrived (``/control/…`` excepted)."""


@get("/control/seen")
async def seen() -> dict[str, list[str]]:
    return {"seen": _SEEN}


_KEY_STATUS = re.compile(rb"Bearer status-([0-9]{3})")
_HELD_PATH = re.compile(rb"/envd/[^/]+/held/([0-9a-f]+)")


def _recorded(app: Any) -> Any:
    async def recording(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            raw: bytes = scope.get("raw_path") or scope["path"].encode()
            if not raw.startswith(b"/control/"):
                query = b"?" + scope["query_string"] if scope["query_string"] else b""
                _SEEN.append(f"{scope.get('method', 'WS')} {(raw + query).decode('latin-1')}")
            if scope["type"] == "websocket":
                await _ws_echo(scope, receive, send)
                return
            paced = _HELD_PATH.fullmatch(raw)
            if paced is not None:
                await _held(receive, send, paced[1].decode())
                return
            keyed = _KEY_STATUS.fullmatch(dict(scope["headers"]).get(b"authorization", b""))
            if keyed is not None and raw.startswith(b"/v1/sandboxes/"):
                await _answer(send, int(keyed[1]))
                return
        await app(scope, receive, send)

    return recording


async def _held(receive: Any, send: Any, token: str) -> None:
    """A Connect-like exchange whose progress a test controls (``POST /envd/{id}/held/{token}``,
    raw ASGI beside the echo, which a route under ``/envd/{id}`` would shadow): the request body
    is counted as it arrives (``GET /control/received/{token}``), then the answer's first
    message is sent at once and its end only after ``POST /control/release/{token}``. A relay
    that buffers either direction stalls the test instead of passing it."""
    release = _HELD.setdefault(token, asyncio.Event())
    _RECEIVED[token] = 0
    while True:
        message = await receive()
        _RECEIVED[token] += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    headers = [(b"content-type", b"application/connect+json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send(
        {"type": "http.response.body", "body": b"\x00\x00\x00\x00\x0b" + b'{"first":1}', "more_body": True}
    )
    await release.wait()
    await send({"type": "http.response.body", "body": b"\x02\x00\x00\x00\x02{}", "more_body": False})


async def _answer(send: Any, status: int) -> None:
    """The core's answer to a key that ``Bearer status-NNN`` names: NNN (an API key check
    the gateway makes, ``Forwarder.key_status``, sees each outcome this way)."""
    body = json.dumps({"status_code": status, "message": "as the key asks", "code": "test"}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _ws_echo(scope: Any, receive: Any, send: Any) -> None:
    """Accept (with the first subprotocol offered), report the upgrade as a first text
    message, then echo every message until the client closes."""
    await receive()  # websocket.connect
    offered = scope.get("subprotocols") or []
    await send({"type": "websocket.accept", "subprotocol": offered[0] if offered else None})
    report = {
        "raw_path": scope["raw_path"].decode("latin-1"),
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
    }
    await send({"type": "websocket.send", "text": json.dumps(report)})
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return
        if message.get("bytes") is not None:
            await send({"type": "websocket.send", "bytes": message["bytes"]})
        else:
            await send({"type": "websocket.send", "text": message.get("text") or ""})


def create_app() -> Any:
    return _recorded(_app())


def _app() -> Litestar:
    return Litestar(
        route_handlers=[
            echo,
            status,
            limited,
            cookies,
            download,
            download_head,
            drip,
            slow,
            stall,
            hop_by_hop,
            received,
            release,
            health,
            set_health,
            seen,
        ],
        request_max_body_size=None,
        openapi_config=None,
    )
