"""E2B's data plane at the edge (``gateway/e2b.py``, ``gateway/preview.py``) and E2B's API key
in every mode (``gateway/payments.py``, ``gateway/ratelimit.py``): the real gateway under
Granian in front of ``tests/gateway/upstream.py``, whose echo shows the path and headers that
reached "the core" and whose request log shows what did not.

A request naming a sandbox in ``E2b-Sandbox-Id``/``E2b-Sandbox-Port`` or in a
``{port}-{id}.{domain}`` host goes to ``/envd/{id}{path}`` (envd's port) or
``/preview/{id}/{port}{path}`` (any other), without the E2B headers and the client's
``x-dnah-*`` ones, with the sandbox's tokens; a malformed or contradictory one is a 400 that
reaches nothing; bodies stream both ways. In the payment modes envd's calls are paid, its
streams need an API key the gateway checks, and ``X-API-KEY`` counts as a bearer key.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from redis import Redis as SyncRedis
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from tests.gateway.redis_server import redis_url
from tests.gateway.servers import Server, StartGateway, gateway_env, start
from tests.support import wait_for

__all__ = ["redis_url"]  # fixtures used by this module

DOMAIN = "e2b.test"
ENVD = 49983
EDGE_TOKEN = "e" * 40
MPP_SECRET = "s" * 48


@pytest.fixture(scope="module")
def gateway(upstream: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Bearer mode, preview domain set, no Redis (so no rate limits)."""
    log = tmp_path_factory.mktemp("e2b") / "gateway.log"
    server = start("gateway.app:create_app", gateway_env(upstream.url, DNAH_PREVIEW_DOMAIN=DOMAIN), log)
    yield server
    server.stop()


@pytest.fixture
def client(gateway: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=30) as c:
        yield c


def sandbox() -> str:
    return "sbx-" + uuid.uuid4().hex[:12]


def e2b(sid: str, port: int | None = ENVD, more: dict[str, str] | None = None) -> dict[str, str]:
    headers = {"e2b-sandbox-id": sid, **(more or {})}
    if port is not None:
        headers["e2b-sandbox-port"] = str(port)
    return headers


def seen(upstream: Server) -> list[str]:
    answer: list[str] = httpx.get(upstream.url + "/control/seen", timeout=10).json()["seen"]
    return answer


def reached(upstream: Server, marker: str) -> list[str]:
    return [line for line in seen(upstream) if marker in line]


def header(echo: dict[str, Any], name: str) -> list[str]:
    return [value for key, value in echo["headers"] if key == name]


def names(echo: dict[str, Any]) -> set[str]:
    return {key for key, _ in echo["headers"]}


FORGED = {
    "x-dnah-payer": "0x" + "11" * 20,
    "x-dnah-payment": "pay_1",
    "x-dnah-preview-prefix": "/evil",
    "x-dnah-other": "1",
    "x-forwarded-prefix": "/evil",
}


# routing by header --------------------------------------------------------------------------


def test_envd_by_header_goes_to_the_envd_path_with_the_tokens(client: httpx.Client) -> None:
    sid = sandbox()
    headers = e2b(sid, more={"x-access-token": "envd-tok", "e2b-traffic-access-token": "traffic", **FORGED})
    response = client.post("/files?path=%2Fhome%2Fuser%2Fa%20b", content=b"hello", headers=headers)
    assert response.status_code == 200, response.text
    echo = response.json()
    assert echo["raw_path"] == f"/envd/{sid}/files"
    assert echo["query"] == "path=%2Fhome%2Fuser%2Fa%20b"
    assert echo["body_bytes"] == 5
    assert header(echo, "x-access-token") == ["envd-tok"]
    assert header(echo, "e2b-traffic-access-token") == ["traffic"]
    assert not names(echo) & {"e2b-sandbox-id", "e2b-sandbox-port", *FORGED}


def test_without_a_port_header_it_is_envd(client: httpx.Client) -> None:
    sid = sandbox()
    echo = client.post("/process.Process/List", json={}, headers=e2b(sid, None)).json()
    assert echo["raw_path"] == f"/envd/{sid}/process.Process/List"


def test_health_with_the_header_is_envds_not_the_gateways(client: httpx.Client) -> None:
    sid = sandbox()
    echo = client.get("/health", headers=e2b(sid)).json()
    assert echo["raw_path"] == f"/envd/{sid}/health"
    assert client.get("/health").json()["status"] == "ok"  # without it: the gateway's own


