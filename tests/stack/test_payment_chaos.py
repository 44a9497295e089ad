"""The short payment chaos run (``load/chaos_payments.py`` is the long one): two payers loop
paid calls through a payment-mode gateway whose chain RPC fails often and in every way
(``devnet.faults``); afterwards the chain, the ledger and the core's request log must agree:
no lost payment, no double charge, no unpaid forward, no credential used twice."""

from __future__ import annotations

import json
from pathlib import Path

from cli.stack import Stack
from devnet.faults import FAULT_KINDS, FaultPlan
from load.chaos_payments import Target, run
from tests.gateway.payment_fixtures import Devnet, start_faulty_rpc, start_payment_gateway

DURATION_S = 35.0


async def test_chain_faults_never_lose_double_or_skip_a_payment(
    stack: Stack, devnet: Devnet, tmp_path: Path
) -> None:
    relay = start_faulty_rpc(devnet.url, tmp_path / "faults.log", "--hold-s", "2.5")
    gateway = start_payment_gateway(
        stack,
        relay.url,
        tmp_path,
        DNAH_PAYMENT_RPC_TIMEOUT_S="1",
        DNAH_PAYMENT_CONFIRMATION_TIMEOUT_S="2",
    )
    try:
        target = Target(
            gateway_url=gateway.url,
            devnet_url=devnet.url,
            faults_url=relay.url,
            database_url=stack.database_url,
            core_log=stack.var / "log" / "core.log",
            recipient=gateway.recipient.lower(),
            core_url=stack.config.core_url,
        )
        # Every kind first (so a short run sees each), then a high random rate; a send and
        # its receipt lookups both failing is what makes an outcome unknown.
        plan = FaultPlan(rate=0.4, seed=20261, hold_s=2.5, force=[*FAULT_KINDS, "lost", "lost", "lost"])
        report = await run(target, plan, payers=2, duration_s=DURATION_S)
    finally:
        gateway.stop()
        relay.stop()
    shown = json.dumps(report, indent=1, default=str)
    assert report["violations"] == {name: [] for name in report["violations"]}, shown
    assert set(report["faults"]["by_kind"]) == set(FAULT_KINDS), shown
    assert report["ledger"]["via_chain"] > 0 and report["chain"]["transfers"] > 0, shown
    assert report["calls"]["by_final_status"].get("200", 0) > 0, shown
