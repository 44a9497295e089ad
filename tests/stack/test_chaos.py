"""The short chaos run (``load/chaos.py``): two workers cycle sandboxes through create, exec,
stop, start, snapshot, fork and delete on a stack of their own while hostd, the core, a
gateway worker, Postgres and Redis are each SIGKILLed twice at random moments (the seed is
printed, so a failure can be replayed); once the stack has settled — within ``SETTLE_S`` —
every invariant of ``load/chaos_invariants.py`` must hold, no kept file may be lost, and no
request may have failed in a way a dead process does not explain. How much work gets done
between kills depends on timing, so only that some did is asserted."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from load.chaos import SETTLE_S, TARGETS, Plan, own_stack, run_chaos

pytestmark = [pytest.mark.stack, pytest.mark.chaos]

KILL_ROUNDS = 2


def test_every_invariant_holds_after_random_kills(tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    print(f"chaos seed {seed}")
    plan = Plan(workers=2, duration_s=45, seed=seed, interval_s=(2.0, 5.0), kill_rounds=KILL_ROUNDS)
    with own_stack(keep_logs=tmp_path / "logs") as stack:
        report = run_chaos(stack, plan)
    print(json.dumps(report, indent=1))
    context = f"seed {seed}; report above; the services' logs are in {tmp_path / 'logs'}"

    assert report["kills_by_target"] == dict.fromkeys(TARGETS, KILL_ROUNDS), context
    unsettled = f"not settled in {SETTLE_S:.0f} s: {report['invariants']}; {context}"
    assert report["settle_s"] is not None, unsettled
    assert report["invariants"]["failed"] == {}, context
    assert report["unexpected_errors"] == [], context
    assert sum(report["ops_completed"].values()) > 0, f"the workers never got a request through; {context}"
