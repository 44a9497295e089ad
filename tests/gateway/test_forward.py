"""The gateway in bearer mode, end to end: a real client, the real gateway under Granian, and
a real upstream (``tests/gateway/upstream.py``) reporting what reached it."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import time
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from tests.gateway.servers import Server, StartGateway, free_port

HEX_ID = re.compile(r"[0-9a-f]{32}")


def seen_headers(echo: dict[str, Any]) -> list[tuple[str, str]]:
    return [(name, value) for name, value in echo["headers"]]


def seen(echo: dict[str, Any], name: str) -> list[str]:
    return [value for key, value in echo["headers"] if key == name]


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE"])
def test_method_path_headers_and_body_reach_the_core(client: httpx.Client, method: str) -> None:
    body = b"" if method == "GET" else b'{"name":"x"}'
    response = client.request(
        method,
        "/v1/sandboxes/abc",
        content=body,
        headers={"authorization": "Bearer dnah_k", "content-type": "application/json", "x-custom": "1"},
    )
    assert response.status_code == 200
    echo = response.json()
    assert echo["method"] == method
    assert echo["raw_path"] == "/v1/sandboxes/abc"
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert echo["body_bytes"] == len(body)
    assert seen(echo, "authorization") == ["Bearer dnah_k"]
    assert seen(echo, "x-custom") == ["1"]
    assert seen(echo, "content-type") == ["application/json"]
    assert seen(echo, "content-length") == ([str(len(body))] if body else [])


def test_binary_body_arrives_intact(client: httpx.Client) -> None:
    body = bytes(range(256)) * 4096 + os.urandom(12345)
    response = client.put("/v1/blob", content=body, headers={"content-type": "application/octet-stream"})
    echo = response.json()
    assert echo["body_bytes"] == len(body)
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_chunked_upload_is_streamed_through(client: httpx.Client) -> None:
    chunks = [os.urandom(64 * 1024) for _ in range(128)]
    response = client.post("/v1/upload", content=iter(chunks))  # no length: chunked
    echo = response.json()
    assert echo["body_bytes"] == 8 * 1024 * 1024
    assert echo["body_sha256"] == hashlib.sha256(b"".join(chunks)).hexdigest()
    assert seen(echo, "transfer-encoding") == ["chunked"]


def test_query_and_encoded_path_pass_unchanged(client: httpx.Client) -> None:
    response = client.get("/v1/files/a%2Fb%20c?tag=1&tag=2&empty=&q=a+b%20c&path=%2Fhome%2Fx")
    echo = response.json()
    assert echo["raw_path"] == "/v1/files/a%2Fb%20c"
    assert echo["query"] == "tag=1&tag=2&empty=&q=a+b%20c&path=%2Fhome%2Fx"


def test_repeated_request_headers_keep_their_order(client: httpx.Client) -> None:
    response = client.get("/v1/x", headers=[("x-multi", "1"), ("x-other", "a"), ("x-multi", "2")])
    echo = response.json()
    assert seen(echo, "x-multi") == ["1", "2"]


def test_repeated_response_headers_are_all_relayed(client: httpx.Client) -> None:
    response = client.get("/cookies")
    assert response.headers.get_list("set-cookie") == [
        "a=1; Path=/; SameSite=lax",
        "b=2; Path=/; SameSite=lax",
    ]


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 409, 413, 422, 429, 500, 502, 503])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_error_statuses_and_bodies_pass_through(client: httpx.Client, status: int, method: str) -> None:
    response = client.request(method, f"/status/{status}", content=b"{}" if method == "POST" else b"")
    assert response.status_code == status
    assert response.json() == {"statusCode": status, "message": "upstream says no", "code": "nope"}
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-upstream"] == "yes"
    assert response.headers["www-authenticate"] == 'Bearer realm="dnah"'


@pytest.mark.parametrize("status", [204, 304])
def test_bodyless_statuses(client: httpx.Client, status: int) -> None:
    response = client.get(f"/status/{status}")
    assert response.status_code == status
    assert response.content == b""


def test_head_keeps_the_length(client: httpx.Client) -> None:
    response = client.head("/download/1000")
    assert response.status_code == 200
    assert response.headers["content-length"] == "1000"
    assert response.content == b""


@pytest.mark.parametrize(
    ("method", "client_path", "core_path"),
    [
        ("POST", "/sandbox/sb1/toolbox/process/execute", "/toolbox/sb1/process/execute"),
        ("GET", "/sandbox/sb1/toolbox/files?path=/home/daytona", "/toolbox/sb1/files"),
        ("DELETE", "/sandbox/sb1/toolbox/git/branches", "/toolbox/sb1/git/branches"),
        ("PUT", "/sandbox/sb1/toolbox/some/new/route", "/toolbox/sb1/some/new/route"),
        ("GET", "/sandbox/sb1/toolbox-proxy-url", "/sandbox/sb1/toolbox-proxy-url"),
        ("POST", "/sandbox/sb1/start", "/sandbox/sb1/start"),
        ("GET", "/openapi.json", "/openapi.json"),
    ],
)
def test_toolbox_paths_are_mapped(
    client: httpx.Client, method: str, client_path: str, core_path: str
) -> None:
    response = client.request(method, client_path, content=b"payload" if method != "GET" else b"")
    echo = response.json()
    assert echo["method"] == method
    assert echo["raw_path"] == core_path
    assert echo["query"] == client_path.partition("?")[2]


def test_request_id_is_minted_and_propagated(client: httpx.Client, gateway_server: Server) -> None:
    response = client.post("/v1/sandboxes", content=b"{}")
    request_id = response.headers["x-request-id"]
    assert HEX_ID.fullmatch(request_id)
    assert seen(response.json(), "x-request-id") == [request_id]
    entry = gateway_server.log_entry(request_id)
    assert entry["event"] == "request"
    assert entry["service"] == "gateway"
    assert entry["method"] == "POST"
    assert entry["path"] == "/v1/sandboxes"
    assert entry["status"] == 200
    assert isinstance(entry["duration_ms"], float)
    assert entry["duration_ms"] > 0


def test_client_request_id_is_kept(client: httpx.Client) -> None:
    response = client.get("/v1/x", headers={"x-request-id": "agent-run-42.step:7"})
    assert response.headers.get_list("x-request-id") == ["agent-run-42.step:7"]
    assert seen(response.json(), "x-request-id") == ["agent-run-42.step:7"]


def test_unusable_request_id_is_replaced(client: httpx.Client) -> None:
    response = client.get("/v1/x", headers={"x-request-id": "a b; drop table"})
    request_id = response.headers["x-request-id"]
    assert HEX_ID.fullmatch(request_id)
    assert seen(response.json(), "x-request-id") == [request_id]


async def test_concurrent_requests_keep_their_own_request_ids(gateway_server: Server) -> None:
    """Each request's id is bound in its own context: no line or header picks up another's."""
    async with httpx.AsyncClient(base_url=gateway_server.url, timeout=30) as client:
        responses = await asyncio.gather(
            *(
                client.post(f"/v1/c/{i}", content=b"x" * i, headers={"x-request-id": f"id-{i}"})
                for i in range(40)
            )
        )
    for i, response in enumerate(responses):
        assert response.headers["x-request-id"] == f"id-{i}"
        assert seen(response.json(), "x-request-id") == [f"id-{i}"]
        assert response.json()["raw_path"] == f"/v1/c/{i}"
        assert gateway_server.log_entry(f"id-{i}")["path"] == f"/v1/c/{i}"


def test_forwarding_headers_are_set_by_the_gateway(client: httpx.Client, gateway_server: Server) -> None:
    response = client.get("/v1/x", headers={"x-forwarded-host": "spoofed", "x-forwarded-proto": "gopher"})
    echo = response.json()
    assert seen(echo, "x-forwarded-host") == [gateway_server.url.removeprefix("http://")]
    assert seen(echo, "x-forwarded-proto") == ["http"]


def test_hop_by_hop_request_headers_are_dropped(client: httpx.Client, upstream: Server) -> None:
    response = client.post(
        "/v1/x",
        content=b"body",
        headers=[
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "for the gateway only"),
            ("te", "trailers"),
            ("trailers", "x-sum"),
            ("proxy-authorization", "Basic c2VjcmV0"),
            ("x-public", "yes"),
        ],
    )
    echo = response.json()
    names = {name for name, _ in seen_headers(echo)}
    assert names.isdisjoint(
        {"keep-alive", "x-private", "te", "trailers", "proxy-authorization", "connection"}
    )
    assert seen(echo, "x-public") == ["yes"]
    assert seen(echo, "host") == [upstream.url.removeprefix("http://")]
    assert seen(echo, "content-length") == ["4"]


def test_hop_by_hop_response_headers_are_dropped(client: httpx.Client) -> None:
    response = client.get("/hop-by-hop")
    for name in ("keep-alive", "proxy-authenticate", "trailers", "x-private"):
        assert name not in response.headers
    assert response.headers["x-kept"] == "yes"
    [request_id] = response.headers.get_list("x-request-id")
    assert HEX_ID.fullmatch(request_id)  # the gateway's, not the upstream's "set-by-upstream"


def test_response_is_relayed_as_it_is_produced(client: httpx.Client) -> None:
    """The first chunk reaches the client while the core is still working on the second."""
    started = time.monotonic()
    with client.stream("GET", "/drip", params={"pause": "1.0"}) as response:
        chunks = response.iter_raw()
        assert next(chunks) == b"first\n"
        first_at = time.monotonic() - started
        assert b"".join(chunks) == b"second\n"
        done_at = time.monotonic() - started
    assert first_at < 0.5
    assert done_at >= 1.0


def test_dot_segments_are_refused(gateway_server: Server) -> None:
    # httpx itself would resolve "..", so the raw request goes over a socket.
    raw = _raw_exchange(
        gateway_server, b"GET /sandbox/x/toolbox/../../v1/api-keys HTTP/1.1\r\nhost: gw\r\n\r\n"
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert json.loads(body) == {
        "statusCode": 400,
        "message": "path has . or .. segments",
        "code": "invalid_path",
    }


def _raw_exchange(server: Server, request: bytes) -> bytes:
    async def go() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", int(server.url.rsplit(":", 1)[1]))
        writer.write(request.replace(b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n", 1))
        data = await reader.read()
        writer.close()
        return data

    return asyncio.run(go())


def test_health_reports_the_core(client: httpx.Client) -> None:
    response = client.get("/health", headers={"x-request-id": "probe-1"})
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "core": "ok"}
    assert response.headers["x-request-id"] == "probe-1"


def test_health_when_the_core_is_unhealthy(client: httpx.Client, upstream: Server) -> None:
    httpx.put(upstream.url + "/control/health/503")
    try:
        response = client.get("/health")
    finally:
        httpx.put(upstream.url + "/control/health/200")
    assert response.status_code == 503
    assert response.json() == {"status": "degraded", "core": "unhealthy"}


def test_paths_under_health_are_forwarded(client: httpx.Client) -> None:
    assert client.get("/health/deep").json()["raw_path"] == "/health/deep"


def test_core_down(start_gateway: StartGateway) -> None:
    gateway = start_gateway(f"http://127.0.0.1:{free_port()}")
    with httpx.Client(base_url=gateway.url) as client:
        response = client.post("/v1/sandboxes", content=b"{}", headers={"x-request-id": "down-1"})
        assert response.status_code == 502
        assert response.json() == {
            "statusCode": 502,
            "message": "the core is unreachable",
            "code": "upstream_unavailable",
        }
        assert response.headers["x-request-id"] == "down-1"
        entry = gateway.log_entry("down-1")
        assert (entry["status"], entry["error"], entry["level"]) == (502, "upstream_unavailable", "warning")

        health = client.get("/health")
        assert health.status_code == 503
        assert health.json() == {"status": "degraded", "core": "unreachable"}


def test_core_too_slow(start_gateway: StartGateway, upstream: Server) -> None:
    gateway = start_gateway(upstream.url, DNAH_GATEWAY_UPSTREAM_TIMEOUT_S="0.5")
    with httpx.Client(base_url=gateway.url) as client:
        started = time.monotonic()
        response = client.get("/slow", params={"seconds": "3"})
        assert time.monotonic() - started < 2.0
        assert response.status_code == 504
        assert response.json() == {
            "statusCode": 504,
            "message": "the core did not answer within 0.5 s",
            "code": "upstream_timeout",
        }
        assert HEX_ID.fullmatch(response.headers["x-request-id"])

        # Within the timeout, the same gateway answers normally.
        assert client.get("/slow", params={"seconds": "0.1"}).json() == {"slept": "0.1"}


def test_core_stalls_mid_body(start_gateway: StartGateway, upstream: Server) -> None:
    """Once the status is out, a silent core can only be reported by cutting the body short."""
    gateway = start_gateway(upstream.url, DNAH_GATEWAY_UPSTREAM_TIMEOUT_S="0.5")
    with httpx.Client(base_url=gateway.url) as client:
        with client.stream("GET", "/stall", params={"seconds": "3"}) as response:
            assert response.status_code == 200
            with pytest.raises(httpx.RemoteProtocolError):
                response.read()
        entry = gateway.log_entry(response.headers["x-request-id"])
        assert (entry["status"], entry["error"]) == (200, "upstream_broken")


def test_websocket_upgrades_are_checked_and_refusals_relayed(
    start_gateway: StartGateway, upstream: Server
) -> None:
    """An upgrade is vetted like a request (``.``/``..`` segments, ``/internal``) and forwarded;
    an upstream that does not accept it has its answer relayed as the upgrade's answer (the
    terminals themselves are tested against the real core in ``test_websockets.py``)."""
    gateway = start_gateway(upstream.url, websockets=True)
    base = gateway.url.replace("http://", "ws://")
    cases = [("/internal/hosts", 404, "not_found"), ("/v1/%2e%2e/internal", 400, "invalid_path")]
    for path, status, code in cases:
        with pytest.raises(InvalidStatus) as refused:
            ws_connect(base + path, proxy=None, additional_headers={"x-request-id": "ws-probe"}).close()
        response = refused.value.response
        assert response.status_code == status, path
        assert json.loads(response.body or b"{}")["code"] == code
        assert response.headers["x-request-id"] == "ws-probe"
    # The stand-in core answers the upgrade as a plain GET (200, its echo): relayed as is.
    with pytest.raises(InvalidStatus) as relayed:
        ws_connect(base + "/sandbox/sb1/toolbox/process/pty/x/connect", proxy=None).close()
    assert relayed.value.response.status_code == 200
    assert (
        json.loads(relayed.value.response.body or b"{}")["raw_path"] == "/toolbox/sb1/process/pty/x/connect"
    )
    assert "unhandled_error" not in gateway.log.read_text()
