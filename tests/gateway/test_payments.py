"""Payment mode end to end: a real devnet, the whole stack, the gateway in payment mode, and
pympp's client paying for creates, execs and deletes with a funded wallet."""

# The fixtures are imported from payment_fixtures, so test arguments "redefine" them.
# ruff: noqa: F811

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from mpp import Receipt
from redis.asyncio import Redis

from cli.stack import Stack
from gateway.idempotency import Claim, PaymentState, credential_hash, request_fingerprint
from tests.gateway.payment_fixtures import (  # noqa: F401 - fixtures are used by name
    CHAIN_ID,
    TOKEN,
    Devnet,
    Payer,
    PayGateway,
    anon,
    challenges,
    core_saw,
    credit,
    devnet,
    ledger,
    new_payer,
    pay_gateway,
    payer,
    problem,
    problem_type,
    rid,
    rpc_proxy,
    start_payment_gateway,
    wait_for,
)
from tests.gateway.servers import Server
from tests.support import await_for

pytestmark = pytest.mark.stack

CREATE_PRICE = 10_000  # "0.01"
TOOLBOX_PRICE = 100  # "0.0001"
DELETE_PRICE = 1_000  # "0.001"
GET_PRICE = 100


def decode_request(challenge_request_b64: str) -> dict[str, object]:
    padded = challenge_request_b64 + "=" * (-len(challenge_request_b64) % 4)
    result: dict[str, object] = json.loads(base64.urlsafe_b64decode(padded))
    return result


# 402s ----------------------------------------------------------------------------------------


async def test_unpaid_create_gets_a_402_with_the_exact_price(
    anon: httpx.AsyncClient, pay_gateway: PayGateway, stack: Stack
) -> None:
    request_id = rid()
    response = await anon.post("/sandbox", json={}, headers={"x-request-id": request_id})
    assert response.status_code == 402
    assert response.headers["cache-control"] == "no-store"
    [challenge] = challenges(response)
    assert (challenge.method, challenge.intent, challenge.realm) == ("tempo", "charge", "dnah.test")
    assert challenge.request["amount"] == str(CREATE_PRICE)
    assert challenge.request["currency"].lower() == TOKEN.lower()
    assert challenge.request["recipient"] == pay_gateway.recipient
    assert challenge.request["methodDetails"] == {"chainId": CHAIN_ID}
    assert challenge.request["_mppx_scope"] == {"http_method": "POST", "resource": "/sandbox"}
    assert challenge.digest  # the body is bound
    assert challenge.description == "Create a sandbox"
    assert challenge.opaque and "_mpp_nonce" in challenge.opaque
    expires = datetime.fromisoformat(str(challenge.expires).replace("Z", "+00:00"))
    assert 290 < (expires - datetime.now(UTC)).total_seconds() <= 300
    body = problem(response)
    assert body["type"] == "https://paymentauth.org/problems/payment-required"
    assert body["status"] == 402 and body["challengeId"] == challenge.id
    assert (body["amount"], body["price"], body["decimals"]) == ("10000", "0.01", 6)
    assert core_saw(stack, request_id) == []


async def test_issuing_a_402_calls_no_rpc(stack: Stack, rpc_proxy: Server, tmp_path: Path) -> None:
    gateway = start_payment_gateway(stack, rpc_proxy.url, tmp_path)
    try:
        before = httpx.get(f"{rpc_proxy.url}/control/calls").json()
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
            for path in ("/sandbox", "/v1/sandboxes", "/sandbox/x/toolbox/process/execute"):
                assert (await client.post(path, json={})).status_code == 402
        assert httpx.get(f"{rpc_proxy.url}/control/calls").json() == before
    finally:
        gateway.stop()


async def test_each_402_is_a_new_challenge(anon: httpx.AsyncClient) -> None:
    ids = set()
    for _ in range(3):
        [challenge] = challenges(await anon.get("/sandbox"))
        ids.add(challenge.id)
    assert len(ids) == 3


