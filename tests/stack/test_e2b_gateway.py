"""E2B's API through the gateway, on a real stack: a bearer gateway with a preview domain (the
SDK's two ways to name a sandbox: ``E2b-Sandbox-Id`` headers and ``{port}-{id}.{domain}``
hosts), and the shared payment-mode gateway, where a devnet payer pays for an E2B create and
an envd call and a stream without an API key is refused.

The requests are the ones E2B's SDK sends (``X-API-KEY`` to the control plane, the sandbox's
``envdAccessToken`` as ``X-Access-Token`` to envd, Connect's JSON codec); the SDKs themselves
run in ``tests/sdk``.
"""

# The fixtures are imported from payment_fixtures, so test arguments "redefine" them.
# ruff: noqa: F811

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from mpp import Receipt

from cli.stack import Stack
from pricing import default_table_path, load_table
from tests.gateway.payment_fixtures import (  # noqa: F401 - fixtures are used by name
    Devnet,
    Payer,
    PayGateway,
    devnet,
    ledger,
    pay_gateway,
    payer,
)
from tests.gateway.servers import Server, gateway_env, start
from tests.support import mint_key

pytestmark = pytest.mark.stack

DOMAIN = "e2b.localhost"
ENVD = 49983
TABLE = load_table(default_table_path())


@pytest.fixture(scope="module")
def e2b_gateway(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A bearer gateway in front of the shared stack's core, with a preview domain (envd needs
    none at the core: the gateway rewrites the host to ``/envd/{id}/…``)."""
    log = tmp_path_factory.mktemp("e2b-gw") / "gateway.log"
    server = start(
        "gateway.app:create_app", gateway_env(stack.config.core_url, DNAH_PREVIEW_DOMAIN=DOMAIN), log
    )
    yield server
    server.stop()


def envelope(message: Any) -> bytes:
    data = json.dumps(message).encode()
    return b"\x00" + len(data).to_bytes(4, "big") + data


def messages(body: bytes) -> list[tuple[int, Any]]:
    """A Connect stream's envelopes: (flags, message)."""
    out = []
    while body:
        size = int.from_bytes(body[1:5], "big")
        out.append((body[0], json.loads(body[5 : 5 + size])))
        body = body[5 + size :]
    return out


def by_header(sandbox: dict[str, Any]) -> dict[str, str]:
    return {
        "e2b-sandbox-id": sandbox["sandboxID"],
        "e2b-sandbox-port": str(ENVD),
        "x-access-token": sandbox["envdAccessToken"],
    }


def by_host(sandbox: dict[str, Any]) -> dict[str, str]:
    return {"host": f"{ENVD}-{sandbox['sandboxID']}.{DOMAIN}", "x-access-token": sandbox["envdAccessToken"]}


def test_the_e2b_api_through_a_bearer_gateway(e2b_gateway: Server, gateway: httpx.Client) -> None:
    key = mint_key(gateway, "e2b-gateway")
    with httpx.Client(base_url=e2b_gateway.url, timeout=120) as client:
        made = client.post(
            "/v2/sandboxes",
            json={"templateID": "base", "metadata": {"via": "gateway"}, "envVars": {"GREETING": "hi"}},
            headers={"x-api-key": key},
        )
        assert made.status_code == 201, made.text
        sandbox = made.json()
        assert sandbox["envdAccessToken"]
        try:
            for route, name in ((by_header, "header"), (by_host, "host")):
                path = f"through-{name}.txt"  # relative: in the sandbox user's home
                written = client.post(
                    "/files",
                    params={"path": path},
                    files={"file": (path, f"by {name}\n".encode())},
                    headers=route(sandbox),
                )
                assert written.status_code == 200, (name, written.text)
                assert [entry["name"] for entry in written.json()] == [path]
                read = client.get("/files", params={"path": path}, headers=route(sandbox))
                assert (read.status_code, read.content) == (200, f"by {name}\n".encode()), name
                stat = client.post(
                    "/filesystem.Filesystem/Stat",
                    json={"path": path},
                    headers={**route(sandbox), "connect-protocol-version": "1"},
                )
                assert stat.status_code == 200, (name, stat.text)
                assert stat.json()["entry"]["type"] == "FILE_TYPE_FILE"
                assert stat.json()["entry"]["size"] == str(len(f"by {name}\n"))

            ran = client.post(
                "/process.Process/Start",
                content=envelope(
                    {"process": {"cmd": "/bin/bash", "args": ["-l", "-c", "echo $GREETING from the gateway"]}}
                ),
                headers={
                    **by_header(sandbox),
                    "content-type": "application/connect+json",
                    "connect-protocol-version": "1",
                    "connect-timeout-ms": "60000",
                },
            )
            assert ran.status_code == 200, ran.text
            events = messages(ran.content)
            assert "start" in events[0][1]["event"]
            out = b"".join(
                base64.b64decode(m["event"]["data"]["stdout"])
                for flags, m in events
                if flags == 0 and "data" in m.get("event", {}) and "stdout" in m["event"]["data"]
            )
            assert out == b"hi from the gateway\n"
            ends = [m["event"]["end"] for flags, m in events if flags == 0 and "end" in m.get("event", {})]
            assert ends and ends[0].get("exitCode", 0) == 0
            assert events[-1] == (2, {})

            wrong = client.get(
                "/files",
                params={"path": "/etc/hostname"},
                headers={**by_header(sandbox), "x-access-token": "nope"},
            )
            assert wrong.status_code == 401
        finally:
            killed = client.delete(f"/sandboxes/{sandbox['sandboxID']}", headers={"x-api-key": key})
            assert killed.status_code == 204, killed.text