def test_other_ports_by_header_are_preview_traffic(client: httpx.Client) -> None:
    sid = sandbox()
    headers = e2b(sid, 49999, more={"x-access-token": "envd-tok", "x-dnah-preview-token": "pt", **FORGED})
    echo = client.post("/execute", json={"code": "1+1"}, headers=headers).json()
    assert echo["raw_path"] == f"/preview/{sid}/49999/execute"
    assert header(echo, "x-dnah-preview-prefix") == [""]  # the server sees its own paths
    assert header(echo, "x-access-token") == ["envd-tok"]
    assert header(echo, "x-dnah-preview-token") == ["pt"]
    assert not names(echo) & {"e2b-sandbox-id", "e2b-sandbox-port", "x-dnah-payer", "x-dnah-other"}


# routing by host ----------------------------------------------------------------------------


def test_envd_by_host(client: httpx.Client) -> None:
    sid = sandbox()
    host = f"{ENVD}-{sid}.{DOMAIN}"
    echo = client.get("/files?path=a", headers={"host": host, "x-access-token": "t", **FORGED}).json()
    assert echo["raw_path"] == f"/envd/{sid}/files"
    assert header(echo, "x-access-token") == ["t"]
    assert header(echo, "x-forwarded-host") == [host]
    assert not names(echo) & set(FORGED)


def test_other_ports_by_host_stay_preview(client: httpx.Client) -> None:
    sid = sandbox()
    echo = client.get("/contexts", headers={"host": f"49999-{sid}.{DOMAIN}"}).json()
    assert echo["raw_path"] == f"/preview/{sid}/49999/contexts"
    assert header(echo, "x-dnah-preview-prefix") == [""]


def test_the_api_host_under_the_domain_is_the_api(client: httpx.Client) -> None:
    """``api.{domain}``: where the SDKs send control-plane calls when given only E2B_DOMAIN."""
    echo = client.post("/v2/sandboxes", json={}, headers={"host": f"api.{DOMAIN}", "x-api-key": "k"}).json()
    assert echo["raw_path"] == "/v2/sandboxes"
    assert header(echo, "x-api-key") == ["k"]
    sid = sandbox()
    routed = client.get("/files", headers={"host": f"api.{DOMAIN}", **e2b(sid)}).json()
    assert routed["raw_path"] == f"/envd/{sid}/files"


def test_host_and_headers_that_agree_are_one_route(client: httpx.Client) -> None:
    sid = sandbox()
    echo = client.get("/files", headers={"host": f"{ENVD}-{sid}.{DOMAIN}", **e2b(sid)}).json()
    assert echo["raw_path"] == f"/envd/{sid}/files"


# refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize("other", ["sandbox", "port"])
def test_a_header_naming_another_target_than_the_host_is_400(
    client: httpx.Client, upstream: Server, other: str
) -> None:
    """Smuggling: the host says one sandbox (or port), the headers another; neither is used."""
    sid, marker = sandbox(), uuid.uuid4().hex
    headers = e2b(sandbox()) if other == "sandbox" else e2b(sid, 49999)
    response = client.get(f"/m-{marker}", headers={"host": f"{ENVD}-{sid}.{DOMAIN}", **headers})
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "e2b_routing_conflict"
    assert response.headers["x-request-id"]
    assert reached(upstream, marker) == []


@pytest.mark.parametrize(
    ("sid", "port"),
    [
        ("", "49983"),
        ("a/b", "49983"),
        ("-leading", "49983"),
        ("x" * 129, "49983"),
        ("sbx%2F..", "49983"),
        ("sbx-1", "abc"),
        ("sbx-1", "0"),
        ("sbx-1", "65536"),
        ("sbx-1", ""),
        ("sbx-1", "-1"),
    ],
)
def test_malformed_e2b_headers_are_400_and_reach_nothing(
    client: httpx.Client, upstream: Server, sid: str, port: str
) -> None:
    marker = uuid.uuid4().hex
    response = client.get(f"/m-{marker}", headers={"e2b-sandbox-id": sid, "e2b-sandbox-port": port})
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_e2b_headers"
    assert reached(upstream, marker) == []