async def test_query_is_bound_and_get_has_no_digest(anon: httpx.AsyncClient) -> None:
    [challenge] = challenges(await anon.get("/sandbox/abc/toolbox/files", params={"path": "/home"}))
    assert challenge.request["_mppx_scope"] == {
        "http_method": "GET",
        "resource": "/sandbox/abc/toolbox/files",
        "query": "path=%2Fhome",
    }
    assert challenge.digest is None
    assert challenge.request["amount"] == str(TOOLBOX_PRICE)


async def test_quote_route_prices_any_request(anon: httpx.AsyncClient) -> None:
    response = await anon.get("/__mpp/quote", params={"method": "POST", "path": "/sandbox"})
    assert response.status_code == 200
    assert response.json() == {
        "method": "POST",
        "path": "/sandbox",
        "amount": "10000",
        "price": "0.01",
        "currency": TOKEN,
        "decimals": 6,
        "description": "Create a sandbox",
        "free": False,
        "payable": True,
        "served": True,
    }
    free = (await anon.get("/__mpp/quote", params={"method": "GET", "path": "/health"})).json()
    assert free["free"] is True and free["amount"] == "0"
    keys = (await anon.get("/__mpp/quote", params={"method": "POST", "path": "/v1/api-keys"})).json()
    assert keys["payable"] is False
    bad = await anon.get("/__mpp/quote", params={"method": "POST"})
    assert bad.status_code == 400 and problem_type(bad) == "bad-request"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/health"),
        ("GET", "/__mpp/quote?method=GET&path=/"),
        ("GET", "/openapi.json"),
        ("GET", "/llms.txt"),
    ],
)
async def test_free_routes_never_402(anon: httpx.AsyncClient, method: str, path: str) -> None:
    response = await anon.request(method, path)
    assert response.status_code != 402, response.text


async def test_bearer_only_routes_never_402(anon: httpx.AsyncClient) -> None:
    response = await anon.post("/v1/api-keys", json={"name": "x"})
    assert response.status_code in (401, 403)
    response = await anon.post("/v1/api-keys", json={"name": "x"}, headers={"authorization": "Bearer nope"})
    assert response.status_code in (401, 403)


async def test_a_bearer_key_does_not_avoid_payment_in_payment_mode(
    anon: httpx.AsyncClient, stack: Stack
) -> None:
    response = await anon.get("/sandbox", headers={"authorization": f"Bearer {stack.admin_token}"})
    assert response.status_code == 402


async def test_malformed_and_duplicate_credentials(anon: httpx.AsyncClient, stack: Stack) -> None:
    request_id = rid()
    response = await anon.get(
        "/sandbox", headers={"authorization": "Payment !!!", "x-request-id": request_id}
    )
    assert response.status_code == 402 and problem_type(response) == "malformed-credential"
    assert challenges(response)
    both = "Payment abc, Payment def"
    response = await anon.get("/sandbox", headers={"authorization": both, "x-request-id": request_id})
    assert response.status_code == 400
    assert core_saw(stack, request_id) == []


async def test_oversized_body_is_refused_before_payment(stack: Stack, devnet: Devnet, tmp_path: Path) -> None:
    gateway = start_payment_gateway(stack, devnet.url, tmp_path, DNAH_PAYMENT_MAX_BODY_BYTES="1024")
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
            response = await client.post("/sandbox", content=b"x" * 2048)
            assert response.status_code == 413 and problem_type(response) == "content-too-large"
            chunked = await client.post("/sandbox", content=_chunks(b"x" * 700, b"y" * 700))
            assert chunked.status_code == 413
            assert (await client.post("/sandbox", content=b"x" * 1000)).status_code == 402
    finally:
        gateway.stop()


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


# paying ----------------------------------------------------------------------------------------


