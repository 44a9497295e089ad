"""The guard and Granian's flags together, against raw sockets: every hostile request is a
clean 4xx or a closed connection, never a 500 or a connection held open."""

from __future__ import annotations

import contextlib
import select
import socket
import time

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from tests.guard.conftest import Edge
from tests.guard.raw import Answer, connect, post_head, read_answer, request
from tests.support import wait_for

DEEP = b'{"labels": ' + b"[" * 1000 + b"]" * 1000 + b"}"


def assert_refused(answer: Answer, status: int, code: str) -> None:
    assert answer.status == status, answer
    assert answer.json()["code"] == code and answer.json()["statusCode"] == status
    assert answer.closed


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", None])
def test_deep_json_is_a_400_whatever_the_declared_type(edge: Edge, content_type: str | None) -> None:
    answer = request(edge.port, post_head("/json", length=len(DEEP), content_type=content_type) + DEEP)
    assert_refused(answer, 400, "bad_request")
    assert "deeper than 64" in answer.json()["message"]


def test_json_at_the_depth_limit_reaches_the_handler(edge: Edge) -> None:
    body = b"[" * 64 + b"]" * 64
    answer = request(edge.port, post_head("/json", length=len(body), content_type="application/json") + body)
    assert answer.status == 200 and answer.json() == {"bytes": 128}


def test_invalid_utf8_is_a_400(edge: Edge) -> None:
    body = b'{"env": {"A": "\xff\xfe"}}'
    answer = request(edge.port, post_head("/json", length=len(body), content_type="application/json") + body)
    assert_refused(answer, 400, "bad_request")
    assert "UTF-8" in answer.json()["message"]


def test_invalid_json_is_left_to_the_handler(edge: Edge) -> None:
    answer = request(edge.port, post_head("/json", length=3, content_type="application/json") + b"{x}")
    assert answer.status == 400 and answer.json()["code"] == "handler"


def test_a_byte_stream_passes_untouched_unless_declared_json(edge: Edge) -> None:
    with httpx.Client(base_url=edge.url) as client:
        raw = client.post(
            "/stream/up", content=DEEP + b"\xff", headers={"content-type": "application/octet-stream"}
        )
        assert raw.status_code == 200 and raw.json() == {"bytes": len(DEEP) + 1}
        declared = client.post("/stream/up", content=DEEP, headers={"content-type": "application/json"})
        assert declared.status_code == 400


def test_oversized_bodies_are_413(edge: Edge) -> None:
    announced = request(edge.port, post_head("/stream/x", length=10 * 1024**3))
    assert_refused(announced, 413, "payload_too_large")
    json_announced = request(
        edge.port, post_head("/json", length=2 * 1024**2, content_type="application/json")
    )
    assert_refused(json_announced, 413, "payload_too_large")
    with connect(edge.port) as sock:  # chunked: refused the moment it passes 8 MiB
        sock.sendall(post_head("/stream/x"))
        chunk = b"%x\r\n" % (1024 * 1024) + b"a" * (1024 * 1024) + b"\r\n"
        with contextlib.suppress(OSError):  # the server may close while we still send
            for _ in range(9):
                sock.sendall(chunk)
        assert_refused(read_answer(sock), 413, "payload_too_large")


@pytest.mark.parametrize(
    "body",
    [
        b"zz\r\nhello\r\n0\r\n\r\n",  # a size that is not hex
        b"5\r\nhelloXX0\r\n\r\n",  # no CRLF after the chunk
        b"3\r\nhello\r\n0\r\n\r\n",  # a chunk longer than declared
    ],
    ids=["bad-hex", "missing-crlf", "chunk-too-long"],
)
@pytest.mark.parametrize("path", ["/json", "/stream/x"])
def test_malformed_chunked_is_a_400(edge: Edge, body: bytes, path: str) -> None:
    answer = request(edge.port, post_head(path, content_type="application/json") + body)
    assert_refused(answer, 400, "bad_request")