def raw_exchange(server: Server, request: bytes) -> bytes:
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=15) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


@pytest.mark.parametrize("name", ["E2b-Sandbox-Id", "E2b-Sandbox-Port"])
def test_a_repeated_e2b_header_is_400(gateway: Server, upstream: Server, name: str) -> None:
    marker = uuid.uuid4().hex
    value = sandbox() if name == "E2b-Sandbox-Id" else str(ENVD)
    head = (
        f"GET /m-{marker} HTTP/1.1\r\nHost: gw\r\nE2b-Sandbox-Id: {sandbox()}\r\n"
        f"E2b-Sandbox-Port: {ENVD}\r\n{name}: {value}\r\nConnection: close\r\n\r\n"
    )
    answer = raw_exchange(gateway, head.encode())
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"invalid_e2b_headers" in answer
    assert reached(upstream, marker) == []


@pytest.mark.parametrize("target", ["/../v1/sandboxes", "/files/%2e%2e/%2e%2e/v1/sandboxes"])
def test_dot_segments_cannot_leave_the_sandbox(gateway: Server, upstream: Server, target: str) -> None:
    sid = sandbox()
    head = f"GET {target} HTTP/1.1\r\nHost: gw\r\nE2b-Sandbox-Id: {sid}\r\nConnection: close\r\n\r\n"
    answer = raw_exchange(gateway, head.encode())
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"invalid_path" in answer
    assert reached(upstream, sid) == []


# streaming ----------------------------------------------------------------------------------


def test_request_and_response_stream_through_unbuffered(gateway: Server, upstream: Server) -> None:
    """A Connect stream through the header route: the core sees the first request chunk before
    the client sends the second, and the client gets the first answer message while the core
    still holds the second back. A gateway that buffered either direction would stall here."""
    sid, token = sandbox(), uuid.uuid4().hex
    host, port = gateway.url.removeprefix("http://").split(":")

    def received() -> int:
        answer: int = httpx.get(f"{upstream.url}/control/received/{token}", timeout=10).json()["bytes"]
        return answer

    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            (
                f"POST /held/{token} HTTP/1.1\r\nHost: gw\r\nE2b-Sandbox-Id: {sid}\r\n"
                f"E2b-Sandbox-Port: {ENVD}\r\nContent-Type: application/connect+json\r\n"
                "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            ).encode()
            + b"7\r\nchunk-1\r\n"
        )
        wait_for(lambda: received() == 7, what="the first request chunk at the core")
        sock.sendall(b"7\r\nchunk-2\r\n0\r\n\r\n")
        wait_for(lambda: received() == 14, what="the whole request body at the core")
        data = b""
        while b'{"first":1}' not in data:
            chunk = sock.recv(65536)
            assert chunk, f"the connection closed before the first message: {data!r}"
            data += chunk
        assert data.startswith(b"HTTP/1.1 200")
        assert b"\x02\x00\x00\x00\x02{}" not in data  # the end message is still held back
        httpx.post(f"{upstream.url}/control/release/{token}", timeout=10).raise_for_status()
        while chunk := sock.recv(65536):
            data += chunk
    assert b"\x02\x00\x00\x00\x02{}" in data
    assert reached(upstream, token) == [f"POST /envd/{sid}/held/{token}"]


# the payment modes --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def paying(
    upstream: Server, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Server]]:
    """A ``payment`` and a ``both`` gateway in front of the upstream (the chain is never asked:
    nothing here pays)."""
    servers: dict[str, Server] = {}
    logs = tmp_path_factory.mktemp("e2b-paying")
    for mode in ("payment", "both"):
        env = gateway_env(
            upstream.url,
            DNAH_GATEWAY_MODE=mode,
            DNAH_PREVIEW_DOMAIN=DOMAIN,
            DNAH_REDIS_URL=redis_url,
            DNAH_EDGE_TOKEN=EDGE_TOKEN,
            DNAH_MPP_SECRET=MPP_SECRET,
            DNAH_PAYMENT_NETWORK="devnet",
            DNAH_PAYMENT_RPC_URL="http://127.0.0.1:9/",
            DNAH_PAYMENT_RECIPIENT="0x" + "ab" * 20,
        )
        servers[mode] = start("gateway.app:create_app", env, logs / f"{mode}.log")
    yield servers
    for server in servers.values():
        server.stop()


