"""The mppx npm client (viem underneath), run with Node, pays the gateway for create, exec and
delete on the devnet: an implementation of MPP we did not write, against our gateway."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from cli.stack import Stack
from pricing import default_table_path, load_table
from tests.devnet.support import TRANSFER_FEE
from tests.devnet.test_mppx import node_clients  # noqa: F401 - a fixture, used by name
from tests.gateway.payment_fixtures import Devnet, Payer, PayGateway, ledger
from tests.gateway.test_discovery import expected_price

TABLE = load_table(default_table_path())


def mppx_pay(
    clients: Path, url: str, devnet: Devnet, payer: Payer, method: str, body: str | None = None
) -> Any:
    key = "0x" + str(payer.account.private_key).removeprefix("0x")
    argv = ["node", str(clients / "pay.mjs"), url, devnet.url, key, method]
    if body is not None:
        argv.append(body)
    done = subprocess.run(argv, cwd=clients, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


async def test_mppx_pays_for_create_exec_and_delete(
    stack: Stack,
    devnet: Devnet,
    pay_gateway: PayGateway,
    payer: Payer,
    node_clients: Path,  # noqa: F811
) -> None:
    before = devnet.balance(payer.account.address)
    created = mppx_pay(node_clients, f"{pay_gateway.url}/sandbox", devnet, payer, "POST", "{}")
    assert created["status"] == 200, created
    assert created["receipt"]
    sid = json.loads(created["body"])["id"]

    ran = mppx_pay(
        node_clients,
        f"{pay_gateway.url}/sandbox/{sid}/toolbox/process/execute",
        devnet,
        payer,
        "POST",
        json.dumps({"command": "echo paid by mppx"}),
    )
    assert ran["status"] == 200, ran
    assert json.loads(ran["body"]) == {"exitCode": 0, "result": "paid by mppx\n"}

    deleted = mppx_pay(node_clients, f"{pay_gateway.url}/sandbox/{sid}", devnet, payer, "DELETE")
    assert deleted["status"] == 200, deleted
    assert json.loads(deleted["body"])["state"] == "destroyed"

    prices = [
        expected_price(TABLE, "POST", "/sandbox"),
        expected_price(TABLE, "POST", f"/sandbox/{sid}/toolbox/process/execute"),
        expected_price(TABLE, "DELETE", f"/sandbox/{sid}"),
    ]
    rows = await ledger(stack, payer.address)
    assert [r["amount"] for r in rows] == prices
    assert all(r["tx_hash"] and r["upstream_status"] == 200 for r in rows)
    spent = sum(p or 0 for p in prices) + 3 * TRANSFER_FEE
    assert devnet.balance(payer.account.address) == before - spent
