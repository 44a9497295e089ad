"""Real components for the payment suites: a devnet subprocess (``python -m devnet``), the
whole stack (its core, Postgres and Redis, from ``tests/conftest.py``), payment-mode gateways
started against them the way ``cli.stack`` starts one, and payers with funded wallets who pay
through pympp's own client.

The stack's gateway stays in bearer mode for the other suites; the gateways here are extra
Granian processes pointed at the stack's core and Redis. Import the fixtures you use into
the test module (``from tests.gateway.payment_fixtures import devnet, ...``).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from eth_account import Account
from mpp import Challenge, Credential
from mpp.client import Mpp as PayingClient
from mpp.methods.tempo import TempoAccount
from mpp.methods.tempo import client as tempo_client
from mpp.methods.tempo._attribution import encode as attribution_memo
from mpp.runtime import CredentialParams

from cli.stack import Stack
from contracts.control import REQUEST_ID_HEADER
from contracts.tempo import (
    BASE_FEE_PER_GAS,
    EXPIRING_NONCE_KEY,
    FEE_MANAGER_ADDRESS,
    PATH_USD,
    TRANSFER_SELECTOR,
    TRANSFER_TOPIC,
    TRANSFER_WITH_MEMO_SELECTOR,
)
from devnet import faults
from pricing import default_table_path
from tests import support
from tests.gateway.servers import REPO, Server, free_port, gateway_env, start

MPP_SECRET = "payments-test-secret-" + "s" * 32
CHAIN_ID = 1337
TOKEN = PATH_USD.address


# the chain ----------------------------------------------------------------------------------


@dataclass
class Devnet:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def rpc(self, method: str, *params: Any) -> Any:
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
        answer = httpx.post(self.url, json=body, timeout=30).json()
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]

    def fund(self, address: str) -> None:
        self.rpc("tempo_fundAddress", address)

    def balance(self, address: str, token: str = TOKEN) -> int:
        data = "0x70a08231" + address.lower().removeprefix("0x").rjust(64, "0")
        return int(self.rpc("eth_call", {"to": token, "data": data}, "latest"), 16)

    def receipt(self, tx_hash: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = self.rpc("eth_getTransactionReceipt", tx_hash)
        return result

    def fee(self, tx_hash: str) -> int:
        """What the transaction's sender paid the fee manager (Tempo charges fees in a token)."""
        receipt = self.receipt(tx_hash)
        assert receipt is not None, tx_hash
        fee_manager = "0x" + FEE_MANAGER_ADDRESS.removeprefix("0x").rjust(64, "0")
        return sum(
            int(log["data"], 16)
            for log in receipt["logs"]
            if log["topics"][0] == "0x" + TRANSFER_TOPIC.hex() and log["topics"][2] == fee_manager
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_devnet(log_dir: Path) -> Devnet:
    """``python -m devnet`` on a free port; returns once it answers ``eth_chainId``."""
    log = log_dir / "devnet.log"
    port = free_port()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "devnet", "--port", str(port), "--log-format", "json"],
            cwd=REPO,
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
        )
    chain = Devnet(url=f"http://127.0.0.1:{port}", proc=proc, log=log)
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the devnet exited:\n{log.read_text()}")
        try:
            assert int(chain.rpc("eth_chainId"), 16) == CHAIN_ID
            return chain
        except (httpx.TransportError, RuntimeError):
            if time.monotonic() > deadline:
                chain.stop()
                raise
            time.sleep(0.05)


@pytest.fixture(scope="session")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    chain = start_devnet(tmp_path_factory.mktemp("devnet"))
    yield chain
    chain.stop()


def start_faulty_rpc(upstream: str, log: Path, *options: str) -> Server:
    """``devnet.faults`` in front of ``upstream`` (``options``: its command-line options)."""
    proc, url = faults.start(upstream, log, *options)
    return Server(url=url, proc=proc, log=log)


