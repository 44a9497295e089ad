"""Faults placed on purpose that once cost a payer money: chain faults (``devnet.faults``'
forced schedule) after which a landed payment got a fresh 402, and a gateway that died
between taking a payer's credit and recording it. Each must end with the payment recorded
once and the call served."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import msgspec
import pytest
from mpp import Receipt
from redis.asyncio import Redis

from cli.stack import Stack
from contracts.control import CreditRedeem, PaymentRecord
from devnet.faults import FaultPlan
from gateway.idempotency import Claim, PaymentState, credential_hash, request_fingerprint
from tests.gateway.payment_fixtures import (
    Devnet,
    Payer,
    PayGateway,
    challenges,
    credit,
    ledger,
    pay_gateway,
    payer,
    problem_type,
    start_faulty_rpc,
    start_payment_gateway,
)
from tests.gateway.servers import Server

__all__ = ["pay_gateway", "payer"]  # fixtures used by this module

GET_PRICE = 100

SENDS_AND_RECEIPTS = "eth_sendRawTransactionSync,eth_getTransactionReceipt"


@pytest.fixture
def relay(devnet: Devnet, tmp_path: Path) -> Iterator[Server]:
    server = start_faulty_rpc(devnet.url, tmp_path / "faults.log", "--methods", SENDS_AND_RECEIPTS)
    yield server
    server.stop()


def force(relay: Server, *kinds: str) -> None:
    plan = FaultPlan(force=list(kinds), methods=SENDS_AND_RECEIPTS.split(","), hold_s=2.5)
    httpx.put(f"{relay.url}/control/plan", content=msgspec.json.encode(plan)).raise_for_status()


def injected(relay: Server) -> list[str]:
    faults = httpx.get(f"{relay.url}/control/faults").json()["faults"]
    return [f"{f['method']} {f['kind']}:{f['detail']}" for f in faults]


async def pay_until_answered(client: httpx.AsyncClient, authorization: str) -> list[httpx.Response]:
    """The same credential until the answer is definitive, as docs/payments.md tells a client."""
    answers = []
    for _ in range(10):
        answer = await client.get("/sandbox", headers={"authorization": authorization})
        answers.append(answer)
        if answer.status_code != 503:
            return answers
    return answers


@pytest.mark.parametrize(
    "faults",
    [
        # The node took the transaction but answered as if it had it already, and the one
        # receipt lookup pympp makes after a "definitive" error was lost.
        ("rpc_error:nonce too low", "reset"),
        ("rpc_error:nonce too low", "http_5xx:502"),
        # "already known" sends pympp polling for the receipt; a lost lookup ends the poll
        # with that error, which read as the node refusing the transaction.
        ("rpc_error:already known", "lost"),
    ],
    ids=["nonce-too-low+reset", "nonce-too-low+502", "already-known+lost"],
)
async def test_a_refusal_after_the_transfer_landed_is_not_a_fresh_402(
    stack: Stack, devnet: Devnet, payer: Payer, relay: Server, tmp_path: Path, faults: tuple[str, ...]
) -> None:
    gateway = start_payment_gateway(
        stack, relay.url, tmp_path, DNAH_PAYMENT_RPC_TIMEOUT_S="1", DNAH_PAYMENT_CONFIRMATION_TIMEOUT_S="2"
    )
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as client:
            [challenge] = challenges(await client.get("/sandbox"))
            authorization = await payer.authorization(challenge)
            before = devnet.balance(payer.address)
            force(relay, *faults)
            answers = await pay_until_answered(client, authorization)
        seen = [(a.status_code, problem_type(a) if a.status_code != 200 else "") for a in answers]
        shown = (seen, injected(relay))
        assert answers[-1].status_code == 200, shown
        assert all(a.status_code in (200, 503) for a in answers), shown
        [row] = await ledger(stack, payer.address)
        landed = devnet.receipt(row["tx_hash"])
        assert landed is not None and landed["status"] == "0x1"
        spent = before - devnet.balance(payer.address)
        assert spent == int(challenge.request["amount"]) + devnet.fee(row["tx_hash"]), shown  # once
    finally:
        gateway.stop()


async def test_a_gateway_dead_after_taking_credit_is_resumed_from_that_credit(
    stack: Stack, devnet: Devnet, payer: Payer, pay_gateway: PayGateway
) -> None:
    """A worker that took a payer's credit and died before saying so leaves a ``pending``
    claim; the same credential, retried once the claim is stale, goes on with that
    redemption — it neither sends the signed transfer (paying twice) nor loses the credit."""
    conn = await asyncpg.connect(stack.database_url)
    try:
        await conn.execute("INSERT INTO credits (payer, balance) VALUES ($1, $2)", payer.address, GET_PRICE)
    finally:
        await conn.close()
    async with httpx.AsyncClient(base_url=pay_gateway.url, timeout=60) as client:
        [challenge] = challenges(await client.get("/sandbox"))
        authorization = await payer.authorization(challenge)
        # What the worker did before it died: redeem (with the payment's row) and claim.
        record = PaymentRecord(
            challenge_id=challenge.id,
            payer=payer.address,
            method="GET",
            path="/sandbox",
            amount=GET_PRICE,
            currency=challenge.request["currency"],
            tx_hash=None,
        )
        redeem = CreditRedeem(payer=payer.address, amount=GET_PRICE, challenge_id=challenge.id, record=record)
        taken = httpx.post(
            f"{stack.config.core_url}/internal/credits/redeem",
            content=msgspec.json.encode(redeem),
            headers={"authorization": f"Bearer {stack.edge_token}", "content-type": "application/json"},
        )
        assert taken.status_code == 200 and taken.json()["redeemed"], taken.text
        redis = Redis.from_url(stack.redis_url)
        try:
            claim = Claim(
                state="pending",
                credential=credential_hash(authorization),
                fingerprint=request_fingerprint("GET", b"/sandbox", b"", b""),
                payer=payer.address,
                amount=GET_PRICE,
                currency=challenge.request["currency"],
                since=time.time() - 3600,
            )
            assert await PaymentState(redis).claim(challenge.id, claim) is None
        finally:
            await redis.aclose()
        balance = devnet.balance(payer.address)
        resumed = await client.get("/sandbox", headers={"authorization": authorization})
    assert resumed.status_code == 200, resumed.text
    receipt = Receipt.from_payment_receipt(resumed.headers["payment-receipt"])
    assert receipt.reference == f"credit:{taken.json()['payment_id']}"
    assert devnet.balance(payer.address) == balance  # the signed transfer was never sent
    [row] = await ledger(stack, payer.address)
    assert row["tx_hash"] is None and row["id"] == taken.json()["payment_id"]
    assert await credit(stack, payer.address) == 0


async def test_the_core_records_what_it_answered_to_a_paid_call_itself(
    stack: Stack, devnet: Devnet, payer: Payer, pay_gateway: PayGateway
) -> None:
    """The gateway forwards the payment id (dropping a client's); the core writes the status it
    answered into the payment's row before answering, so a gateway that dies before its
    outcome report loses nothing the core's sweep cannot settle (tests/core/test_edge_payments.py
    settles such rows)."""
    async with httpx.AsyncClient(base_url=pay_gateway.url, timeout=60) as client:
        [challenge] = challenges(await client.get("/sandbox/no-such-sandbox"))
        authorization = await payer.authorization(challenge)
        answer = await client.get(
            "/sandbox/no-such-sandbox",
            headers={"authorization": authorization, "x-dnah-payment": "pay_someone_elses"},
        )
    assert answer.status_code == 404, answer.text
    [row] = await ledger(stack, payer.address)
    assert row["serving_since"] is not None and row["served_status"] == 404
    for _ in range(100):  # the gateway's outcome report is sent after the answer
        [row] = await ledger(stack, payer.address)
        if row["completed_at"] is not None:
            break
        await asyncio.sleep(0.05)
    assert row["settled_by"] == "gateway" and row["upstream_status"] == 404
    assert row["credited"] == row["amount"] == await credit(stack, payer.address)


async def test_a_gateway_dead_after_forwarding_loses_neither_the_refund_nor_the_replay(
    stack: Stack, devnet: Devnet, payer: Payer, pay_gateway: PayGateway
) -> None:
    """What a worker SIGKILLed after forwarding a keyed paid call leaves behind, made by hand:
    the payment's row, the request served by the core (which kept its answer), the claim
    ``used`` and the key's marker taken — and no outcome report. The retry, with the same
    credential or a new one, is the core's answer replayed (nothing paid again); the core's
    sweep credits the failed call's price."""
    path, key = "/v1/sandboxes/no-such-sandbox", f"key-{time.time_ns()}"
    edge = {"authorization": f"Bearer {stack.edge_token}"}
    async with httpx.AsyncClient(base_url=pay_gateway.url, timeout=60) as client:
        [challenge] = challenges(await client.delete(path, headers={"idempotency-key": key}))
        authorization = await payer.authorization(challenge)
        fingerprint = request_fingerprint("DELETE", path.encode(), b"", b"")
        scoped = f"{payer.address}:{key}"
        amount = int(challenge.request["amount"])
        record = PaymentRecord(
            challenge_id=challenge.id,
            payer=payer.address,
            method="DELETE",
            path=path,
            amount=amount,
            currency=challenge.request["currency"],
            tx_hash="0x" + uuid.uuid4().hex * 2,  # stands for the transfer; never looked up
            idempotency_key=scoped,
            fingerprint=fingerprint,
        )
        recorded = httpx.post(
            f"{stack.config.core_url}/internal/payments",
            content=msgspec.json.encode(record),
            headers={**edge, "content-type": "application/json"},
        )
        assert recorded.status_code == 201, recorded.text
        payment_id = recorded.json()["payment_id"]
        served = httpx.delete(
            f"{stack.config.core_url}{path}",
            headers={**edge, "x-dnah-payer": payer.address, "x-dnah-payment": payment_id},
        )
        assert served.status_code == 404
        redis = Redis.from_url(stack.redis_url)
        try:
            claim = Claim(
                state="used",
                credential=credential_hash(authorization),
                fingerprint=fingerprint,
                payer=payer.address,
                amount=amount,
                currency=challenge.request["currency"],
                since=time.time() - 60,
                idempotency_key=scoped,
                via="chain",
                tx_hash=record.tx_hash,
                payment_id=payment_id,
            )
            state = PaymentState(redis)
            assert await state.claim(challenge.id, claim) is None
            assert await state.take_key(scoped, fingerprint) is None
        finally:
            await redis.aclose()
        balance = devnet.balance(payer.address)

        same = await client.delete(path, headers={"authorization": authorization, "idempotency-key": key})
        assert same.status_code == 404 and same.headers["idempotent-replayed"] == "true", same.text
        assert same.content == served.content
        [fresh_challenge] = challenges(await client.delete(path, headers={"idempotency-key": key}))
        fresh = await client.delete(
            path,
            headers={"authorization": await payer.authorization(fresh_challenge), "idempotency-key": key},
        )
        assert fresh.status_code == 404 and fresh.headers["idempotent-replayed"] == "true", fresh.text
    assert devnet.balance(payer.address) == balance  # nothing paid again

    settled = httpx.post(
        f"{stack.config.core_url}/internal/payments/settle",
        json={"older_than_s": 0, "payer": payer.address},
        headers=edge,
    )
    assert settled.json() == {"completed": 1, "credited_unserved": 0}, settled.text
    [row] = await ledger(stack, payer.address)
    assert row["settled_by"] == "core" and row["upstream_status"] == 404 and row["credited"] == amount
    assert await credit(stack, payer.address) == amount


