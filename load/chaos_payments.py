"""Payment-mode chaos: payers loop paid calls while the chain's RPC fails under the gateway;
afterwards the chain, the ledger and the core's request log must agree (``load.payment_reconcile``).

    sudo .venv/bin/python -m load.chaos_payments --payers 4 --duration 300 --fault-rate 0.2 \\
        [--seed 1] [--kill-every 0] [--report chaos-payments.json]

It starts its own stack with the devnet in payment mode (``cli.stack``, as ``make up
PAYMENTS=devnet``) and puts ``devnet.faults`` between the gateway and the devnet: every call
the gateway makes to the chain (sends, receipt lookups, ...) may time out, get a 5xx, a
JSON-RPC error, a reset or lose its answer. The payers sign with pympp's client, against the
devnet directly (a client's own RPC is not what is tested), and behave as docs/payments.md asks
of a client: a 402 is paid with a new credential; ``payment-outcome-unknown``,
``payment-in-progress``, ``service-unavailable`` or no answer at all are retried, after
``Retry-After``, with the *same* credential. ``--kill-every S`` also SIGKILLs the gateway about
every S seconds (``Stack.restart(..., hard=True)``), once every payer has done one round.

Each payer loops: create a sandbox, run a command in it, list sandboxes, delete it, run a
command in the deleted sandbox (which fails: its price becomes credit, and pays for a later
call). POSTs and DELETEs carry an ``Idempotency-Key``. The JSON report has the fault counts, what the clients
saw, the ledger and chain totals and the violations; the exit status is 1 if there is any.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from eth_account import Account
from eth_hash.auto import keccak
from mpp import Challenge, Credential
from mpp.methods.tempo import TempoAccount
from mpp.methods.tempo import client as tempo_client
from mpp.runtime import CredentialParams

from contracts.tempo import PATH_USD
from devnet import faults
from devnet.faults import FAULT_KINDS, FaultPlan
from load.payment_reconcile import VIOLATIONS, Attempt, CallRecord, Chain, check, forwarded, ledger

CHAIN_ID = 1337
RETRYABLE = frozenset({"payment-outcome-unknown", "payment-in-progress", "service-unavailable"})
MAX_CREDENTIALS = 8
"""A call that needed more fresh payments than this is given up (and reported)."""
CALL_DEADLINE_S = 240.0
"""How long a client keeps retrying one call: past a transaction's validity (60 s) and a
claim's staleness, after which the gateway must have decided."""


@dataclass
class Target:
    """Where the run's pieces are: the payment gateway, the devnet (read directly), the fault
    injector's control URL, the ledger's database and the core's log."""

    gateway_url: str
    devnet_url: str
    faults_url: str
    database_url: str
    core_log: Path
    recipient: str
    core_url: str


class Payer:
    """A funded wallet paying through pympp's client."""

    def __init__(self, devnet_url: str) -> None:
        key = "0x" + Account.create().key.hex().removeprefix("0x")
        self.account = TempoAccount.from_key(key)
        self.address = self.account.address.lower()
        self._method = tempo_client.charge(account=self.account, chain_id=CHAIN_ID, rpc_url=devnet_url)

    async def pay(self, challenge: Challenge) -> tuple[str, str]:
        """An Authorization value for ``challenge`` and the hash of the transfer inside it."""
        value: str = await self._method.create_credential(CredentialParams(challenge=challenge))
        raw = Credential.from_authorization(value).payload["signature"]
        return value, "0x" + keccak(bytes.fromhex(raw.removeprefix("0x"))).hex()


