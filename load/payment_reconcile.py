"""After a payment chaos run: the chain, the ledger and the core's request log, side by side.

Three independent records of one run must agree:

- **the chain** (read straight from the devnet, never through the faulty relay): every
  successful transfer to the recipient, with its sender and amount;
- **the ledger** (the core's ``payments`` and ``credits`` tables): one row per settled payment
  — challenge id, payer, amount, tx hash (none when paid from credit), the core's status,
  what was credited back;
- **the core's request log**: which client attempts (request ids) were forwarded to the core.

Plus what the clients themselves saw (``CallRecord``: the credentials they made for each call,
and each attempt's request id, credential and answer). ``check`` returns the violations of:

- ``lost_payments``: a transfer to the recipient on the chain that the ledger does not have
  (the payer paid and the gateway forgot: no service, no credit), or a charge in the ledger
  for a call the core never saw, not credited back;
- ``unbacked_payments``: a ledger row whose transaction is not on the chain, or is from
  another sender, or moved less than the row's amount;
- ``unpaid_forwards``: an attempt the core saw without a ledger row for its credential;
- ``credential_reuse``: one credential (challenge) forwarded more than once;
- ``double_charges``: one call charged more often than the core served it (counting ledger
  rows not credited back; a GET whose answer was lost is paid and served again, legitimately);
- ``credit_mismatch``: a payer's credit balance is not what the ledger's rows add up to
  (credited back minus paid from credit);
- ``unreported_outcomes``: a ledger row without the core's status (its refund, if due, is lost);
- ``unfinished_calls``: a call whose client never got a definitive answer.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from contracts.tempo import TRANSFER_TOPIC

VIOLATIONS = (
    "lost_payments",
    "unbacked_payments",
    "unpaid_forwards",
    "credential_reuse",
    "double_charges",
    "credit_mismatch",
    "unreported_outcomes",
    "unfinished_calls",
)


@dataclass
class Attempt:
    request_id: str
    challenge_id: str | None
    """The credential it carried (None: the unpaid first try)."""
    status: int = 0
    problem: str | None = None
    """The problem type's slug, or ``transport`` when no answer came."""
    replayed: bool = False


@dataclass
class CallRecord:
    id: str
    payer: str
    method: str
    path: str
    attempts: list[Attempt] = field(default_factory=list)
    credentials: dict[str, str] = field(default_factory=dict)
    """challenge id → tx hash of the signed transfer the client put in its credential."""
    amounts: dict[str, int] = field(default_factory=dict)
    """challenge id → the price the 402 asked."""
    final: int | None = None
    """The definitive status, None if the client gave up."""


@dataclass
class Transfer:
    tx_hash: str
    sender: str
    amount: int


class Chain:
    """Reads the devnet directly (not through the fault injector)."""

    def __init__(self, url: str) -> None:
        self._client = httpx.Client(timeout=30, trust_env=False)
        self._url = url

    def rpc(self, method: str, *params: Any) -> Any:
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
        answer = self._client.post(self._url, json=body).json()
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]

    def block_number(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)

    def transfers_to(self, recipient: str, token: str, first_block: int) -> list[Transfer]:
        """Every successful ``token`` transfer to ``recipient`` mined from ``first_block`` on."""
        to_topic = "0x" + recipient.lower().removeprefix("0x").rjust(64, "0")
        transfer_topic = "0x" + TRANSFER_TOPIC.hex()
        found = []
        for number in range(first_block, self.block_number() + 1):
            block = self.rpc("eth_getBlockByNumber", hex(number), False)
            for tx_hash in block["transactions"] if block else []:
                receipt = self.rpc("eth_getTransactionReceipt", tx_hash)
                if not receipt or receipt.get("status") != "0x1":
                    continue
                for log in receipt["logs"]:
                    topics = log["topics"]
                    if (
                        log["address"].lower() == token.lower()
                        and len(topics) == 3
                        and topics[0] == transfer_topic
                        and topics[2].lower() == to_topic
                    ):
                        sender = "0x" + topics[1][-40:]
                        found.append(Transfer(tx_hash.lower(), sender.lower(), int(log["data"], 16)))
        return found

    def close(self) -> None:
        self._client.close()


