"""Preview routing at the edge (``gateway/preview.py``) and the framing checks in front of every
route (``gateway/framing.py``): the real gateway under Granian in front of
``tests/gateway/upstream.py``, whose request log shows what reached "the core" and what did not.

A preview request goes to the core's ``/preview/{id}/{port}/…`` by host or by path, with
``x-dnah-preview-prefix`` set and the client's ``x-dnah-*`` headers gone; a malformed one is a
400 that reaches nothing; it is never priced in any mode; WebSockets go the same way.
Smuggling-prone requests are refused (or, where Granian already decides the framing, cannot
smuggle a second request past it).
"""

from __future__ import annotations

import json
import os
import re
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from tests.gateway.redis_server import redis_url
from tests.gateway.servers import Server, gateway_env, start

__all__ = ["redis_url"]  # fixtures used by this module

DOMAIN = "preview.test"
EDGE_TOKEN = "e" * 40
MPP_SECRET = "s" * 48


@pytest.fixture(scope="module")
def gateway(upstream: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Bearer mode, preview domain set, no Redis (so no rate limits)."""
    log = tmp_path_factory.mktemp("preview") / "gateway.log"
    server = start("gateway.app:create_app", gateway_env(upstream.url, DNAH_PREVIEW_DOMAIN=DOMAIN), log)
    yield server
    server.stop()


@pytest.fixture
def client(gateway: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=30) as c:
        yield c


def sandbox() -> str:
    return str(uuid.uuid4())


def seen(upstream: Server) -> list[str]:
    """Every request that has reached the upstream so far (``METHOD raw_path?query``)."""
    answer: list[str] = httpx.get(upstream.url + "/control/seen", timeout=10).json()["seen"]
    return answer


def header(echo: dict[str, Any], name: str) -> list[str]:
    return [value for key, value in echo["headers"] if key == name]


def raw_exchange(url: str, request: bytes) -> bytes:
    """Send bytes as they are on one connection and read until the server closes it."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=15) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def statuses(answer: bytes) -> list[int]:
    return [int(code) for code in re.findall(rb"HTTP/1\.[01] (\d{3})", answer)]


# routing ---------------------------------------------------------------------------------------


def test_by_host_the_path_goes_under_the_sandbox_port(client: httpx.Client) -> None:
    sid = sandbox()
    host = f"3000-{sid}.{DOMAIN}"
    response = client.post("/app/page%20x?q=1&r=", content=b"hello", headers={"host": host})
    assert response.status_code == 200, response.text
    echo = response.json()
    assert echo["raw_path"] == f"/preview/{sid}/3000/app/page%20x"
    assert echo["query"] == "q=1&r="
    assert echo["body_bytes"] == 5
    assert header(echo, "x-dnah-preview-prefix") == [""]
    assert header(echo, "x-forwarded-host") == [host]


def test_by_host_the_domain_may_carry_a_port_and_case(client: httpx.Client) -> None:
    sid = sandbox()
    response = client.get("/", headers={"host": f"8080-{sid}.Preview.TEST:8443"})
    assert response.json()["raw_path"] == f"/preview/{sid}/8080/"
    padded = client.get("/", headers={"host": f"0080-{sid}.{DOMAIN}"})
    assert padded.json()["raw_path"] == f"/preview/{sid}/80/"


def test_the_preview_domain_itself_is_api_traffic(client: httpx.Client) -> None:
    response = client.get("/v1/sandboxes", headers={"host": DOMAIN})
    assert response.json()["raw_path"] == "/v1/sandboxes"


def test_by_path_it_goes_as_is_with_its_prefix(client: httpx.Client) -> None:
    sid = sandbox()
    response = client.get(f"/preview/{sid}/8080/a%2Fb/c?x=1")
    echo = response.json()
    assert echo["raw_path"] == f"/preview/{sid}/8080/a%2Fb/c"
    assert echo["query"] == "x=1"
    assert header(echo, "x-dnah-preview-prefix") == [f"/preview/{sid}/8080"]
    bare = client.get(f"/preview/{sid}/8080").json()
    assert bare["raw_path"] == f"/preview/{sid}/8080"


@pytest.mark.parametrize("by", ["host", "path"])
def test_client_dnah_headers_are_dropped_but_the_preview_token(client: httpx.Client, by: str) -> None:
    sid = sandbox()
    url, headers = (
        ("/x", {"host": f"3000-{sid}.{DOMAIN}"}) if by == "host" else (f"/preview/{sid}/3000/x", {})
    )
    forged = {
        "x-dnah-preview-prefix": "/evil",
        "x-dnah-payer": "0x" + "11" * 20,
        "x-dnah-payment": "pay_1",
        "x-dnah-other": "1",
        "x-forwarded-prefix": "/evil",
        "x-dnah-preview-token": "tok",
        "x-daytona-preview-token": "dtok",
    }
    echo = client.get(url, headers={**headers, **forged}).json()
    names = [name for name, _ in echo["headers"]]
    assert header(echo, "x-dnah-preview-prefix") == ["" if by == "host" else f"/preview/{sid}/3000"]
    assert "x-dnah-payer" not in names and "x-dnah-payment" not in names and "x-dnah-other" not in names
    assert "x-forwarded-prefix" not in names
    assert header(echo, "x-dnah-preview-token") == ["tok"]
    assert header(echo, "x-daytona-preview-token") == ["dtok"]


@pytest.mark.parametrize(
    "label",
    [
        "abc-{id}",
        "0-{id}",
        "65536-{id}",
        "3000-",
        "3000",
        "x.3000-{id}",
        "3000-{id}-",
        "3000_{id}",
        "-3000-{id}",
    ],
)
def test_a_malformed_preview_host_is_400_and_reaches_nothing(
    client: httpx.Client, upstream: Server, label: str
) -> None:
    marker = f"/marker-{uuid.uuid4().hex}"
    host = label.format(id=sandbox()) + "." + DOMAIN
    response = client.get(marker, headers={"host": host})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_preview_host"
    assert response.headers["x-request-id"]
    assert not [line for line in seen(upstream) if marker in line]


@pytest.mark.parametrize(
    "path",
    [
        "/preview",
        "/preview/",
        "/preview/{id}",
        "/preview/{id}/",
        "/preview/{id}/abc/",
        "/preview/{id}/0/",
        "/preview/{id}/70000/x",
        "/preview//3000/x",
        "/%70review/{id}/3000/x",
        "/preview%2F{id}/3000/x",
    ],
)
def test_a_malformed_preview_path_is_400_and_reaches_nothing(
    client: httpx.Client, upstream: Server, path: str
) -> None:
    sid = sandbox()
    response = client.get(path.format(id=sid))
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_preview_path"
    assert not [line for line in seen(upstream) if sid in line]


@pytest.mark.parametrize("by", ["host", "path"])
def test_dot_segments_cannot_climb_out_of_the_preview(gateway: Server, upstream: Server, by: str) -> None:
    sid = sandbox()
    if by == "host":
        head = f"GET /../../../v1/sandboxes?{sid} HTTP/1.1\r\nHost: 3000-{sid}.{DOMAIN}\r\n"
    else:
        head = f"GET /preview/{sid}/3000/%2e%2e/%2e%2e/%2e%2e/v1/sandboxes HTTP/1.1\r\nHost: gw\r\n"
    answer = raw_exchange(gateway.url, (head + "Connection: close\r\n\r\n").encode())
    assert statuses(answer) == [400]
    assert b"invalid_path" in answer
    assert not [line for line in seen(upstream) if sid in line]


# never priced ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def paying_gateways(
    upstream: Server, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Server]]:
    """A ``payment`` and a ``both`` gateway in front of the upstream (the chain is never asked:
    nothing here pays)."""
    servers: dict[str, Server] = {}
    logs = tmp_path_factory.mktemp("paying")
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


