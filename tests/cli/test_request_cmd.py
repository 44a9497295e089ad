"""``dnah request`` and ``dnah wallet`` against real parts: a devnet (``python -m devnet``), a
pympp MPP server under Granian (``tests/cli/paid_server.py``), and the commands run as a person
runs them, in their own process.

Money is checked to the base unit: a dry run or a refusal leaves the payer's balance exactly as
it was; a payment takes exactly the price plus the transaction fee the receipt states (1,000
base units on the devnet: 50,000 gas at its fixed base fee).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cli.request_cmd import parse_usd, split_challenges, usd
from cli.wallet_cmd import balance, rpc
from tests.gateway.servers import REPO, Server, free_port, start

PATH_USD = "0x20c0000000000000000000000000000000000000"
DEVNET_FEE = 1_000
"""A pympp payment on the devnet: 50,000 gas × 2×10¹⁰ attodollars / 10¹² (devnet/chain.py)."""


@dataclass
class Devnet:
    url: str
    proc: subprocess.Popen[bytes] | None


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    """``python -m devnet`` on a free port; or, with ``DNAH_TEST_CHAIN_URL`` set, a chain with id
    1337 already running there (Tempo's localnet image answers the same methods)."""
    external = os.environ.get("DNAH_TEST_CHAIN_URL")
    if external:
        assert int(rpc(external, "eth_chainId", []), 16) == 1337
        yield Devnet(external, None)
        return
    port = free_port()
    log = tmp_path_factory.mktemp("devnet") / "devnet.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "devnet", "--port", str(port)],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    net = Devnet(f"http://127.0.0.1:{port}", proc)
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"devnet exited with {proc.returncode}:\n{log.read_text()}")
        try:
            assert int(rpc(net.url, "eth_chainId", [], timeout_s=1), 16) == 1337
            break
        except (httpx.TransportError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    yield net
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="module")
def recipient() -> str:
    return _new_wallet()[1]


@pytest.fixture(scope="module")
def server(devnet: Devnet, recipient: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DNAH_", "MPP_"))},
        "PAID_RPC_URL": devnet.url,
        "PAID_RECIPIENT": recipient,
        "PAID_SECRET": secrets.token_urlsafe(48),
    }
    log = tmp_path_factory.mktemp("paid") / "paid.log"
    srv = start("tests.cli.paid_server:create_app", env, log)
    yield srv
    srv.stop()


@dataclass
class Payer:
    key: str
    address: str


@pytest.fixture
def payer(devnet: Devnet) -> Payer:
    """A fresh wallet, funded through ``dnah wallet fund`` (1,000 pathUSD from the faucet)."""
    key, address = _new_wallet()
    done = _run_cli("cli.wallet_cmd", ["fund", address, "--rpc", devnet.url])
    assert done.returncode == 0, done.stderr
    assert balance(devnet.url, address) == 1_000 * 10**6
    return Payer(key, address)


def _new_wallet() -> tuple[str, str]:
    done = _run_cli("cli.wallet_cmd", ["new"])
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(maxsplit=1) for line in done.stdout.replace("private key", "key").splitlines())
    return lines["key"], lines["address"]