async def ledger(database_url: str, payers: list[str]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The payers' ledger rows and credit balances."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT id, challenge_id, payer, method, path, amount, tx_hash, upstream_status, credited,"
            " completed_at FROM payments WHERE payer = ANY($1::text[]) ORDER BY created_at",
            payers,
        )
        credits = await conn.fetch("SELECT payer, balance FROM credits WHERE payer = ANY($1::text[])", payers)
    finally:
        await conn.close()
    return [dict(r) for r in rows], {r["payer"]: int(r["balance"]) for r in credits}


def forwarded(core_log: Path, prefix: str) -> Counter[str]:
    """Request ids starting with ``prefix`` that the core served (its own ``/internal``
    ledger calls, made by the gateway under the same id, do not count)."""
    seen: Counter[str] = Counter()
    for line in core_log.read_text(errors="replace").splitlines():
        if not line.startswith("{") or prefix not in line:
            continue
        entry = json.loads(line)
        request_id = str(entry.get("request_id", ""))
        if (
            entry.get("event") == "request"
            and request_id.startswith(prefix)
            and not str(entry.get("path", "")).startswith("/internal/")
        ):
            seen[request_id] += 1
    return seen


def check(
    calls: list[CallRecord],
    transfers: list[Transfer],
    rows: list[dict[str, Any]],
    credits: dict[str, int],
    seen: Counter[str],
) -> dict[str, list[Any]]:
    """The invariants' violations (every list empty: the run was clean)."""
    payers = {c.payer for c in calls}
    by_tx = {r["tx_hash"].lower(): r for r in rows if r["tx_hash"]}
    by_challenge = {r["challenge_id"]: r for r in rows}
    on_chain = {t.tx_hash: t for t in transfers}
    v: dict[str, list[Any]] = {name: [] for name in VIOLATIONS}

    for t in transfers:
        if t.tx_hash not in by_tx:
            v["lost_payments"].append({"tx": t.tx_hash, "payer": t.sender, "amount": t.amount})
    for r in rows:
        if not r["tx_hash"]:
            continue
        backing = on_chain.get(r["tx_hash"].lower())
        if backing is None or backing.sender != r["payer"] or backing.amount < r["amount"]:
            moved = backing.amount if backing else None
            v["unbacked_payments"].append({"payment": r["id"], "tx": r["tx_hash"], "chain": moved})

    forwards_by_challenge: Counter[str] = Counter()
    for call in calls:
        for a in call.attempts:
            if not seen.get(a.request_id):
                continue
            if a.challenge_id is None or a.challenge_id not in by_challenge:
                v["unpaid_forwards"].append({"call": call.id, "request_id": a.request_id})
            if a.challenge_id is not None:
                forwards_by_challenge[a.challenge_id] += seen[a.request_id]
        kept = [
            by_challenge[c]
            for c in call.credentials
            if c in by_challenge and by_challenge[c]["credited"] < by_challenge[c]["amount"]
        ]
        served = sum(seen.get(a.request_id, 0) for a in call.attempts)
        if len(kept) > max(served, 1):
            v["double_charges"].append(
                {"call": call.id, "payments": [r["id"] for r in kept], "served": served}
            )
        elif kept and not served:
            unserved = {"call": call.id, "payment": kept[0]["id"], "why": "charged, never served, no credit"}
            v["lost_payments"].append(unserved)
        if call.final is None:
            v["unfinished_calls"].append({"call": call.id, "attempts": len(call.attempts)})
    v["credential_reuse"] = [
        {"challenge": c, "forwards": n} for c, n in forwards_by_challenge.items() if n > 1
    ]

    credited: dict[str, int] = defaultdict(int)
    for r in rows:
        credited[r["payer"]] += r["credited"] - (0 if r["tx_hash"] else r["amount"])
        if r["completed_at"] is None:
            v["unreported_outcomes"].append({"payment": r["id"], "challenge": r["challenge_id"]})
    for payer in payers:
        if credits.get(payer, 0) != credited[payer]:
            v["credit_mismatch"].append(
                {"payer": payer, "balance": credits.get(payer, 0), "ledger_says": credited[payer]}
            )
    return v
