"""The gateway's side door into the core: acting for payers, the ledger, credit, replays."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from cli.stack import Stack

PAYER_A = "0x" + "a1" * 20
PAYER_B = "0x" + "b2" * 20


@pytest.fixture
def edge(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=stack.config.core_url, headers={"authorization": f"Bearer {stack.edge_token}"}, timeout=60
    ) as client:
        yield client


def record(edge: httpx.Client, **fields: object) -> httpx.Response:
    body = {
        "challenge_id": uuid.uuid4().hex,
        "payer": PAYER_A,
        "method": "POST",
        "path": "/sandbox",
        "amount": 10000,
        "currency": "0x20c0000000000000000000000000000000000000",
        "tx_hash": "0x" + uuid.uuid4().hex * 2,
        **fields,
    }
    return edge.post("/internal/payments", json=body)


def redeem(
    edge: httpx.Client, payer: str, amount: int, challenge: str | None = None, *, resume: bool = False
) -> httpx.Response:
    """Pay ``amount`` from credit, recording the payment (``resume``: only look it up)."""
    challenge = challenge or uuid.uuid4().hex
    row = {
        "challenge_id": challenge,
        "payer": payer,
        "method": "GET",
        "path": "/sandbox",
        "amount": amount,
        "currency": "0x20c0000000000000000000000000000000000000",
        "tx_hash": None,
    }
    body = {"payer": payer, "amount": amount, "challenge_id": challenge, "resume": resume}
    return edge.post("/internal/credits/redeem", json={**body, "record": None if resume else row})


def test_each_payer_gets_its_own_org(edge: httpx.Client) -> None:
    as_a = {"x-dnah-payer": PAYER_A}
    sid = edge.post("/v1/sandboxes", json={}, headers=as_a).json()["id"]
    try:
        assert edge.get(f"/v1/sandboxes/{sid}", headers=as_a).status_code == 200
        assert edge.get(f"/v1/sandboxes/{sid}", headers={"x-dnah-payer": PAYER_B}).status_code == 404
        assert sid not in {
            s["id"] for s in edge.get("/v1/sandboxes", headers={"x-dnah-payer": PAYER_B}).json()["items"]
        }
    finally:
        edge.delete(f"/v1/sandboxes/{sid}", headers=as_a)


def test_edge_token_needs_a_valid_payer_and_payer_header_needs_the_edge_token(
    stack: Stack, edge: httpx.Client, gateway: httpx.Client
) -> None:
    assert edge.get("/v1/sandboxes").status_code == 401
    assert edge.get("/v1/sandboxes", headers={"x-dnah-payer": "0xNOTHEX"}).status_code == 400
    # An ordinary key with a payer header is still just that key's org.
    mine = gateway.get("/v1/sandboxes", headers={"x-dnah-payer": PAYER_A})
    assert mine.status_code == 200
    # The ledger routes refuse anyone without the edge token, admins included.
    assert gateway.post("/internal/payments", json={}).status_code == 404  # not even routed by the gateway
    with httpx.Client(base_url=stack.config.core_url, timeout=10) as anon:
        admin = {"authorization": f"Bearer {stack.admin_token}"}
        assert (
            anon.get(
                "/internal/idempotency", params={"key": "k", "fingerprint": "f"}, headers=admin
            ).status_code
            == 401
        )


def test_a_challenge_or_transaction_is_recorded_once(edge: httpx.Client) -> None:
    first = record(edge, challenge_id="chal-once", tx_hash="0x" + "11" * 32)
    assert first.status_code == 201 and first.json()["payment_id"].startswith("pay_")
    assert record(edge, challenge_id="chal-once").status_code == 409
    assert record(edge, tx_hash="0x" + "11" * 32).status_code == 409


def test_failed_paid_call_becomes_credit_and_credit_pays_once(edge: httpx.Client) -> None:
    payer = "0x" + uuid.uuid4().hex[:8] * 5
    paid = record(edge, payer=payer, amount=1000).json()["payment_id"]
    out = edge.post(f"/internal/payments/{paid}/outcome", json={"upstream_status": 502})
    assert out.json() == {"credited": 1000, "balance": 1000}
    # A repeated outcome report never credits twice.
    assert edge.post(f"/internal/payments/{paid}/outcome", json={"upstream_status": 502}).status_code == 409

    too_much = redeem(edge, payer, 1001)
    assert too_much.json() == {"redeemed": False, "balance": 1000, "payment_id": None}
    challenge = uuid.uuid4().hex
    ok = redeem(edge, payer, 600, challenge).json()
    assert ok["redeemed"] and ok["balance"] == 400 and ok["payment_id"].startswith("pay_")
    # Taking the credit wrote the payment's row; asking again (a lost answer, a dead gateway)
    # finds that redemption and takes nothing more.
    assert redeem(edge, payer, 600, challenge).json() == ok
    assert redeem(edge, payer, 600, challenge, resume=True).json() == ok
    assert redeem(edge, payer, 100, uuid.uuid4().hex, resume=True).json()["redeemed"] is False

    fine = record(edge, payer=payer, amount=100).json()["payment_id"]
    assert edge.post(f"/internal/payments/{fine}/outcome", json={"upstream_status": 200}).json() == {
        "credited": 0,
        "balance": 400,
    }


def test_idempotent_replay_returns_the_stored_response(edge: httpx.Client) -> None:
    key = uuid.uuid4().hex
    paid = record(edge, idempotency_key=key, fingerprint="fp-1").json()["payment_id"]
    stored = {"status": 200, "headers": [["content-type", "application/json"]], "body": "eyJvayI6dHJ1ZX0="}
    edge.post(f"/internal/payments/{paid}/outcome", json={"upstream_status": 200, "response": stored})
    again = edge.get("/internal/idempotency", params={"key": key, "fingerprint": "fp-1"})
    assert again.status_code == 200
    assert again.json() == stored
    assert edge.get("/internal/idempotency", params={"key": key, "fingerprint": "fp-2"}).status_code == 409
    assert edge.get("/internal/idempotency", params={"key": "unknown", "fingerprint": "x"}).status_code == 404
    assert record(edge, idempotency_key=key).status_code == 409