def _run_cli(module: str, args: list[str], *, key: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DNAH_")}
    if key is not None:
        env["DNAH_PRIVATE_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def request(payer: Payer | None, *args: str) -> subprocess.CompletedProcess[str]:
    return _run_cli("cli.request_cmd", list(args), key=payer.key if payer else None)


def stats(server: Server) -> dict[str, int]:
    result: dict[str, int] = httpx.get(f"{server.url}/stats").json()
    return result


def fee_of(devnet: Devnet, tx_hash: str) -> int:
    """The fee a mined transaction paid, from its receipt: ⌈gasUsed × effectiveGasPrice / 10¹²⌉."""
    receipt = rpc(devnet.url, "eth_getTransactionReceipt", [tx_hash])
    cost = int(receipt["gasUsed"], 16) * int(receipt["effectiveGasPrice"], 16)
    return -(-cost // 10**12)


# ---------------------------------------------------------------------------------------------


def test_dry_run_prints_the_exact_price_and_pays_nothing(
    devnet: Devnet, server: Server, payer: Payer, recipient: str
) -> None:
    before = stats(server)
    done = request(payer, "--dry-run", "-X", "POST", "--json", "{}", f"{server.url}/sandbox")
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert "amount: $0.01 (10000 base units)" in out
    assert f"currency: {PATH_USD} (pathUSD)" in out
    assert f"recipient: {recipient}" in out
    assert "chain: 1337 (devnet)" in out
    assert "description: Create a sandbox" in out
    assert "nothing was paid" in done.stderr
    assert balance(devnet.url, payer.address) == 1_000 * 10**6
    assert stats(server)["paid"] == before["paid"]


def test_a_paid_request_costs_exactly_the_price_plus_the_fee(
    devnet: Devnet, server: Server, payer: Payer, recipient: str
) -> None:
    received = balance(devnet.url, recipient)
    done = request(
        payer, "-v", "--network", "devnet", "--rpc", devnet.url, "--max-spend", "0.01",
        "-X", "POST", "--json", '{"name": "x"}', f"{server.url}/sandbox",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"ok": True, "echo": '{"name": "x"}'}
    assert "< 402 Payment Required" in done.stderr
    assert "amount: $0.01 (10000 base units)" in done.stderr
    assert "< 200 OK (paid)" in done.stderr
    receipt = json.loads(done.stderr.split("  receipt: ", 1)[1].splitlines()[0])
    assert receipt["status"] == "success" and receipt["method"] == "tempo"
    fee = fee_of(devnet, receipt["reference"])
    assert fee == DEVNET_FEE
    assert balance(devnet.url, payer.address) == 1_000 * 10**6 - 10_000 - fee
    assert balance(devnet.url, recipient) == received + 10_000


def test_max_spend_below_the_price_refuses_without_paying(
    devnet: Devnet, server: Server, payer: Payer
) -> None:
    before = stats(server)
    done = request(
        payer,
        "--max-spend",
        "0.001",
        "--rpc",
        devnet.url,
        "-X",
        "POST",
        "--json",
        "{}",
        f"{server.url}/sandbox",
    )
    assert done.returncode == 3
    assert "refusing to pay $0.01 (10000 base units)" in done.stderr
    assert "more than --max-spend $0.001" in done.stderr
    assert done.stdout == ""
    assert balance(devnet.url, payer.address) == 1_000 * 10**6
    assert stats(server)["paid"] == before["paid"]


def test_an_unknown_outcome_is_retried_with_the_same_credential_and_paid_once(
    devnet: Devnet, server: Server, payer: Payer
) -> None:
    done = request(payer, "--rpc", devnet.url, "-X", "POST", f"{server.url}/flaky")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ok"] is True
    assert "retrying with the same credential" in done.stderr
    assert balance(devnet.url, payer.address) == 1_000 * 10**6 - 1_000 - DEVNET_FEE


def test_a_free_route_needs_no_key(server: Server) -> None:
    done = request(None, f"{server.url}/free")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"free": True}


def test_without_a_key_nothing_is_paid(server: Server) -> None:
    done = request(None, f"{server.url}/sandbox")
    assert done.returncode == 3
    assert "no key" in done.stderr and "DNAH_PRIVATE_KEY" in done.stderr


def test_an_error_status_is_exit_1_with_the_body(server: Server) -> None:
    done = request(None, f"{server.url}/nothing-here")
    assert done.returncode == 1
    assert json.loads(done.stdout) == {"message": "not found"}
    assert "HTTP 404" in done.stderr


def test_wallet_new_writes_a_key_file_that_request_reads(tmp_path: Path, server: Server) -> None:
    key_file = tmp_path / "key"
    done = _run_cli("cli.wallet_cmd", ["new", "--key-file", str(key_file)])
    assert done.returncode == 0, done.stderr
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert _run_cli("cli.wallet_cmd", ["new", "--key-file", str(key_file)]).returncode == 1
    dry = request(None, "--dry-run", "--key-file", str(key_file), f"{server.url}/sandbox")
    assert dry.returncode == 0 and "amount: $0.0001 (100 base units)" in dry.stdout


def test_wallet_balance(devnet: Devnet, payer: Payer) -> None:
    done = _run_cli("cli.wallet_cmd", ["balance", payer.address, "--rpc", devnet.url])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "$1000 pathUSD (1000000000 base units)"


# Pure parts ------------------------------------------------------------------------------------


def test_challenges_sharing_one_header_line_are_split_outside_quotes() -> None:
    value = (
        'Payment id="a", realm="r, with comma", method="tempo", intent="charge", request="e30", '
        'Bearer realm="api", Payment id="b", realm="r", method="tempo", intent="charge", request="e30"'
    )
    assert split_challenges(value) == [
        'Payment id="a", realm="r, with comma", method="tempo", intent="charge", request="e30"',
        'Payment id="b", realm="r", method="tempo", intent="charge", request="e30"',
    ]


def test_usd_amounts_are_exact() -> None:
    given = ("0.01", "$0.0001", "1", "0.000001", "2.50")
    assert [parse_usd(x) for x in given] == [10_000, 100, 10**6, 1, 2_500_000]
    for bad in ("0.0000001", "-1", "1e-3", "abc", ""):
        with pytest.raises(ValueError):
            parse_usd(bad)
    assert [usd(x) for x in (10_000, 100, 10**6, 2_500_000, 0)] == ["$0.01", "$0.0001", "$1", "$2.5", "$0"]