@pytest.mark.parametrize("mode", ["payment", "both"])
@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE"])
def test_preview_traffic_is_never_priced(paying_gateways: dict[str, Server], mode: str, method: str) -> None:
    url = paying_gateways[mode].url
    sid = sandbox()
    with httpx.Client(base_url=url, timeout=30) as c:
        # the gateway does charge: an unpaid sandbox creation is a 402
        assert c.post("/sandbox", json={}).status_code == 402
        by_path = c.request(method, f"/preview/{sid}/3000/sandbox", content=b"{}")
        by_host = c.request(method, "/sandbox", content=b"{}", headers={"host": f"3000-{sid}.{DOMAIN}"})
        with_bearer = c.request(
            method, f"/preview/{sid}/3000/x", headers={"authorization": "Bearer dnah_not_a_key"}
        )
    for response in (by_path, by_host, with_bearer):
        assert response.status_code == 200, response.text
        assert "www-authenticate" not in response.headers
        assert response.json()["method"] == method
    assert by_host.json()["raw_path"] == f"/preview/{sid}/3000/sandbox"


# WebSockets ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ws_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    logs = tmp_path_factory.mktemp("ws")
    upstream = start("tests.gateway.upstream:create_app", dict(os.environ), logs / "up.log", websockets=True)
    env = gateway_env(upstream.url, DNAH_PREVIEW_DOMAIN=DOMAIN)
    gateway = start("gateway.app:create_app", env, logs / "gw.log", websockets=True)
    yield upstream, gateway
    gateway.stop()
    upstream.stop()


