"""A stand-in for the core behind the gateway under test, served by Granian like the real one:
``granian --interface asgi --factory tests.gateway.upstream:create_app``.

It reports what actually arrived (method, raw path, query, headers, a digest of the body,
read as a stream so 200 MB uploads cost nothing), and can answer with any status, a large
or slow body, or headers a proxy must not relay.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterator

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


def create_app() -> Litestar:
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
            health,
            set_health,
        ],
        request_max_body_size=None,
        openapi_config=None,
    )