class Client:
    """One payer's loop of paid calls, each followed through to a definitive answer."""

    def __init__(self, payer: Payer, http: httpx.AsyncClient, prefix: str, calls: list[CallRecord]) -> None:
        self.payer = payer
        self.http = http
        self.prefix = prefix
        self.calls = calls
        self.warm = asyncio.Event()
        """Set after the first round: a fresh stack's first sandboxes are slow to create."""

    async def loop(self, until: float) -> None:
        while time.monotonic() < until:
            made = await self.call("POST", "/sandbox", {})
            if made.final != 200:
                await asyncio.sleep(0.2)
                continue
            sandbox = made.body["id"]
            await self.call("POST", f"/sandbox/{sandbox}/toolbox/process/execute", {"command": "echo chaos"})
            await self.call("GET", "/sandbox")
            await self.call("DELETE", f"/sandbox/{sandbox}")
            # a call that fails (the sandbox is gone): its price becomes credit, which pays
            # for a later call instead of the chain
            await self.call("POST", f"/sandbox/{sandbox}/toolbox/process/execute", {"command": "true"})
            self.warm.set()
        self.warm.set()

    async def call(self, method: str, path: str, body: Any = None) -> _Done:
        record = CallRecord(f"{self.prefix}-{uuid.uuid4().hex[:12]}", self.payer.address, method, path)
        self.calls.append(record)
        headers = {"idempotency-key": record.id} if method in ("POST", "DELETE") else {}
        content = None if body is None else json.dumps(body).encode()
        if content is not None:
            headers["content-type"] = "application/json"
        authorization: str | None = None
        challenge_id: str | None = None
        deadline = time.monotonic() + CALL_DEADLINE_S
        while time.monotonic() < deadline:
            attempt = Attempt(f"{record.id}.{len(record.attempts)}", challenge_id)
            record.attempts.append(attempt)
            sent = dict(headers, **{"x-request-id": attempt.request_id})
            if authorization:
                sent["authorization"] = authorization
            try:
                answer = await self.http.request(method, path, content=content, headers=sent)
            except httpx.TransportError:
                attempt.problem = "transport"  # no answer: retry the same credential
                await asyncio.sleep(1.0)
                continue
            attempt.status = answer.status_code
            attempt.replayed = answer.headers.get("idempotent-replayed") == "true"
            attempt.problem = _problem_type(answer)
            if answer.status_code == 402:
                if len(record.credentials) >= MAX_CREDENTIALS:
                    break
                challenge = Challenge.from_www_authenticate(answer.headers.get_list("www-authenticate")[0])
                authorization, tx_hash = await self.payer.pay(challenge)
                challenge_id = challenge.id
                record.credentials[challenge_id] = tx_hash
                record.amounts[challenge_id] = int(challenge.request["amount"])
                continue
            if attempt.problem in RETRYABLE or answer.status_code == 409:
                await asyncio.sleep(min(float(answer.headers.get("retry-after", "1")), 5.0))
                continue
            record.final = answer.status_code
            return _Done(record.final, _json(answer))
        return _Done(None, None)


@dataclass
class _Done:
    final: int | None
    body: Any


def _problem_type(answer: httpx.Response) -> str | None:
    if not answer.headers.get("content-type", "").startswith("application/problem+json"):
        return None
    return str(_json(answer).get("type", "")).removeprefix("https://paymentauth.org/problems/") or None


def _json(answer: httpx.Response) -> Any:
    try:
        return answer.json()
    except ValueError:
        return {}


# one run ------------------------------------------------------------------------------------------


