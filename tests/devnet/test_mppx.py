"""The mppx npm client (with viem) pays the pympp server through the devnet: a second,
independent implementation of Tempo transactions and of the client side of MPP.

mppx prepares its transaction differently from pympp — it tries ``eth_fillTransaction``,
then reads the block's base fee, ``eth_maxPriorityFeePerGas`` and ``eth_estimateGas`` with a
0x76 ``calls`` request, signs a random 48-bit nonce under the expiring nonce key, and leaves
``feeToken`` empty — so this checks the devnet against what viem actually sends.

Needs Node and the pinned npm packages: ``tests/devnet/node/install.sh`` installs them
outside the repository (``$DNAH_NPM_CACHE``, default ``/var/cache/dnah/npm``). The test is
skipped, saying so, when they are missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from contracts.tempo import EXPIRING_NONCE_KEY, PATH_USD, TRANSFER_WITH_MEMO_TOPIC
from tests.devnet.paid_app import PRICE_UNITS
from tests.devnet.support import (
    FAUCET_AMOUNT,
    REPO,
    TRANSFER_FEE,
    Devnet,
    address_topic,
    funded_account,
    new_account,
    word,
)
from tests.devnet.test_pympp import decode_receipt
from tests.support import free_port

NODE_DIR = Path(__file__).resolve().parent / "node"
PATH = PATH_USD.address


@pytest.fixture(scope="module")
def node_clients() -> Path:
    """The directory holding the installed npm packages, with ``pay.mjs`` copied beside them."""
    lock = hashlib.sha256((NODE_DIR / "package-lock.json").read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("DNAH_NPM_CACHE", "/var/cache/dnah/npm"))
    installed = cache / f"devnet-{lock}"
    missing = None
    if shutil.which("node") is None:
        missing = "node is not installed"
    elif not (installed / "node_modules" / ".package-lock.json").exists():
        missing = f"npm packages not installed: run {NODE_DIR.relative_to(REPO)}/install.sh"
    if missing and os.environ.get("CI"):
        pytest.fail(f"{missing} (`make test` installs them; CI must not skip the mppx client)")
    if missing:
        pytest.skip(missing)
    shutil.copy(NODE_DIR / "pay.mjs", installed / "pay.mjs")
    return installed


@pytest.fixture
def paid_server(devnet: Devnet, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The pympp paid resource under Granian; yields (its URL, the recipient address)."""
    recipient, port, log = new_account().address, free_port(), tmp_path / "paid.log"
    env = {**os.environ, "DNAH_TEST_DEVNET_URL": devnet.url, "DNAH_TEST_RECIPIENT": recipient}
    argv = [
        sys.executable, "-m", "granian", "--interface", "asgi", "--factory", "--host", "127.0.0.1",
        "--port", str(port), "--workers", "1", "--no-ws", "--log-level", "warning",
        "tests.devnet.paid_app:create_app",
    ]  # fmt: skip
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=out, start_new_session=True)
    url = f"http://127.0.0.1:{port}/sandboxes"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(url, timeout=1).status_code == 402:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield url, recipient
    finally:
        proc.terminate()
        proc.wait(10)


def test_mppx_client_pays_pympp_server(
    devnet: Devnet, node_clients: Path, paid_server: tuple[str, str]
) -> None:
    url, recipient = paid_server
    payer = funded_account(devnet)

    run = subprocess.run(
        ["node", "pay.mjs", url, devnet.url, "0x" + payer.key.hex().removeprefix("0x")],
        cwd=node_clients,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert run.returncode == 0, run.stdout + run.stderr
    outcome = json.loads(run.stdout)
    assert (outcome["status"], json.loads(outcome["body"])) == (200, {"paid": True})
    tx_hash = decode_receipt(outcome["receipt"])["reference"]
    receipt = devnet.rpc("eth_getTransactionReceipt", tx_hash)
    assert receipt["status"] == "0x1"
    assert receipt["feeToken"] == PATH  # mppx leaves feeToken empty: the transferred token pays
    [memo_log] = [log for log in receipt["logs"] if log["topics"][0] == "0x" + TRANSFER_WITH_MEMO_TOPIC.hex()]
    assert memo_log["topics"][1:3] == [address_topic(payer.address), address_topic(recipient)]
    assert memo_log["data"] == word(PRICE_UNITS)
    tx = devnet.rpc("eth_getTransactionByHash", tx_hash)
    assert int(tx["gas"], 16) == 50_000 + 5_000  # viem's estimate plus mppx's margin
    assert tx["nonceKey"] == hex(EXPIRING_NONCE_KEY)
    assert int(tx["nonce"], 16) < 2**48  # viem's random discriminator, not a sequence number
    assert devnet.balance(PATH, payer.address) == FAUCET_AMOUNT - PRICE_UNITS - TRANSFER_FEE
    assert devnet.balance(PATH, recipient) == PRICE_UNITS
