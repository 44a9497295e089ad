"""``load.payment_reconcile.check``: each invariant of the payment chaos run, broken on purpose,
is reported (and a consistent run reports nothing)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

from load.payment_reconcile import Attempt, CallRecord, Transfer, check

PAYER = "0x" + "a" * 40
OTHER = "0x" + "b" * 40
PRICE = 100


def row(challenge: str, tx: str | None, *, credited: int = 0, done: bool = True) -> dict[str, Any]:
    return {
        "id": "pay_" + challenge,
        "challenge_id": challenge,
        "payer": PAYER,
        "amount": PRICE,
        "tx_hash": tx,
        "credited": credited,
        "completed_at": datetime.now(UTC) if done else None,
    }


def call(name: str, *attempts: tuple[str | None, int], final: int | None = 200) -> CallRecord:
    record = CallRecord(name, PAYER, "GET", "/sandbox", final=final)
    for i, (challenge, status) in enumerate(attempts):
        record.attempts.append(Attempt(f"{name}.{i}", challenge, status))
        if challenge:
            record.credentials[challenge] = "0x" + challenge
    return record


def clean() -> tuple[list[CallRecord], list[Transfer], list[dict[str, Any]], dict[str, int], Counter[str]]:
    calls = [call("c1", (None, 402), ("ch1", 200))]
    return calls, [Transfer("0xt1", PAYER, PRICE)], [row("ch1", "0xt1")], {}, Counter({"c1.1": 1})


def broken(**violations: list[Any]) -> dict[str, list[Any]]:
    return {name: found for name, found in violations.items() if found}


def test_a_consistent_run_has_no_violations() -> None:
    assert not any(check(*clean()).values())


def test_a_transfer_missing_from_the_ledger_is_a_lost_payment() -> None:
    calls, transfers, rows, credits, seen = clean()
    transfers.append(Transfer("0xt2", PAYER, PRICE))
    assert broken(**check(calls, transfers, rows, credits, seen)) == {
        "lost_payments": [{"tx": "0xt2", "payer": PAYER, "amount": PRICE}]
    }


def test_a_row_without_its_transfer_or_with_too_little_is_unbacked() -> None:
    calls, _, rows, credits, seen = clean()
    found = check(calls, [Transfer("0xt1", OTHER, PRICE)], rows, credits, seen)
    assert [v["payment"] for v in found["unbacked_payments"]] == ["pay_ch1"]
    found = check(calls, [Transfer("0xt1", PAYER, PRICE - 1)], rows, credits, seen)
    assert [v["payment"] for v in found["unbacked_payments"]] == ["pay_ch1"]


def test_a_forward_without_a_ledger_row_is_unpaid() -> None:
    calls, transfers, _, credits, seen = clean()
    found = broken(**check(calls, transfers, [], credits, seen))
    assert found["unpaid_forwards"] == [{"call": "c1", "request_id": "c1.1"}]


def test_one_credential_forwarded_twice_is_reuse() -> None:
    calls, transfers, rows, credits, _ = clean()
    calls[0].attempts.append(Attempt("c1.2", "ch1", 200))
    found = broken(**check(calls, transfers, rows, credits, Counter({"c1.1": 1, "c1.2": 1})))
    assert found == {"credential_reuse": [{"challenge": "ch1", "forwards": 2}]}


def test_two_charges_for_one_serving_is_a_double_charge_unless_credited() -> None:
    calls = [call("c1", ("ch1", 503), ("ch2", 200))]
    transfers = [Transfer("0xt1", PAYER, PRICE), Transfer("0xt2", PAYER, PRICE)]
    rows = [row("ch1", "0xt1"), row("ch2", "0xt2")]
    found = broken(**check(calls, transfers, rows, {}, Counter({"c1.1": 1})))
    assert list(found) == ["double_charges"]
    rows[0]["credited"] = PRICE
    assert not any(check(calls, transfers, rows, {PAYER: PRICE}, Counter({"c1.1": 1})).values())


def test_a_charge_never_served_nor_credited_is_lost() -> None:
    calls, transfers, rows, credits, _ = clean()
    found = broken(**check(calls, transfers, rows, credits, Counter()))
    assert [v["payment"] for v in found["lost_payments"]] == ["pay_ch1"]


def test_credit_must_add_up_and_outcomes_must_be_reported() -> None:
    calls, transfers, _, _, seen = clean()
    rows = [row("ch1", "0xt1", credited=PRICE, done=False)]
    found = broken(**check(calls, transfers, rows, {}, seen))
    assert found["credit_mismatch"] == [{"payer": PAYER, "balance": 0, "ledger_says": PRICE}]
    assert found["unreported_outcomes"] == [{"payment": "pay_ch1", "challenge": "ch1"}]


def test_a_call_without_a_definitive_answer_is_unfinished() -> None:
    calls, transfers, rows, credits, seen = clean()
    calls.append(call("c2", (None, 402), final=None))
    assert broken(**check(calls, transfers, rows, credits, seen)) == {
        "unfinished_calls": [{"call": "c2", "attempts": 1}]
    }
