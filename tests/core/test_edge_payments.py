"""The gateway's side door into the core: acting for payers, the ledger, credit, replays."""

from __future__ import annotations

import base64
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


# A gateway that dies after recording a payment (reliability.md, "Gateway death after
# forwarding"): the core's own record settles it. "Dying" here is skipping the outcome report.


def _payer() -> str:
    return "0x" + uuid.uuid4().hex + uuid.uuid4().hex[:8]


def _paid(payer: str, payment_id: str) -> dict[str, str]:
    return {"x-dnah-payer": payer, "x-dnah-payment": payment_id}


def _settle(edge: httpx.Client, payer: str) -> dict[str, int]:
    answer = edge.post("/internal/payments/settle", json={"older_than_s": 0, "payer": payer})
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_a_payment_never_forwarded_is_credited_back_and_can_no_longer_be_served(edge: httpx.Client) -> None:
    payer, key = _payer(), uuid.uuid4().hex
    paid = record(edge, payer=payer, amount=700, idempotency_key=key, fingerprint="fp-u").json()["payment_id"]
    lookup = {"key": key, "fingerprint": "fp-u"}
    assert edge.get("/internal/idempotency", params=lookup).status_code == 404  # in progress
    # the gateway died between recording and forwarding: no request, no outcome report
    assert _settle(edge, payer) == {"completed": 0, "credited_unserved": 1}
    assert redeem(edge, payer, 701).json()["balance"] == 700
    assert _settle(edge, payer) == {"completed": 0, "credited_unserved": 0}
    # its idempotency key is given up: the lookup says so (410), and a new payment may take it
    assert edge.get("/internal/idempotency", params=lookup).status_code == 410
    again = record(edge, payer=payer, amount=700, idempotency_key=key, fingerprint="fp-u")
    assert again.status_code == 201, again.text
    assert edge.get("/internal/idempotency", params=lookup).status_code == 404
    # a late forward of the credited payment is refused before any handler runs
    late = edge.get("/v1/sandboxes", headers=_paid(payer, paid))
    assert late.status_code == 409 and late.json()["code"] == "payment-settled"
    # and a late outcome report credits nothing more
    assert edge.post(f"/internal/payments/{paid}/outcome", json={"upstream_status": 502}).status_code == 409
    assert redeem(edge, payer, 701).json()["balance"] == 700


def test_the_core_records_what_it_answered_and_settles_a_lost_report_from_it(edge: httpx.Client) -> None:
    payer = _payer()
    failed = record(edge, payer=payer, amount=300).json()["payment_id"]
    served = record(edge, payer=payer, amount=200).json()["payment_id"]
    missing = edge.get("/v1/sandboxes/no-such-sandbox", headers=_paid(payer, failed))
    assert missing.status_code == 404
    assert edge.get("/v1/sandboxes", headers=_paid(payer, served)).status_code == 200
    # each payment is served once: a second forward with the same id is refused
    again = edge.get("/v1/sandboxes", headers=_paid(payer, served))
    assert again.status_code == 409 and again.json()["code"] == "payment-settled"
    # the gateway died before reporting either outcome: the 404 earns its refund, the 200 none
    assert _settle(edge, payer) == {"completed": 2, "credited_unserved": 0}
    assert redeem(edge, payer, 301).json()["balance"] == 300
    for paid in (failed, served):
        assert (
            edge.post(f"/internal/payments/{paid}/outcome", json={"upstream_status": 500}).status_code == 409
        )
    assert redeem(edge, payer, 301).json()["balance"] == 300


def test_an_outcome_report_wins_over_the_sweep_and_is_not_doubled(edge: httpx.Client) -> None:
    payer = _payer()
    paid = record(edge, payer=payer, amount=400).json()["payment_id"]
    assert edge.get("/v1/sandboxes/nope", headers=_paid(payer, paid)).status_code == 404
    out = edge.post(f"/internal/payments/{paid}/outcome", json={"upstream_status": 404})
    assert out.json() == {"credited": 400, "balance": 400}
    assert _settle(edge, payer) == {"completed": 0, "credited_unserved": 0}
    assert redeem(edge, payer, 401).json()["balance"] == 400


def test_a_payment_header_needs_the_edge_token_and_the_payments_payer(
    edge: httpx.Client, stack: Stack
) -> None:
    payer = _payer()
    paid = record(edge, payer=payer, amount=100).json()["payment_id"]
    # another payer cannot spend it
    other = edge.get("/v1/sandboxes", headers=_paid(_payer(), paid))
    assert other.status_code == 409
    # without the edge token the header is ignored (and the row untouched)
    admin = {"authorization": f"Bearer {stack.admin_token}", "x-dnah-payment": paid}
    assert httpx.get(f"{stack.config.core_url}/v1/sandboxes", headers=admin).status_code == 200
    assert _settle(edge, payer) == {"completed": 0, "credited_unserved": 1}


def test_the_core_keeps_a_keyed_paid_response_so_a_dead_gateway_loses_no_replay(edge: httpx.Client) -> None:
    payer, key = _payer(), uuid.uuid4().hex
    paid = record(edge, payer=payer, idempotency_key=key, fingerprint="fp-k").json()["payment_id"]
    answer = edge.get("/v1/sandboxes", headers=_paid(payer, paid))
    assert answer.status_code == 200

    def replayed() -> None:
        again = edge.get("/internal/idempotency", params={"key": key, "fingerprint": "fp-k"})
        assert again.status_code == 200, again.text
        stored = again.json()
        assert stored["status"] == 200 and base64.b64decode(stored["body"]) == answer.content
        names = {n for n, _ in stored["headers"]}
        assert "content-type" in names and not names & {"x-request-id", "content-length"}

    # no outcome report came: the replay is there all the same, and the sweep keeps it
    replayed()
    assert _settle(edge, payer) == {"completed": 1, "credited_unserved": 0}
    replayed()