async def run(
    target: Target,
    plan: FaultPlan,
    *,
    payers: int,
    duration_s: float,
    kill_every_s: float = 0.0,
    kill_gateway: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Drive the payers for ``duration_s`` under ``plan``, then reconcile; the report."""
    chain = Chain(target.devnet_url)
    first_block = chain.block_number() + 1
    wallets = [Payer(target.devnet_url) for _ in range(payers)]
    for wallet in wallets:
        chain.rpc("tempo_fundAddress", wallet.address)
    async with httpx.AsyncClient(trust_env=False, timeout=10) as control:
        (
            await control.put(f"{target.faults_url}/control/plan", content=_encode_plan(plan))
        ).raise_for_status()
    prefix = "pchaos-" + uuid.uuid4().hex[:6]
    calls: list[CallRecord] = []
    kills = 0
    started = time.monotonic()
    until = started + duration_s
    async with httpx.AsyncClient(base_url=target.gateway_url, timeout=120, trust_env=False) as http:
        clients = [Client(w, http, f"{prefix}{i}", calls) for i, w in enumerate(wallets)]
        tasks = [asyncio.create_task(c.loop(until)) for c in clients]
        if kill_every_s and kill_gateway is not None:
            # Kills start once every payer has done a round, so they hit paid calls in
            # flight rather than the fresh stack's slow first sandboxes.
            await asyncio.wait([asyncio.create_task(c.warm.wait()) for c in clients])
            rng = random.Random(plan.seed)
            while time.monotonic() < until:
                await asyncio.sleep(rng.uniform(0.5, 1.5) * kill_every_s)
                if time.monotonic() < until:
                    await asyncio.to_thread(kill_gateway)
                    kills += 1
        await asyncio.gather(*tasks)
    elapsed = time.monotonic() - started
    async with httpx.AsyncClient(trust_env=False, timeout=10) as control:
        (await control.put(f"{target.faults_url}/control/plan", content=b"{}")).raise_for_status()
        faults = (await control.get(f"{target.faults_url}/control/faults")).json()["faults"]
        await _core_log_barrier(control, target)

    addresses = [w.address for w in wallets]
    rows, credits = await _settled_ledger(target.database_url, addresses)
    transfers = [
        t
        for t in chain.transfers_to(target.recipient, PATH_USD.address, first_block)
        if t.sender in set(addresses)
    ]
    chain.close()
    seen = forwarded(target.core_log, prefix)
    violations = check(calls, transfers, rows, credits, seen)
    return _report(plan, payers, elapsed, kills, calls, faults, transfers, rows, seen, violations)


SETTLE_AFTER_S = 15
"""``DNAH_PAYMENT_SETTLE_S`` of the runner's core."""


async def _settled_ledger(
    database_url: str, payers: list[str], timeout_s: float = SETTLE_AFTER_S + 30.0
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The ledger once the gateway's outcome reports (sent after each answer, retried for a
    few seconds) have arrived, or the core has settled those a killed gateway never sent
    (after ``SETTLE_AFTER_S``), or as it is after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows, credits = await ledger(database_url, payers)
        if all(r["completed_at"] is not None for r in rows) or time.monotonic() > deadline:
            return rows, credits
        await asyncio.sleep(0.2)


async def _core_log_barrier(http: httpx.AsyncClient, target: Target, timeout_s: float = 30.0) -> None:
    """The core logs a request just after answering it: once a request sent now is in the
    log, every earlier one is too."""
    barrier = "pchaos-barrier-" + uuid.uuid4().hex
    await http.get(f"{target.core_url}/health", headers={"x-request-id": barrier})
    deadline = time.monotonic() + timeout_s
    while barrier not in target.core_log.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise RuntimeError("the core did not log the barrier request")
        await asyncio.sleep(0.1)


def _encode_plan(plan: FaultPlan) -> bytes:
    import msgspec

    return msgspec.json.encode(plan)


def _report(
    plan: FaultPlan,
    payers: int,
    elapsed: float,
    kills: int,
    calls: list[CallRecord],
    faults: list[dict[str, Any]],
    transfers: list[Any],
    rows: list[dict[str, Any]],
    seen: Counter[str],
    violations: dict[str, list[Any]],
) -> dict[str, Any]:
    answers: Counter[str] = Counter()
    for call in calls:
        for a in call.attempts:
            answers[f"{a.status} {a.problem}" if a.problem else str(a.status)] += 1
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": {
            "payers": payers,
            "duration_s": round(elapsed, 1),
            "fault_rate": plan.rate,
            "seed": plan.seed,
            "methods": plan.methods,
            "gateway_kills": kills,
        },
        "faults": {
            "total": len(faults),
            "by_kind": dict(Counter(f["kind"] for f in faults)),
            "by_method": dict(Counter(f["method"] for f in faults)),
            "by_detail": dict(Counter(f"{f['kind']}:{f['detail']}" for f in faults)),
            "relayed": sum(1 for f in faults if f["relayed"]),
        },
        "calls": {
            "total": len(calls),
            "by_final_status": dict(Counter(str(c.final) for c in calls)),
            "attempts": sum(len(c.attempts) for c in calls),
            "credentials": sum(len(c.credentials) for c in calls),
            "forwarded": sum(seen.values()),
            "answers": dict(answers.most_common()),
        },
        "chain": {"transfers": len(transfers), "amount": sum(t.amount for t in transfers)},
        "ledger": {
            "rows": len(rows),
            "via_chain": sum(1 for r in rows if r["tx_hash"]),
            "via_credit": sum(1 for r in rows if not r["tx_hash"]),
            "amount": sum(r["amount"] for r in rows),
            "credited": sum(r["credited"] for r in rows),
        },
        "violations": {name: violations[name] for name in VIOLATIONS},
        "ok": not any(violations.values()),
    }


