"""Terminals through the gateway (``gateway/wsforward.py``) in front of the real stack: the
upgrade is forwarded with the request id and the seed-004 path mapping, the core's chosen
subprotocol, messages and close code come back unchanged, a client that vanishes takes its
terminal with it, the core's refusals are relayed, and in payment mode a terminal needs an
API key (it cannot be paid per call)."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from cli.stack import Stack
from tests.gateway.payment_fixtures import (
    Devnet,
    PayGateway,
    devnet,
    pay_gateway,
    rpc_proxy,
    start_payment_gateway,
)

__all__ = ["devnet", "pay_gateway", "rpc_proxy"]  # fixtures used by this module


def ws(
    base_url: str, path: str, key: str | None, headers: dict[str, str] | None = None, **kwargs: object
) -> ClientConnection:
    headers = {**(headers or {}), **({"authorization": key} if key else {})}
    return connect(
        base_url.replace("http://", "ws://") + path,
        additional_headers=headers,
        open_timeout=20,
        proxy=None,
        **kwargs,  # type: ignore[arg-type]
    )


def drain(conn: ClientConnection) -> tuple[bytes, list[str]]:
    """Everything until the server closes: (output, text messages)."""
    output, texts = bytearray(), []
    with pytest.raises(ConnectionClosed):
        while True:
            message = conn.recv(timeout=15)
            if isinstance(message, bytes):
                output += message
            else:
                texts.append(message)
    return bytes(output), texts


def wait_for_output(conn: ClientConnection, marker: bytes) -> bytes:
    output = bytearray()
    deadline = time.monotonic() + 15
    while marker not in output:
        message = conn.recv(timeout=max(0.1, deadline - time.monotonic()))
        if isinstance(message, bytes):
            output += message
    return bytes(output)


def test_terminals_through_the_gateway(stack: Stack, org: httpx.Client) -> None:
    key = org.headers["authorization"]
    sid = org.post("/v1/sandboxes", json={}).json()["id"]
    gw = stack.config.gateway_url

    with ws(gw, f"/v1/sandboxes/{sid}/terminal?cols=88&rows=22", key) as conn:
        assert json.loads(conn.recv(timeout=15))["type"] == "ready"
        conn.send(b"stty size; exit 5\n")
        output, texts = drain(conn)
        assert b"22 88" in output
        assert json.loads(texts[-1]) == {"type": "exit", "exit_code": 5}
        assert conn.close_code == 1000

    # seed 004's spelling, the Daytona subprotocols, the close reason carrying the exit code
    offers = ["X-Daytona-Pty-Exit-Control", "X-Daytona-Pty-Envs~eyJBIjogIngifQ"]  # {"A": "x"}
    path = f"/sandbox/{sid}/toolbox/process/pty/create-connect?id=gw1"
    headers = {"x-request-id": "ws-through-gw"}
    with ws(gw, path, key, headers, subprotocols=offers) as conn:
        assert conn.subprotocol == "X-Daytona-Pty-Exit-Control"
        conn.send(b"echo A=$A; exit 2\n")
        output, texts = drain(conn)
        assert b"A=x" in output
        assert json.loads(texts[0]) == {"type": "control", "status": "connected"}
        assert json.loads(texts[-1]) == {"type": "control", "status": "exited", "exitCode": 2}
        assert (conn.close_code, conn.close_reason) == (1000, '{"exitCode":2}')

    # a client that vanishes through the gateway leaves no process behind
    with ws(gw, f"/v1/sandboxes/{sid}/terminal", key) as conn:
        conn.send(b"sleep 4321\n")
        wait_for_output(conn, b"sleep 4321")
        deadline = time.monotonic() + 10
        while "sleep 4321" not in ps(org, sid):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        conn.socket.shutdown(socket.SHUT_RDWR)
    deadline = time.monotonic() + 10
    while "sleep 4321" in ps(org, sid):
        assert time.monotonic() < deadline, ps(org, sid)
        time.sleep(0.2)

    # the core's refusals come back as they are
    with pytest.raises(InvalidStatus) as missing:
        ws(gw, "/v1/sandboxes/sbx-nope/terminal", key).close()
    assert missing.value.response.status_code == 404
    with pytest.raises(InvalidStatus) as anonymous:
        ws(gw, f"/v1/sandboxes/{sid}/terminal", None).close()
    assert anonymous.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as internal:
        ws(gw, "/internal/hosts/x/heartbeat", key).close()
    assert internal.value.response.status_code == 404


def ps(client: httpx.Client, sid: str) -> str:
    resp = client.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": ["ps", "-eo", "args"]})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["stdout"])


def test_payment_mode_needs_an_api_key_for_terminals(pay_gateway: PayGateway, org: httpx.Client) -> None:
    sid = org.post("/v1/sandboxes", json={}).json()["id"]
    with pytest.raises(InvalidStatus) as refused:
        ws(pay_gateway.url, f"/v1/sandboxes/{sid}/terminal", None).close()
    response = refused.value.response
    assert response.status_code == 401
    body = json.loads(response.body or b"{}")
    assert body["code"] == "api_key_required" and "cannot be paid per call" in body["message"]
    # an API key opens it: the route is bearer-only, never sold
    with ws(pay_gateway.url, f"/v1/sandboxes/{sid}/terminal", org.headers["authorization"]) as conn:
        assert json.loads(conn.recv(timeout=15))["type"] == "ready"
        conn.send(b"exit 0\n")
        _, texts = drain(conn)
        assert json.loads(texts[-1]) == {"type": "exit", "exit_code": 0}


def test_a_priced_websocket_route_is_refused(
    stack: Stack, devnet: Devnet, org: httpx.Client, tmp_path: Path
) -> None:
    """An operator's table that leaves the terminal to a priced default: the gateway cannot
    sell a stream, so it says so instead of sending a 402 nobody could pay."""
    prices = tmp_path / "prices.toml"
    prices.write_text('version = 1\ndefault = "0.0001"\ndefault_description = "API request"\n')
    gateway = start_payment_gateway(stack, devnet.url, tmp_path, mode="both", pricing_file=prices)
    try:
        with pytest.raises(InvalidStatus) as refused:
            ws(gateway.url, "/v1/sandboxes/x/terminal", org.headers["authorization"]).close()
        response = refused.value.response
        assert response.status_code == 400
        body = json.loads(response.body or b"{}")
        assert body["code"] == "websocket_not_payable" and "payable = false" in body["message"]
    finally:
        gateway.stop()
