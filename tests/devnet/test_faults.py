"""``devnet.faults.Injector``: the per-call decisions of the faulty RPC relay (sans-I/O)."""

from __future__ import annotations

from collections import Counter

import pytest

from devnet.faults import FAULT_KINDS, SEND_METHODS, FaultPlan, Injector


def test_the_same_seed_gives_the_same_faults() -> None:
    plan = FaultPlan(rate=0.5, seed=3)
    runs = []
    for _ in range(2):
        injector = Injector(plan)
        runs.append([injector.decide(["eth_sendRawTransactionSync"]) for _ in range(200)])
    assert runs[0] == runs[1]
    kinds = Counter(f.kind for f in runs[0] if f is not None)
    assert set(kinds) == set(FAULT_KINDS)
    assert 60 < sum(kinds.values()) < 140  # about half the calls


def test_forced_kinds_come_first_then_the_rate_applies() -> None:
    injector = Injector(FaultPlan(rate=0.0, force=["reset", "rpc_error:nonce too low", "http_5xx:503"]))
    first = [injector.decide(["eth_sendRawTransactionSync"]) for _ in range(5)]
    assert [(f.kind, f.detail) for f in first[:3] if f] == [
        ("reset", "rst"),
        ("rpc_error", "nonce too low"),
        ("http_5xx", "503"),
    ]
    assert first[3:] == [None, None]


def test_only_targeted_methods_fail() -> None:
    injector = Injector(FaultPlan(rate=1.0, methods=["eth_getTransactionReceipt"]))
    assert injector.decide(["eth_chainId"]) is None
    assert injector.decide(["eth_getTransactionReceipt"]) is not None
    assert injector.calls == Counter({"eth_chainId": 1, "eth_getTransactionReceipt": 1})


def test_errors_that_claim_the_node_has_the_transaction_are_true() -> None:
    """ "already known" and "nonce too low" are only said about a transaction that reached
    the node, and only for sends; timeouts and lost answers always reach it."""
    injector = Injector(FaultPlan(rate=1.0, seed=5))
    faults = [injector.decide([m]) for m in ("eth_sendRawTransactionSync", "eth_call") * 300]
    for fault in faults:
        assert fault is not None
        if fault.detail in ("already known", "nonce too low"):
            assert fault.relayed and fault.method in SEND_METHODS
        if fault.kind in ("timeout", "lost"):
            assert fault.relayed
    details = {f.detail for f in faults if f is not None and f.kind == "rpc_error"}
    assert details == {"internal error", "rate limited", "already known", "nonce too low"}


@pytest.mark.parametrize("force", [["slow"], ["rpc_error:teapot"]])
def test_unknown_kinds_are_refused(force: list[str]) -> None:
    with pytest.raises(ValueError):
        Injector(FaultPlan(force=force))
