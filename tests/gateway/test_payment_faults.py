"""Single chain faults, placed on purpose (``devnet.faults``' forced schedule), that once cost a
payer money: each must end with the payment recorded once and the call served, never with a
fresh 402 for a payment that landed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest

from cli.stack import Stack
from devnet.faults import FaultPlan
from tests.gateway.payment_fixtures import (
    Devnet,
    Payer,
    challenges,
    ledger,
    payer,
    problem_type,
    start_faulty_rpc,
    start_payment_gateway,
)
from tests.gateway.servers import Server

__all__ = ["payer"]  # fixtures used by this module

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
        assert row["tx_hash"] and devnet.receipt(row["tx_hash"])["status"] == "0x1"
        spent = before - devnet.balance(payer.address)
        assert spent == int(challenge.request["amount"]) + devnet.fee(row["tx_hash"]), shown  # once
    finally:
        gateway.stop()