# the command ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payers", type=int, default=4)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of paid calls")
    parser.add_argument("--fault-rate", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kill-every", type=float, default=0.0, help="SIGKILL the gateway every ~S s")
    parser.add_argument("--report", type=Path, help="also write the JSON report here")
    args = parser.parse_args(argv)

    from cli.stack import Stack, StackConfig
    from load.bench_core import machine

    var = Path(tempfile.mkdtemp(prefix="dnah-paychaos-"))
    devnet_port = free_port()
    relay, faults_url = faults.start(
        f"http://127.0.0.1:{devnet_port}", var.parent / f"{var.name}-faults.log", "--hold-s", "3"
    )
    config = StackConfig(
        var_dir=var,
        gateway_port=free_port(),
        core_port=free_port(),
        hostd_port=free_port(),
        ssh_port=free_port(),
        devnet_port=devnet_port,
        bridge="dnahpc0",
        subnet="10.218.250.0/24",
        cgroup="dnahpc0",
        host_name="paychaos",
        egress="none",
        payments="devnet",
        extra_env={
            "DNAH_PAYMENT_RPC_URL": faults_url,
            "DNAH_PAYMENT_RPC_TIMEOUT_S": "1",
            "DNAH_PAYMENT_CONFIRMATION_TIMEOUT_S": "3",
            # what a killed gateway left without an outcome report is settled by the core
            # within seconds, not the default ten minutes (_settled_ledger waits for it)
            "DNAH_PAYMENT_SETTLE_S": str(SETTLE_AFTER_S),
            "DNAH_RECONCILE_S": "2",
        },
    )
    stack = Stack(config, say=lambda line: print(line, file=sys.stderr))
    lock = threading.Lock()

    def kill_gateway() -> None:
        with lock:
            stack.restart("gateway", hard=True)

    try:
        stack.start()
        target = Target(
            gateway_url=config.gateway_url,
            devnet_url=config.devnet_url,
            faults_url=faults_url,
            database_url=stack.database_url,
            core_log=stack.var / "log" / "core.log",
            recipient=_recipient(stack),
            core_url=config.core_url,
        )
        plan = FaultPlan(rate=args.fault_rate, seed=args.seed, hold_s=3.0, force=list(FAULT_KINDS))
        report = asyncio.run(
            run(
                target,
                plan,
                payers=args.payers,
                duration_s=args.duration,
                kill_every_s=args.kill_every,
                kill_gateway=kill_gateway,
            )
        )
    finally:
        stack.remove()
        relay.terminate()
        relay.wait()
    report["machine"] = machine()
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if args.report:
        args.report.write_text(text + "\n")
    return 0 if report["ok"] else 1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _recipient(stack: Any) -> str:
    from cli.stack import wallet_address

    return wallet_address(stack.key("operator.key")).lower()


if __name__ == "__main__":
    sys.exit(main())