@pytest.mark.parametrize("by", ["host", "path"])
def test_websockets_are_forwarded(ws_pair: tuple[Server, Server], by: str) -> None:
    _, gateway = ws_pair
    sid = sandbox()
    host, port = gateway.url.removeprefix("http://").split(":")
    if by == "host":
        uri = f"ws://3000-{sid}.{DOMAIN}/socket?x=1"
        sock = socket.create_connection((host, int(port)), timeout=15)
    else:
        uri = f"ws://{host}:{port}/preview/{sid}/3000/socket?x=1"
        sock = None
    with ws_connect(
        uri,
        sock=sock,
        subprotocols=["chat"],  # type: ignore[list-item]
        additional_headers={"x-dnah-preview-prefix": "/evil", "x-dnah-preview-token": "tok"},
        open_timeout=20,
        proxy=None,
    ) as conn:
        assert conn.subprotocol == "chat"
        report = json.loads(conn.recv(timeout=15))
        assert report["raw_path"] == f"/preview/{sid}/3000/socket"
        seen_headers = [(k, v) for k, v in report["headers"]]
        assert ("x-dnah-preview-prefix", "" if by == "host" else f"/preview/{sid}/3000") in seen_headers
        assert ("x-dnah-preview-prefix", "/evil") not in seen_headers
        assert ("x-dnah-preview-token", "tok") in seen_headers
        conn.send("hello")
        assert conn.recv(timeout=15) == "hello"
        conn.send(b"\x00\x01binary")
        assert conn.recv(timeout=15) == b"\x00\x01binary"


def test_a_malformed_websocket_preview_is_refused(ws_pair: tuple[Server, Server]) -> None:
    upstream, gateway = ws_pair
    sid = sandbox()
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(gateway.url.replace("http", "ws") + f"/preview/{sid}/99999/x", open_timeout=20, proxy=None)
    assert refused.value.response.status_code == 400
    assert not [line for line in seen(upstream) if sid in line]


# framing and smuggling -------------------------------------------------------------------------