async def test_pay_for_create_exec_and_delete(
    payer: Payer, pay_gateway: PayGateway, devnet: Devnet, stack: Stack
) -> None:
    """The whole life of a sandbox, paid per call by pympp's client; the wallet is charged
    exactly the prices (plus the chain's fees), the ledger has one row per call."""
    before = devnet.balance(payer.address)
    recipient_before = devnet.balance(pay_gateway.recipient)
    async with payer.client(pay_gateway.url) as client:
        created = await client.post("/sandbox", json={})
        assert created.status_code == 200, created.text
        receipt = Receipt.from_payment_receipt(created.headers["payment-receipt"])
        assert receipt.status == "success" and receipt.reference.startswith("0x")
        assert created.headers["cache-control"].startswith("private")
        sid = created.json()["id"]

        native = await client.post("/v1/sandboxes", json={})
        assert native.status_code == 201, native.text
        nid = native.json()["id"]

        ran = await client.post(f"/sandbox/{sid}/toolbox/process/execute", json={"command": "echo paid"})
        assert ran.status_code == 200, ran.text
        assert "paid" in ran.json()["result"]

        for path in (f"/sandbox/{sid}", f"/v1/sandboxes/{nid}"):
            deleted = await client.delete(path)
            assert deleted.status_code in (200, 204), deleted.text

    # the gateway writes each call's outcome just after answering it: wait for all five
    rows = await _wait_outcomes(stack, payer.address, 5)
    assert [(r["method"], r["amount"]) for r in rows] == [
        ("POST", CREATE_PRICE),
        ("POST", CREATE_PRICE),
        ("POST", TOOLBOX_PRICE),
        ("DELETE", DELETE_PRICE),
        ("DELETE", DELETE_PRICE),
    ]
    assert all(r["tx_hash"] and r["upstream_status"] is not None for r in rows)
    prices = sum(r["amount"] for r in rows)
    fees = sum(devnet.fee(r["tx_hash"]) for r in rows)
    assert devnet.balance(pay_gateway.recipient) - recipient_before == prices
    assert before - devnet.balance(payer.address) == prices + fees

    def timings_logged() -> list[dict[str, Any]]:
        return [e for e in pay_gateway.events("payment") if e["payer"] == payer.address]

    async def all_logged() -> bool:
        return len(timings_logged()) >= 5

    await wait_for(all_logged)
    timings = timings_logged()
    assert len(timings) == 5
    assert all({"verify_ms", "broadcast_ms", "record_ms", "forward_ms"} <= set(t) for t in timings)


async def _wait_outcomes(stack: Stack, payer: str, count: int) -> list[Any]:
    """The payer's ledger rows once there are ``count`` and each has its outcome."""

    async def recorded() -> list[Any]:
        rows = await ledger(stack, payer)
        done = len(rows) == count and all(r["completed_at"] is not None for r in rows)
        return rows if done else []

    return await await_for(recorded, what=f"{count} ledger rows with their outcomes")


async def test_payers_only_see_their_own_sandboxes_and_failures_become_credit(
    pay_gateway: PayGateway, devnet: Devnet, stack: Stack
) -> None:
    alice, bob = new_payer(devnet), new_payer(devnet)
    async with alice.client(pay_gateway.url) as a, bob.client(pay_gateway.url) as b:
        sid = (await a.post("/sandbox", json={})).json()["id"]
        try:
            assert (await a.get(f"/sandbox/{sid}")).status_code == 200
            theirs = await b.get(f"/sandbox/{sid}")
            assert theirs.status_code == 404
            assert "payment-receipt" not in theirs.headers

            # Bob paid for nothing: the amount is his credit, and his next $0.0001 call is paid
            # from it (his signed transfer is never broadcast).
            await _wait_outcomes(stack, bob.address, 1)
            assert await credit(stack, bob.address) == GET_PRICE
            balance = devnet.balance(bob.address)
            listed = await b.get("/v1/sandboxes")
            assert listed.status_code == 200
            assert sid not in {s["id"] for s in listed.json()["items"]}
            receipt = Receipt.from_payment_receipt(listed.headers["payment-receipt"])
            assert receipt.reference.startswith("credit:pay_")
            assert devnet.balance(bob.address) == balance
            assert await credit(stack, bob.address) == 0
            rows = await ledger(stack, bob.address)
            assert [(r["tx_hash"] is None, r["amount"]) for r in rows] == [
                (False, GET_PRICE),
                (True, GET_PRICE),
            ]

            # No credit left: the next call is paid on chain again.
            assert (await b.get("/sandbox")).status_code == 200
            assert devnet.balance(bob.address) < balance
        finally:
            await a.delete(f"/sandbox/{sid}")