STREAMS = [
    "/process.Process/Start",
    "/process.Process/Connect",
    "/process.Process/StreamInput",
    "/filesystem.Filesystem/WatchDir",
]


@pytest.mark.parametrize("mode", ["payment", "both"])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/files"),
        ("POST", "/files"),
        ("POST", "/process.Process/List"),
        ("POST", "/filesystem.Filesystem/Stat"),
    ],
)
def test_envd_calls_are_paid_per_call(
    paying: dict[str, Server], upstream: Server, mode: str, method: str, path: str
) -> None:
    sid = sandbox()
    with httpx.Client(base_url=paying[mode].url, timeout=30) as c:
        by_header = c.request(method, path, content=b"{}", headers=e2b(sid, more={"x-access-token": "t"}))
        by_host = c.request(method, path, content=b"{}", headers={"host": f"{ENVD}-{sid}.{DOMAIN}"})
        quote = c.get("/__mpp/quote", params={"method": method, "path": f"/envd/{sid}{path}"}).json()
    for response in (by_header, by_host):
        assert response.status_code == 402, response.text
        assert response.headers["www-authenticate"].startswith("Payment ")
    assert (quote["amount"], quote["served"]) == ("100", True)
    assert reached(upstream, sid) == []


def test_envd_health_is_free(paying: dict[str, Server]) -> None:
    sid = sandbox()
    response = httpx.get(paying["payment"].url + "/health", headers=e2b(sid), timeout=30)
    assert response.status_code == 200 and "www-authenticate" not in response.headers
    assert response.json()["raw_path"] == f"/envd/{sid}/health"


def test_code_interpreter_traffic_is_never_priced(paying: dict[str, Server]) -> None:
    sid = sandbox()
    response = httpx.post(
        paying["payment"].url + "/execute", json={"code": "1"}, headers=e2b(sid, 49999), timeout=30
    )
    assert response.status_code == 200 and "www-authenticate" not in response.headers
    assert response.json()["raw_path"] == f"/preview/{sid}/49999/execute"


@pytest.mark.parametrize("mode", ["payment", "both"])
@pytest.mark.parametrize("path", STREAMS)
def test_a_stream_without_an_api_key_is_refused(
    paying: dict[str, Server], upstream: Server, mode: str, path: str
) -> None:
    sid = sandbox()
    response = httpx.post(
        paying[mode].url + path, content=b"\x00\x00\x00\x00\x02{}", headers=e2b(sid), timeout=30
    )
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["code"] == "api_key_required"
    assert "X-API-KEY" in body["message"] and "cannot be paid per call" in body["message"]
    assert "www-authenticate" not in response.headers
    assert reached(upstream, sid) == []