def test_te_cl_cannot_smuggle_a_second_request(gateway: Server, upstream: Server) -> None:
    """Content-Length and Transfer-Encoding together: Granian frames the body as chunked (and
    drops Content-Length); the chunk that looks like a request is a body, never a request."""
    marker = uuid.uuid4().hex
    inner = f"GET /smuggled-{marker} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    request = (
        (
            f"POST /v1/carrier-{marker} HTTP/1.1\r\nHost: gw\r\nContent-Length: 4\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        ).encode()
        + f"{len(inner):x}\r\n".encode()
        + inner
        + b"\r\n0\r\n\r\n"
    )
    answer = raw_exchange(gateway.url, request)
    assert statuses(answer) == [200]
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["body_bytes"] == len(inner)  # the whole chunk, as a body
    assert "content-length" not in [name for name, _ in body["headers"]]
    reached = [line for line in seen(upstream) if marker in line]
    assert reached == [f"POST /v1/carrier-{marker}"]


def test_cl_te_leftovers_are_never_a_request(gateway: Server, upstream: Server) -> None:
    marker = uuid.uuid4().hex
    request = (
        f"POST /v1/carrier-{marker} HTTP/1.1\r\nHost: gw\r\nContent-Length: 6\r\n"
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nG"
        f"POST /smuggled-{marker} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
    ).encode()
    raw_exchange(gateway.url, request)
    assert not [line for line in seen(upstream) if f"smuggled-{marker}" in line]


@pytest.mark.parametrize(
    "fields",
    [
        "Transfer-Encoding: gzip, chunked\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
        "Content-Length: 5\r\nContent-Length: 6\r\n",
        "Host: other.example\r\n",  # a second Host
        "Transfer-Encoding: chunked, chunked\r\n",
    ],
)
def test_conflicting_framing_or_hosts_are_4xx_and_reach_nothing(
    gateway: Server, upstream: Server, fields: str
) -> None:
    marker = uuid.uuid4().hex
    head = f"POST /v1/x-{marker} HTTP/1.1\r\nHost: gw\r\n{fields}Connection: close\r\n\r\n"
    request = head + "5\r\nhello\r\n0\r\n\r\n"
    answer = raw_exchange(gateway.url, request.encode())
    assert statuses(answer) and 400 <= statuses(answer)[0] < 500, answer[:200]
    assert not [line for line in seen(upstream) if marker in line]


@pytest.mark.parametrize("host", ["user@gw", "gw/evil", "gw x"])
def test_a_host_that_is_not_an_authority_is_400(gateway: Server, upstream: Server, host: str) -> None:
    marker = uuid.uuid4().hex
    answer = raw_exchange(
        gateway.url, f"GET /v1/x-{marker} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    )
    assert statuses(answer) == [400]
    assert not [line for line in seen(upstream) if marker in line]


def test_asterisk_form_is_400(gateway: Server) -> None:
    answer = raw_exchange(gateway.url, b"OPTIONS * HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    assert statuses(answer) == [400]
    assert b"invalid_target" in answer


def test_an_absolute_target_is_routed_by_host_alone(gateway: Server, upstream: Server) -> None:
    """Granian drops an absolute-form target's authority before the app sees it, so the
    authority can neither reach a sandbox nor steer API traffic away from one: Host decides."""
    sid, marker = sandbox(), uuid.uuid4().hex
    end = "Connection: close\r\n\r\n"
    to_preview = f"GET http://3000-{sid}.{DOMAIN}/a-{marker} HTTP/1.1\r\nHost: gw\r\n{end}"
    to_api = f"GET http://gw/b-{marker} HTTP/1.1\r\nHost: 3000-{sid}.{DOMAIN}\r\n{end}"
    assert statuses(raw_exchange(gateway.url, to_preview.encode())) == [200]
    assert statuses(raw_exchange(gateway.url, to_api.encode())) == [200]
    reached = [line for line in seen(upstream) if marker in line]
    assert reached == [f"GET /a-{marker}", f"GET /preview/{sid}/3000/b-{marker}"]


def test_health_and_api_traffic_still_work(client: httpx.Client) -> None:
    assert client.get("/health").status_code == 200
    assert client.get("/v1/sandboxes").json()["raw_path"] == "/v1/sandboxes"