@pytest.fixture(scope="session")
def rpc_proxy(devnet: Devnet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``devnet.faults`` in front of the devnet, injecting nothing unless told: counts calls,
    can lose answers (``PUT /control/lose/{seconds}``)."""
    server = start_faulty_rpc(devnet.url, tmp_path_factory.mktemp("rpc-proxy") / "proxy.log")
    yield server
    server.stop()


# gateways -----------------------------------------------------------------------------------


@dataclass
class PayGateway:
    server: Server
    recipient: str
    pricing_file: Path
    mode: str

    @property
    def url(self) -> str:
        return self.server.url

    def events(self, event: str) -> list[dict[str, Any]]:
        found = []
        for line in self.server.log.read_text().splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                if entry.get("event") == event:
                    found.append(entry)
        return found

    def stop(self) -> None:
        self.server.stop()


def new_address() -> str:
    return str(Account.create().address)


def start_payment_gateway(
    stack: Stack,
    rpc_url: str,
    log_dir: Path,
    *,
    mode: str = "payment",
    pricing_file: Path | None = None,
    **env: str,
) -> PayGateway:
    """A gateway in ``mode`` in front of the stack's core, paid on the devnet at ``rpc_url``,
    with its own recipient and (unless given) its own copy of the shipped price table."""
    if pricing_file is None:
        pricing_file = log_dir / f"prices-{uuid.uuid4().hex[:8]}.toml"
        pricing_file.write_bytes(default_table_path().read_bytes())
    recipient = env.pop("DNAH_PAYMENT_RECIPIENT", None) or new_address()
    settings = {
        "DNAH_GATEWAY_MODE": mode,
        "DNAH_REDIS_URL": stack.redis_url,
        "DNAH_EDGE_TOKEN": stack.edge_token,
        "DNAH_MPP_SECRET": MPP_SECRET,
        "DNAH_PAYMENT_NETWORK": "devnet",
        "DNAH_PAYMENT_RPC_URL": rpc_url,
        "DNAH_PAYMENT_RECIPIENT": recipient,
        "DNAH_PAYMENT_REALM": "dnah.test",
        "DNAH_PRICING_FILE": str(pricing_file),
        **env,
    }
    log = log_dir / f"gateway-{mode}-{uuid.uuid4().hex[:8]}.log"
    server_env = gateway_env(stack.config.core_url, **settings)
    server = start("gateway.app:create_app", server_env, log, websockets=True)
    return PayGateway(server=server, recipient=recipient, pricing_file=pricing_file, mode=mode)


@pytest.fixture(scope="session")
def pay_gateway(
    stack: Stack, devnet: Devnet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PayGateway]:
    """The shared payment-mode gateway (shipped prices, devnet RPC)."""
    gateway = start_payment_gateway(stack, devnet.url, tmp_path_factory.mktemp("paygw"))
    yield gateway
    gateway.stop()


# payers ---------------------------------------------------------------------------------------


@dataclass
class Payer:
    """A funded wallet, and pympp's client paying with it."""

    account: TempoAccount
    devnet: Devnet
    tx_hashes: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return self.account.address.lower()

    def method(self) -> Any:
        return tempo_client.charge(account=self.account, chain_id=CHAIN_ID, rpc_url=self.devnet.url)

    def client(self, base_url: str, **kwargs: Any) -> httpx.AsyncClient:
        """An httpx client that answers 402s by paying (pympp's ``PaymentTransport``)."""
        return PayingClient(methods=[self.method()]).client(base_url=base_url, timeout=60, **kwargs)

    async def authorization(self, challenge: Challenge) -> str:
        """A credential for ``challenge``, made by pympp's client, as an Authorization value."""
        value: str = await self.method().create_credential(CredentialParams(challenge=challenge))
        return value

    def signed_transfer(
        self,
        challenge: Challenge,
        *,
        chain_id: int = CHAIN_ID,
        memo: str | None = None,
        plain: bool = False,
        amount: int | None = None,
        recipient: str | None = None,
    ) -> str:
        """A hand-built, signed 0x76 transfer for ``challenge`` (pytempo), so that a test can
        change what pympp's client would never do: the chain, the memo, the selector."""
        from pytempo import Call, TempoTransaction

        request = challenge.request
        token = request["currency"]
        to = (recipient or request["recipient"]).lower().removeprefix("0x").rjust(64, "0")
        value = hex(amount if amount is not None else int(request["amount"]))[2:].rjust(64, "0")
        if plain:
            data = "0x" + TRANSFER_SELECTOR.hex() + to + value
        else:
            bound = memo or attribution_memo(challenge.id, challenge.realm, None)
            data = "0x" + TRANSFER_WITH_MEMO_SELECTOR.hex() + to + value + bound.removeprefix("0x")
        tx = TempoTransaction.create(
            chain_id=chain_id,
            gas_limit=200_000,
            max_fee_per_gas=BASE_FEE_PER_GAS,
            max_priority_fee_per_gas=BASE_FEE_PER_GAS,
            nonce=0,
            nonce_key=EXPIRING_NONCE_KEY,
            fee_token=token,
            valid_before=int(time.time()) + 25,
            calls=(Call.create(to=token, value=0, data=data),),
        )
        return "0x" + tx.sign(self.account.private_key).encode().hex()

    def credential_for(self, challenge: Challenge, raw_tx: str, *, chain_id: int = CHAIN_ID) -> str:
        credential = Credential(
            challenge=challenge.to_echo(),
            payload={"type": "transaction", "signature": raw_tx},
            source=f"did:pkh:eip155:{chain_id}:{self.account.address}",
        )
        return credential.to_authorization()


def new_payer(devnet: Devnet) -> Payer:
    account = TempoAccount.from_key("0x" + Account.create().key.hex().removeprefix("0x"))
    devnet.fund(account.address)
    return Payer(account=account, devnet=devnet)


@pytest.fixture
def payer(devnet: Devnet) -> Payer:
    return new_payer(devnet)


# looking at what happened ---------------------------------------------------------------------


def challenges(response: httpx.Response) -> list[Challenge]:
    assert response.status_code == 402, (response.status_code, response.text)
    return [Challenge.from_www_authenticate(v) for v in response.headers.get_list("www-authenticate")]


def problem(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body: dict[str, Any] = response.json()
    return body


def problem_type(response: httpx.Response) -> str:
    return str(problem(response)["type"]).removeprefix("https://paymentauth.org/problems/")


async def ledger(stack: Stack, payer: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(stack.database_url)
    try:
        return list(
            await conn.fetch("SELECT * FROM payments WHERE payer = $1 ORDER BY created_at", payer.lower())
        )
    finally:
        await conn.close()


async def credit(stack: Stack, payer: str) -> int:
    conn = await asyncpg.connect(stack.database_url)
    try:
        return int(
            await conn.fetchval(
                "SELECT COALESCE((SELECT balance FROM credits WHERE payer = $1), 0)", payer.lower()
            )
        )
    finally:
        await conn.close()


def core_saw(stack: Stack, request_id: str) -> list[dict[str, Any]]:
    """The core's request log lines for ``request_id``, apart from the gateway's own ledger
    calls (``/internal/...``): empty means the request was never forwarded.

    The core logs a request just after answering it, so a barrier request is sent to the
    core afterwards and its line waited for: by then any line of the earlier request, which
    was answered before the barrier was even sent, is in the log too."""
    barrier = f"barrier-{uuid.uuid4().hex}"
    httpx.get(stack.config.core_url + "/health", headers={REQUEST_ID_HEADER: barrier})
    log = stack.var / "log" / "core.log"
    support.wait_for(lambda: barrier in log.read_text(), what="the core to log the barrier request")
    seen = []
    for line in (stack.var / "log" / "core.log").read_text().splitlines():
        if request_id in line and line.startswith("{"):
            entry = json.loads(line)
            if entry.get("request_id") == request_id and not str(entry.get("path", "")).startswith(
                "/internal/"
            ):
                seen.append(entry)
    return seen


def rid() -> str:
    return "t-" + uuid.uuid4().hex


async def wait_for(predicate: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


@pytest.fixture
async def anon(pay_gateway: PayGateway) -> AsyncIterator[httpx.AsyncClient]:
    """A plain client (no wallet) for the shared payment gateway."""
    async with httpx.AsyncClient(base_url=pay_gateway.url, timeout=60) as client:
        yield client
