"""The devnet as tests meet it: started for real as ``python -m devnet`` on a free port, spoken
to over JSON-RPC, and fed transactions built and signed with pytempo, as a client would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from eth_account import Account
from eth_account.signers.local import LocalAccount
from pytempo import Call, TempoTransaction

from contracts.tempo import (
    BASE_FEE_PER_GAS,
    DEVNET,
    EXPIRING_NONCE_KEY,
    PATH_USD,
    TRANSFER_SELECTOR,
    TRANSFER_WITH_MEMO_SELECTOR,
)
from tests.support import free_port

REPO = Path(__file__).resolve().parents[2]
FAUCET_AMOUNT = 1_000_000_000
"""What ``tempo_fundAddress`` mints of each token: 1,000.000000."""
TRANSFER_FEE = 1_000
"""Fee of a one-transfer transaction at the base fee: ⌈50,000 gas × 2×10¹⁰ / 10¹²⌉."""
FEE_MANAGER = "0xfeec000000000000000000000000000000000000"


class RpcFailure(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.data = data


@dataclass
class Devnet:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def rpc(self, method: str, *params: Any) -> Any:
        body = httpx.post(
            self.url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
        )
        body.raise_for_status()
        answer = body.json()
        if "error" in answer:
            error = answer["error"]
            raise RpcFailure(error["code"], error["message"], error.get("data"))
        return answer["result"]

    def balance(self, token: str, holder: str) -> int:
        data = "0x70a08231" + holder[2:].lower().rjust(64, "0")
        return int(self.rpc("eth_call", {"to": token, "data": data}, "latest"), 16)

    def send(self, tx: TempoTransaction) -> dict[str, Any]:
        """Submit with ``eth_sendRawTransactionSync`` and return the receipt."""
        receipt: dict[str, Any] = self.rpc("eth_sendRawTransactionSync", raw_hex(tx), 5_000)
        return receipt

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


def start_devnet(log: Path, *args: str, port: int | None = None) -> Devnet:
    """Start ``python -m devnet`` and wait until it answers."""
    port = port or free_port()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "devnet", "--port", str(port), "--log-format", "json", *args],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    devnet = Devnet(url=f"http://127.0.0.1:{port}", proc=proc, log=log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the devnet exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{devnet.url}/health", timeout=1).status_code == 200:
                return devnet
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    devnet.stop()
    raise RuntimeError(f"the devnet did not come up:\n{log.read_text()}")


def new_account() -> LocalAccount:
    account: LocalAccount = Account.create()
    return account


def funded_account(devnet: Devnet) -> LocalAccount:
    account = new_account()
    devnet.rpc("tempo_fundAddress", account.address)
    return account


def transfer(to: str, amount: int, *, token: str = PATH_USD.address, memo: bytes | None = None) -> Call:
    """A TIP-20 ``transfer`` (or ``transferWithMemo`` with a memo) call."""
    args = bytes(12) + bytes.fromhex(to[2:]) + amount.to_bytes(32, "big")
    if memo is None:
        return Call.create(to=token, data=TRANSFER_SELECTOR + args)
    return Call.create(to=token, data=TRANSFER_WITH_MEMO_SELECTOR + args + memo)


def signed(account: LocalAccount, *calls: Call, **fields: Any) -> TempoTransaction:
    """A Tempo transaction as pympp builds one (expiring nonce, 60 s validity), signed by
    ``account``; ``fields`` override any of pytempo's ``TempoTransaction.create`` arguments."""
    params: dict[str, Any] = {
        "chain_id": DEVNET.chain_id,
        "gas_limit": 100_000,
        "max_fee_per_gas": BASE_FEE_PER_GAS,
        "max_priority_fee_per_gas": 0,
        "nonce_key": EXPIRING_NONCE_KEY,
        "nonce": 0,
        "valid_before": int(time.time()) + 60,
        "calls": calls,
    }
    params.update(fields)
    return TempoTransaction.create(**params).sign(account.key.hex())


def raw_hex(tx: TempoTransaction) -> str:
    return "0x" + tx.encode().hex()


def word(value: int) -> str:
    return "0x" + value.to_bytes(32, "big").hex()


def address_topic(address: str) -> str:
    return "0x" + address[2:].lower().rjust(64, "0")