async def test_a_key_whose_call_a_dead_gateway_never_forwarded_is_free_once_credited(
    stack: Stack, devnet: Devnet, payer: Payer, pay_gateway: PayGateway
) -> None:
    """A worker SIGKILLed between recording a keyed payment and forwarding it leaves the row,
    the claim and the key's marker. The core's sweep credits the payment back and gives the
    key up; the key's next request drops the dead marker, pays and is served (not a 409)."""
    path, key = "/v1/sandboxes/no-such-sandbox", f"key-{time.time_ns()}"
    edge = {"authorization": f"Bearer {stack.edge_token}"}
    fingerprint = request_fingerprint("DELETE", path.encode(), b"", b"")
    scoped = f"{payer.address}:{key}"
    async with httpx.AsyncClient(base_url=pay_gateway.url, timeout=60) as client:
        [challenge] = challenges(await client.delete(path, headers={"idempotency-key": key}))
        amount = int(challenge.request["amount"])
        record = PaymentRecord(
            challenge_id=challenge.id,
            payer=payer.address,
            method="DELETE",
            path=path,
            amount=amount,
            currency=challenge.request["currency"],
            tx_hash="0x" + uuid.uuid4().hex * 2,
            idempotency_key=scoped,
            fingerprint=fingerprint,
        )
        recorded = httpx.post(
            f"{stack.config.core_url}/internal/payments",
            content=msgspec.json.encode(record),
            headers={**edge, "content-type": "application/json"},
        )
        assert recorded.status_code == 201, recorded.text
        authorization = await payer.authorization(challenge)
        redis = Redis.from_url(stack.redis_url)
        try:
            claim = Claim(
                state="used",
                credential=credential_hash(authorization),
                fingerprint=fingerprint,
                payer=payer.address,
                amount=amount,
                currency=challenge.request["currency"],
                since=time.time() - 60,
                idempotency_key=scoped,
                via="chain",
                tx_hash=record.tx_hash,
                payment_id=recorded.json()["payment_id"],
            )
            state = PaymentState(redis)
            assert await state.claim(challenge.id, claim) is None
            assert await state.take_key(scoped, fingerprint) is None
        finally:
            await redis.aclose()
        # before the sweep: the key is held (the dead request might still be running)
        [held_challenge] = challenges(await client.delete(path, headers={"idempotency-key": key}))
        held = await client.delete(
            path, headers={"authorization": await payer.authorization(held_challenge), "idempotency-key": key}
        )
        assert held.status_code == 409 and problem_type(held) == "idempotency-key-in-use", held.text
        settled = httpx.post(
            f"{stack.config.core_url}/internal/payments/settle",
            json={"older_than_s": 0, "payer": payer.address},
            headers=edge,
        )
        assert settled.json() == {"completed": 0, "credited_unserved": 1}, settled.text
        # its credential is spent (the payment was credited back): a 402, not a 503 loop
        spent = await client.delete(path, headers={"authorization": authorization, "idempotency-key": key})
        assert spent.status_code == 402, spent.text
        [fresh_challenge] = challenges(await client.delete(path, headers={"idempotency-key": key}))
        fresh = await client.delete(
            path,
            headers={"authorization": await payer.authorization(fresh_challenge), "idempotency-key": key},
        )
        assert fresh.status_code == 404 and "idempotent-replayed" not in fresh.headers, fresh.text
    first, second = await ledger(stack, payer.address)
    assert first["settled_by"] == "core" and first["credited"] == amount and first["idempotency_key"] is None
    assert second["idempotency_key"] == scoped and second["served_status"] == 404