async def test_idempotency_key_replays_the_stored_response_without_paying(
    payer: Payer, pay_gateway: PayGateway, devnet: Devnet, stack: Stack
) -> None:
    key = {"idempotency-key": f"key-{time.time_ns()}"}
    async with payer.client(pay_gateway.url) as client:
        first = await client.post("/v1/sandboxes", json={"name": "idem"}, headers=key)
        assert first.status_code == 201, first.text
        await _wait_outcomes(stack, payer.address, 1)
        balance = devnet.balance(payer.address)

        again = await client.post("/v1/sandboxes", json={"name": "idem"}, headers=key)
        assert again.status_code == 201
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json() == first.json()
        assert devnet.balance(payer.address) == balance  # signed, never broadcast
        assert len(await ledger(stack, payer.address)) == 1

        other = await client.post("/v1/sandboxes", json={"name": "other"}, headers=key)
        assert other.status_code == 422 and problem_type(other) == "idempotency-key-reused"
        assert devnet.balance(payer.address) == balance
        await client.delete(f"/v1/sandboxes/{first.json()['id']}")


async def test_pay_request_logs_the_time_split(payer: Payer, pay_gateway: PayGateway) -> None:
    async with payer.client(pay_gateway.url) as client:
        assert (await client.get("/sandbox")).status_code == 200

    def logged() -> list[dict[str, Any]]:  # the line is written just after the answer is sent
        return [e for e in pay_gateway.events("payment") if e["payer"] == payer.address]

    async def appeared() -> bool:
        return bool(logged())

    await wait_for(appeared)
    [entry] = logged()
    assert entry["via"] == "chain" and entry["amount"] == GET_PRICE and entry["status"] == 200
    assert entry["verify_ms"] >= 0 and entry["broadcast_ms"] > 0 and entry["forward_ms"] > 0


# an unknown outcome -------------------------------------------------------------------------------


async def test_lost_chain_answer_is_503_and_the_retry_does_not_pay_twice(
    stack: Stack, devnet: Devnet, rpc_proxy: Server, tmp_path: Path
) -> None:
    gateway = start_payment_gateway(stack, rpc_proxy.url, tmp_path, DNAH_PAYMENT_CONFIRMATION_TIMEOUT_S="1.5")
    payer = new_payer(devnet)
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as client:
            [challenge] = challenges(await client.get("/sandbox"))
            authorization = await payer.authorization(challenge)
            balance = devnet.balance(payer.address)
            # answers are lost until the test says otherwise, however long the first try takes
            httpx.put(f"{rpc_proxy.url}/control/lose/3600")
            lost = await client.get("/sandbox", headers={"authorization": authorization})
            assert lost.status_code == 503, lost.text
            assert problem_type(lost) == "payment-outcome-unknown"
            assert lost.headers["retry-after"]
            assert "www-authenticate" not in lost.headers
            paid = devnet.balance(payer.address)
            assert paid < balance  # the transfer landed; only its answer was lost
            assert await ledger(stack, payer.address) == []

            httpx.put(f"{rpc_proxy.url}/control/lose/0")  # the chain answers again
            retried = await client.get("/sandbox", headers={"authorization": authorization})
            assert retried.status_code == 200, retried.text
            assert "payment-receipt" in retried.headers
            assert devnet.balance(payer.address) == paid  # not charged again
            [row] = await ledger(stack, payer.address)
            assert row["tx_hash"]

            again = await client.get("/sandbox", headers={"authorization": authorization})
            assert again.status_code == 402 and problem_type(again) == "invalid-challenge"
    finally:
        httpx.put(f"{rpc_proxy.url}/control/lose/0")
        gateway.stop()