async def test_a_payer_pays_for_an_e2b_create_and_an_envd_call(
    payer: Payer, pay_gateway: PayGateway, devnet: Devnet, stack: Stack, gateway: httpx.Client
) -> None:
    recipient_before = devnet.balance(pay_gateway.recipient)
    rows_before = len(await ledger(stack, payer.address))
    async with payer.client(pay_gateway.url) as paying:
        made = await paying.post("/v2/sandboxes", json={"templateID": "base"})
        assert made.status_code == 201, made.text
        assert Receipt.from_payment_receipt(made.headers["payment-receipt"]).status == "success"
        sandbox = made.json()
        sid = sandbox["sandboxID"]
        try:
            create_price = TABLE.quote("POST", "/v2/sandboxes").amount
            assert devnet.balance(pay_gateway.recipient) - recipient_before == create_price

            before = devnet.balance(pay_gateway.recipient)
            listed = await paying.post(
                "/filesystem.Filesystem/ListDir", json={"path": "/"}, headers=by_header(sandbox)
            )
            assert listed.status_code == 200, listed.text
            assert "payment-receipt" in listed.headers
            assert any(entry["name"] == "etc" for entry in listed.json()["entries"])
            envd_price = TABLE.quote("POST", f"/envd/{sid}/filesystem.Filesystem/ListDir").amount
            assert devnet.balance(pay_gateway.recipient) - before == envd_price == 100

            # a stream cannot be paid per call: without an API key it is refused, and nothing is charged
            before = devnet.balance(pay_gateway.recipient)
            stream = await paying.post(
                "/process.Process/Start",
                content=envelope({"process": {"cmd": "/bin/true"}}),
                headers={**by_header(sandbox), "content-type": "application/connect+json"},
            )
            assert stream.status_code == 401, stream.text
            assert stream.json()["code"] == "api_key_required"
            assert "cannot be paid per call" in stream.json()["message"]
            # ... and with a key of another org (the payer owns the sandbox), it is not found
            other = mint_key(gateway, "e2b-not-the-owner")
            foreign = await paying.post(
                "/process.Process/Start",
                content=envelope({"process": {"cmd": "/bin/true"}}),
                headers={
                    **by_header(sandbox),
                    "content-type": "application/connect+json",
                    "x-api-key": other,
                },
            )
            assert foreign.status_code == 404, foreign.text
            assert devnet.balance(pay_gateway.recipient) == before
        finally:
            killed = await paying.delete(f"/sandboxes/{sid}")
            assert killed.status_code == 204, killed.text

    rows = (await ledger(stack, payer.address))[rows_before:]
    paths = [(r["method"], r["path"]) for r in rows]
    assert ("POST", "/v2/sandboxes") in paths
    assert ("POST", f"/envd/{sid}/filesystem.Filesystem/ListDir") in paths
    assert not [p for p in paths if "process.Process" in p[1]]
