"""Slow, stuck and malformed clients against a real stack: the gateway cuts them off without
holding anything, honest slow uploads still work, and every bad body is a clean 4xx at every
hop (docs/reliability.md, "The edge of every process").

The gateway of this module's own stack has short limits (``DNAH_GATEWAY_HTTP_*``, so the
core and hostd keep their defaults, which must stay above their callers' keep-alive expiry).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from cli.stack import Stack
from tests.guard.raw import Answer, connect, post_head, read_answer, request
from tests.private_stack import private_stack
from tests.support import mint_key

SLOW = {
    "DNAH_GATEWAY_HTTP_HEADER_TIMEOUT_S": "2",
    "DNAH_GATEWAY_HTTP_BODY_TIMEOUT_S": "2",
    "DNAH_GATEWAY_HTTP_BODY_MIN_RATE": "1000",
    "DNAH_GATEWAY_HTTP_MAX_PER_CLIENT": "4",
}
DEEP = b'{"labels": {"a": ' + b"[" * 1000 + b"]" * 1000 + b"}}"
NOT_UTF8 = b'{"env": {"A": "\xff\xfe"}}'


@pytest.fixture(scope="module")
def edge() -> Iterator[Stack]:
    with private_stack(SLOW) as stack:
        yield stack


@pytest.fixture(scope="module")
def key(edge: Stack) -> str:
    with httpx.Client(
        base_url=edge.config.gateway_url, headers={"authorization": f"Bearer {edge.admin_token}"}
    ) as admin:
        return mint_key(admin, "slow-clients")


def port(url: str) -> int:
    return urlsplit(url).port or 80


def auth_head(head: bytes, key: str) -> bytes:
    return head[:-2] + f"Authorization: Bearer {key}\r\n\r\n".encode()


def assert_error(answer: Answer, status: int) -> None:
    assert answer.status == status, answer
    body = answer.json()
    assert body["statusCode"] == status and body["code"] and body["message"]


def test_a_slow_head_is_cut_off_at_the_gateway(edge: Stack) -> None:
    with connect(edge.config.gateway_port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: gw\r\n")
        with contextlib.suppress(OSError):
            for n in range(200):
                sock.sendall(b"X-Slow-%d: 1\r\n" % n)
                time.sleep(0.1)
        answer = read_answer(sock)
    assert answer.status is None and answer.closed


def test_stalled_bodies_are_cut_off_and_hold_nothing(edge: Stack, key: str) -> None:
    """Three clients announce 10 GB and stall; a normal request gets through meanwhile, and
    each stalled one gets 408 and a closed connection."""
    head = auth_head(
        post_head("/v1/sandboxes", length=10 * 1024**3, content_type="application/octet-stream"), key
    )
    stalled = [connect(edge.config.gateway_port, source="127.0.0.5") for _ in range(3)]
    try:
        for sock in stalled:
            sock.sendall(head + b"a" * 1024)
        health = httpx.get(edge.config.gateway_url + "/health", timeout=30)
        assert health.status_code == 200
        for sock in stalled:
            answer = read_answer(sock)
            assert answer.status in (408, 413, None) and answer.closed, answer
    finally:
        for sock in stalled:
            sock.close()


def test_a_json_body_that_stalls_is_a_408(edge: Stack, key: str) -> None:
    with connect(edge.config.gateway_port) as sock:
        sock.sendall(
            auth_head(post_head("/v1/sandboxes", length=1000, content_type="application/json"), key) + b"{"
        )
        answer = read_answer(sock)
    assert_error(answer, 408)
    assert answer.closed


def test_an_honest_slow_upload_through_the_gateway_succeeds(edge: Stack, key: str) -> None:
    """4 KB/s (minimum 1000 B/s) for ~5 s: longer than the 2 s window, never stalled."""
    with httpx.Client(
        base_url=edge.config.gateway_url, headers={"authorization": f"Bearer {key}"}, timeout=120
    ) as org:
        created = org.post("/v1/sandboxes", json={})
        assert created.status_code in (200, 201), created.text
        sandbox = created.json()["id"]
        try:
            size = 20 * 1024
            head = auth_head(
                f"PUT /v1/sandboxes/{sandbox}/files?path=slow.bin HTTP/1.1\r\nHost: gw\r\n"
                f"Content-Type: application/octet-stream\r\nContent-Length: {size}\r\n\r\n".encode(),
                key,
            )
            with connect(edge.config.gateway_port) as sock:
                sock.sendall(head)
                for _ in range(size // 1024):
                    sock.sendall(b"s" * 1024)
                    time.sleep(0.25)
                answer = read_answer(sock)
            assert answer.status == 200, answer
            assert answer.json()["size"] == size
        finally:
            org.delete(f"/v1/sandboxes/{sandbox}")


@pytest.mark.parametrize(
    "body",
    [b"zz\r\nhello\r\n0\r\n\r\n", b"5\r\nhelloXX0\r\n\r\n", b"3\r\nhello\r\n0\r\n\r\n"],
    ids=["bad-hex", "missing-crlf", "chunk-too-long"],
)
@pytest.mark.parametrize("hop", ["gateway", "core"])
def test_malformed_chunked_is_a_400(edge: Stack, key: str, body: bytes, hop: str) -> None:
    target = edge.config.gateway_port if hop == "gateway" else edge.config.core_port
    answer = request(
        target, auth_head(post_head("/v1/sandboxes", content_type="application/json"), key) + body
    )
    assert answer.closed
    assert answer.status == 400, answer


@pytest.mark.parametrize("content_type", ["application/json", "text/plain"])
@pytest.mark.parametrize("body", [DEEP, NOT_UTF8], ids=["deep", "not-utf8"])
def test_bad_json_is_a_400_through_the_gateway(edge: Stack, key: str, body: bytes, content_type: str) -> None:
    """JSON-typed bodies are refused at the gateway; others reach the core, which refuses them."""
    with httpx.Client(base_url=edge.config.gateway_url, headers={"authorization": f"Bearer {key}"}) as org:
        response = org.post("/v1/sandboxes", content=body, headers={"content-type": content_type})
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "bad_request"
        assert org.get("/v1/sandboxes").json()["items"] == []  # nothing was created


@pytest.mark.parametrize("body", [DEEP, NOT_UTF8], ids=["deep", "not-utf8"])
def test_bad_json_is_a_400_at_hostd(edge: Stack, body: bytes) -> None:
    host = _host(edge)
    response = httpx.post(
        host["api_url"] + "/sandboxes/nope/exec",
        content=body,
        headers={"authorization": f"Bearer {host['api_token']}", "content-type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "bad_request"


def _host(stack: Stack) -> asyncpg.Record:
    async def fetch() -> asyncpg.Record:
        conn = await asyncpg.connect(stack.database_url)
        try:
            return await conn.fetchrow(
                "SELECT api_url, api_token FROM hosts WHERE name = $1", stack.config.host_name
            )
        finally:
            await conn.close()

    return asyncio.run(fetch())