async def test_a_payment_abandoned_mid_way_is_resumed_from_the_chain(
    anon: httpx.AsyncClient, payer: Payer, devnet: Devnet, stack: Stack
) -> None:
    """A worker that died between claiming a challenge and settling it leaves a ``pending``
    claim; the same credential, retried later, settles it (once) instead of hanging."""
    [challenge] = challenges(await anon.get("/sandbox"))
    authorization = await payer.authorization(challenge)
    redis = Redis.from_url(stack.redis_url)
    try:
        claim = Claim(
            state="pending",
            credential=credential_hash(authorization),
            fingerprint=request_fingerprint("GET", b"/sandbox", b"", b""),
            payer=payer.address,
            amount=GET_PRICE,
            currency=TOKEN,
            since=time.time() - 3600,
        )
        assert await PaymentState(redis).claim(challenge.id, claim) is None
    finally:
        await redis.aclose()
    balance = devnet.balance(payer.address)
    resumed = await anon.get("/sandbox", headers={"authorization": authorization})
    assert resumed.status_code == 200, resumed.text
    [row] = await ledger(stack, payer.address)
    assert balance - devnet.balance(payer.address) == GET_PRICE + devnet.fee(row["tx_hash"])


# modes -----------------------------------------------------------------------------------------------


async def test_bearer_mode_never_402(gateway: httpx.Client) -> None:
    """The stack's own gateway runs in bearer mode."""
    with httpx.Client(base_url=str(gateway.base_url), timeout=30) as anonymous:
        for method, path in [("POST", "/sandbox"), ("GET", "/sandbox"), ("POST", "/v1/sandboxes")]:
            assert anonymous.request(method, path, json={}).status_code == 401


async def test_both_mode(stack: Stack, devnet: Devnet, tmp_path: Path, gateway: httpx.Client) -> None:
    both = start_payment_gateway(stack, devnet.url, tmp_path, mode="both")
    payer = new_payer(devnet)
    try:
        async with httpx.AsyncClient(base_url=both.url, timeout=60) as client:
            key = {"authorization": f"Bearer {stack.admin_token}"}
            listed = await client.get("/v1/sandboxes", headers=key)
            assert listed.status_code == 200 and "payment-receipt" not in listed.headers
            created = await client.post("/v1/api-keys", json={"name": "both"}, headers=key)
            assert created.status_code == 201
            wrong = await client.post("/sandbox", json={}, headers={"authorization": "Bearer dnah_wrong"})
            assert wrong.status_code == 402 and problem_type(wrong) == "payment-required"
            [challenge] = challenges(wrong)
            assert challenge.request["amount"] == str(CREATE_PRICE) and challenge.digest
            assert (await client.get("/sandbox")).status_code == 402
            assert (await client.get("/health")).status_code == 200
            keys = await client.post("/v1/api-keys", json={"name": "x"})
            assert keys.status_code in (401, 403)
        async with payer.client(both.url) as paying:
            listed = await paying.get("/sandbox")
            assert listed.status_code == 200 and "payment-receipt" in listed.headers
    finally:
        both.stop()


async def test_a_route_the_core_does_not_serve_is_never_charged(
    anon: httpx.AsyncClient, payer: Payer, devnet: Devnet, stack: Stack
) -> None:
    """The toolbox wildcard and the default price cover any path (and a table may price a
    route the core has not built: ``tests/pricing/test_served.py``): none of them is sold when
    the core has no route for it — no challenge, the core's 404 (or 405) for free."""
    balance = devnet.balance(payer.address)
    async with payer.client(str(anon.base_url)) as client:
        for method, path in [
            ("GET", "/sandbox/sbx-1/toolbox/no/such/tool"),  # by the toolbox wildcard
            ("GET", "/nothing/here"),  # by the default price
            ("PATCH", "/v1/sandboxes"),  # a path the core has, a method it does not take
        ]:
            answer = await client.request(method, path)
            assert answer.status_code in (404, 405), (method, path, answer.text)
            assert "payment-receipt" not in answer.headers
            # and the quote says so: free, not served, whatever the table's row says
            quote = (await anon.get("/__mpp/quote", params={"method": method, "path": path})).json()
            assert (quote["served"], quote["free"], quote["amount"], quote["price"]) == (
                False,
                True,
                "0",
                "0",
            ), quote
        unpaid = await anon.get("/sandbox/sbx-1/toolbox/no/such/tool")
        assert unpaid.status_code == 404 and "www-authenticate" not in unpaid.headers
    assert devnet.balance(payer.address) == balance
    assert await ledger(stack, payer.address) == []