@pytest.mark.parametrize("spelling", ["x-api-key", "authorization"])
def test_a_stream_with_a_key_of_the_sandboxs_org_goes_through(
    paying: dict[str, Server], upstream: Server, spelling: str
) -> None:
    sid = sandbox()
    key = {"x-api-key": "status-200"} if spelling == "x-api-key" else {"authorization": "Bearer status-200"}
    response = httpx.post(
        paying["payment"].url + "/process.Process/Start",
        content=b"\x00\x00\x00\x00\x02{}",
        headers={**e2b(sid, more={"x-access-token": "t"}), **key},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.json()["raw_path"] == f"/envd/{sid}/process.Process/Start"
    assert header(response.json(), "x-access-token") == ["t"]
    # the key was checked against the sandbox first, with the key as a bearer key
    assert reached(upstream, sid) == [f"GET /v1/sandboxes/{sid}", f"POST /envd/{sid}/process.Process/Start"]


@pytest.mark.parametrize(
    ("status", "answer", "code"),
    [(401, 401, "unauthorized"), (404, 404, "not_found"), (500, 502, "upstream_unavailable")],
)
def test_a_stream_with_a_key_the_core_refuses_is_refused(
    paying: dict[str, Server], upstream: Server, status: int, answer: int, code: str
) -> None:
    sid = sandbox()
    response = httpx.post(
        paying["both"].url + "/filesystem.Filesystem/WatchDir",
        content=b"{}",
        headers={**e2b(sid), "x-api-key": f"status-{status}"},
        timeout=30,
    )
    assert response.status_code == answer, response.text
    assert response.json()["code"] == code
    assert reached(upstream, sid) == [f"GET /v1/sandboxes/{sid}"]  # the check only


def test_both_mode_an_api_key_pays_for_envd_calls_only_if_the_core_takes_it(
    paying: dict[str, Server], upstream: Server
) -> None:
    sid, other = sandbox(), sandbox()
    with httpx.Client(base_url=paying["both"].url, timeout=30) as c:
        taken = c.post("/process.Process/List", json={}, headers={**e2b(sid), "x-api-key": "status-200"})
        refused = c.post("/process.Process/List", json={}, headers={**e2b(other), "x-api-key": "status-401"})
    assert taken.status_code == 200 and taken.json()["raw_path"] == f"/envd/{sid}/process.Process/List"
    assert refused.status_code == 402 and refused.headers["www-authenticate"].startswith("Payment ")
    assert reached(upstream, other) == [f"GET /v1/sandboxes/{other}"]


def test_both_mode_x_api_key_stands_in_for_a_payment(paying: dict[str, Server], upstream: Server) -> None:
    """As ``Authorization: Bearer`` does: the request goes to the core, which checks the key."""
    marker = uuid.uuid4().hex
    with httpx.Client(base_url=paying["both"].url, timeout=30) as c:
        unpaid = c.post("/sandbox", json={"name": marker})
        keyed = c.post("/sandbox", json={"name": marker}, headers={"x-api-key": "dnah_k"})
    assert unpaid.status_code == 402
    assert keyed.status_code == 200, keyed.text
    assert header(keyed.json(), "x-api-key") == ["dnah_k"]


def test_x_api_key_spends_the_keys_rate_limit_budget(
    start_gateway: StartGateway, upstream: Server, redis_url: str
) -> None:
    with SyncRedis.from_url(redis_url) as r:
        r.flushall()
    gateway = start_gateway(upstream.url, DNAH_REDIS_URL=redis_url, DNAH_RATELIMIT_API_KEY="2/1h")
    with httpx.Client(base_url=gateway.url, timeout=30) as c:
        spent = [c.get("/v2/sandboxes", headers={"x-api-key": "dnah_e2b"}).status_code for _ in range(3)]
        refused = c.get("/v2/sandboxes", headers={"x-api-key": "dnah_e2b"})
        # the same key spelled as a bearer key shares the bucket; another key has its own
        bearer = c.get("/v2/sandboxes", headers={"authorization": "Bearer dnah_e2b"})
        other = c.get("/v2/sandboxes", headers={"x-api-key": "dnah_other"})
    assert spent == [200, 200, 429]
    assert "API key" in refused.json()["message"]
    assert bearer.status_code == 429
    assert other.status_code == 200


def test_x_api_key_opens_a_terminal_in_payment_mode(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A WebSocket cannot be paid per call; an API key opens it, spelled either way."""
    logs = tmp_path_factory.mktemp("e2b-ws")
    ws_upstream = start(
        "tests.gateway.upstream:create_app", dict(os.environ), logs / "up.log", websockets=True
    )
    env = gateway_env(
        ws_upstream.url,
        DNAH_GATEWAY_MODE="payment",
        DNAH_REDIS_URL=redis_url,
        DNAH_EDGE_TOKEN=EDGE_TOKEN,
        DNAH_MPP_SECRET=MPP_SECRET,
        DNAH_PAYMENT_NETWORK="devnet",
        DNAH_PAYMENT_RPC_URL="http://127.0.0.1:9/",
        DNAH_PAYMENT_RECIPIENT="0x" + "ab" * 20,
    )
    gateway = start("gateway.app:create_app", env, logs / "gw.log", websockets=True)
    try:
        uri = gateway.url.replace("http", "ws") + f"/v1/sandboxes/{sandbox()}/terminal"
        with pytest.raises(InvalidStatus) as refused:
            ws_connect(uri, open_timeout=20, proxy=None)
        assert refused.value.response.status_code == 401
        with ws_connect(uri, additional_headers={"x-api-key": "dnah_k"}, open_timeout=20, proxy=None) as conn:
            report = json.loads(conn.recv(timeout=15))
            assert ["x-api-key", "dnah_k"] in report["headers"]
    finally:
        gateway.stop()
        ws_upstream.stop()