def test_a_truncated_chunked_body_is_a_400_or_a_close(edge: Edge) -> None:
    with connect(edge.port) as sock:
        sock.sendall(post_head("/stream/x") + b"5\r\nhel")
        sock.shutdown(socket.SHUT_WR)
        answer = read_answer(sock)
    assert answer.status in (400, None) and answer.closed


def test_a_stalled_body_is_a_408_and_the_connection_closes(edge: Edge) -> None:
    with connect(edge.port) as sock:
        sock.sendall(post_head("/stream/x", length=10_000) + b"a" * 1000)
        assert_refused(read_answer(sock), 408, "request_timeout")


def test_a_trickle_below_the_minimum_rate_is_a_408(edge: Edge) -> None:
    """A byte every 0.2 s never stalls, but averages 5 bytes/s against a minimum of 1000."""
    with connect(edge.port) as sock:
        sock.sendall(post_head("/stream/x", length=100_000))
        with contextlib.suppress(OSError):
            for _ in range(100):
                sock.sendall(b"a")
                time.sleep(0.2)
                if _readable(sock):
                    break
        assert_refused(read_answer(sock), 408, "request_timeout")


def test_an_honest_slow_upload_outlasts_the_window(edge: Edge) -> None:
    """3 KB/s (minimum 1000) for 4 s: longer than the 1.5 s window, and it succeeds."""
    size = 0
    with connect(edge.port) as sock:
        sock.sendall(post_head("/stream/x", length=12_000))
        for _ in range(40):
            sock.sendall(b"a" * 300)
            size += 300
            time.sleep(0.1)
        answer = read_answer(sock)
    assert answer.status == 200 and answer.json() == {"bytes": size}


def test_a_slow_head_is_cut_off(edge: Edge) -> None:
    with connect(edge.port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n")
        with contextlib.suppress(OSError):
            for n in range(100):
                sock.sendall(b"X-Slow-%d: 1\r\n" % n)
                time.sleep(0.1)
        answer = read_answer(sock)
    assert answer.status is None and answer.closed


def test_an_idle_keep_alive_connection_is_closed(edge: Edge) -> None:
    with connect(edge.port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        first = read_answer(sock)
        assert first.status == 200 and not first.closed
        sock.settimeout(10)
        assert sock.recv(1) == b""  # closed by the server, not by our timeout


@pytest.mark.parametrize(
    "head",
    [
        b"X-Big: " + b"a" * 20_000 + b"\r\n",  # over the 16 KiB buffer
        b"".join(b"X-H%d: v\r\n" % n for n in range(120)),  # over 100 fields
    ],
    ids=["big", "many"],
)
def test_an_oversized_head_is_a_431(edge: Edge, head: bytes) -> None:
    answer = request(edge.port, b"GET / HTTP/1.1\r\nHost: test\r\n" + head + b"\r\n")
    assert answer.status == 431 and answer.closed


def test_h2c_is_not_offered(edge: Edge) -> None:
    """HTTP/2 has limits of its own (16 MiB of headers); the servers speak HTTP/1.1 only."""
    answer = request(edge.port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    assert answer.status != 200


def test_the_per_client_cap_refuses_only_that_address(edge: Edge) -> None:
    """Three open WebSockets (accepted, so inside the app) fill 127.0.0.2's cap of 3."""
    with contextlib.ExitStack() as held:
        for _ in range(3):
            sock = connect(edge.port, source="127.0.0.2")
            held.enter_context(ws_connect(f"ws://127.0.0.1:{edge.port}/ws", sock=sock))
        refused = request(edge.port, post_head("/stream/x", length=2) + b"ok", source="127.0.0.2")
        assert_refused(refused, 429, "too_many_requests")
        assert refused.headers["retry-after"] == "1"
        other = request(edge.port, post_head("/stream/x", length=2) + b"ok", source="127.0.0.3")
        assert other.status == 200
    wait_for(
        lambda: (
            request(edge.port, post_head("/stream/x", length=2) + b"ok", source="127.0.0.2").status == 200
        ),
        what="127.0.0.2 admitted again once its WebSockets closed",
    )


def _readable(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])
