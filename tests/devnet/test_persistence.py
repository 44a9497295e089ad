"""``--state FILE``: the chain survives a restart — a clean stop or a SIGKILL — and a file is
never opened as another chain."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from contracts.tempo import PATH_USD
from tests.devnet.support import (
    FAUCET_AMOUNT,
    REPO,
    TRANSFER_FEE,
    new_account,
    signed,
    start_devnet,
    transfer,
)

PATH = PATH_USD.address


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
def test_state_survives_a_restart(tmp_path: Path, stop: str) -> None:
    state, log = tmp_path / "chain.sqlite", tmp_path / "devnet.log"
    first = start_devnet(log, "--state", str(state))
    try:
        payer, recipient = new_account(), new_account()
        first.rpc("tempo_fundAddress", payer.address)
        receipt = first.send(signed(payer, transfer(recipient.address, 42), nonce_key=0, valid_before=None))
        first.rpc("dnah_setBalance", recipient.address, PATH_USD.address, hex(1_000))
        head = first.rpc("eth_getBlockByNumber", "latest", True)
    finally:
        if stop == "sigkill":
            os.killpg(first.proc.pid, signal.SIGKILL)
            first.proc.wait()
        else:
            assert first.stop() == 0

    second = start_devnet(log, "--state", str(state))
    try:
        assert second.rpc("eth_getBlockByNumber", "latest", True) == head
        assert second.rpc("eth_getTransactionReceipt", receipt["transactionHash"]) == receipt
        assert second.balance(PATH, payer.address) == FAUCET_AMOUNT - 42 - TRANSFER_FEE
        assert second.balance(PATH, recipient.address) == 1_000
        assert second.rpc("eth_getTransactionCount", payer.address) == "0x1"
        # The nonce lane continues where it was.
        again = second.send(
            signed(payer, transfer(recipient.address, 1), nonce_key=0, nonce=1, valid_before=None)
        )
        assert int(again["blockNumber"], 16) == int(head["number"], 16) + 1
    finally:
        second.stop()


def test_a_state_file_is_not_opened_as_another_chain(tmp_path: Path) -> None:
    state, log = tmp_path / "chain.sqlite", tmp_path / "devnet.log"
    start_devnet(log, "--state", str(state)).stop()

    refused = subprocess.run(
        [sys.executable, "-m", "devnet", "--state", str(state), "--chain-id", "4217", "--port", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert refused.returncode == 2
    assert "error: the state file holds chain 1337, not chain 4217" in refused.stderr


def test_a_file_that_is_not_a_state_file_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text('{"not": "sqlite"}' * 100)

    refused = subprocess.run(
        [sys.executable, "-m", "devnet", "--state", str(state), "--port", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert refused.returncode == 2
    assert f"error: {state} is not a devnet state file (SQLite)" in refused.stderr
    assert state.read_text() == '{"not": "sqlite"}' * 100
