"""The fuzz suites' Hypothesis profiles, and how big a run each target gets.

``short`` is what ``make test`` runs: derandomized (the same examples every run, so CI is
deterministic and a failure reproduces), no example database (nothing is read from or
written to ``.hypothesis/``), no deadline (a loaded 2-core machine is slow; a hang is
caught by each test's own timeouts instead). ``long`` is the recorded run
(``python -m load.fuzz_long``): randomized, ``LONG_FACTOR`` times the examples.

Each target takes its settings from ``fuzz(n)``, naming its short budget ``n``; the profile
scales it, so one switch (``HYPOTHESIS_PROFILE=long`` or ``--fuzz-long``) lengthens every
target. The profile is applied per test, never loaded globally, so other suites that use
Hypothesis (schemathesis) keep their own settings.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

SHORT = "short"
LONG = "long"
LONG_FACTOR = 25
"""How many times more examples a long run tries than a short one."""

_SUPPRESSED = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]
"""Slow examples are expected (real sockets, a real stack); fixtures here are set up once per
test on purpose and hold no per-example state."""

settings.register_profile(
    SHORT,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=_SUPPRESSED,
)
settings.register_profile(
    LONG,
    deadline=None,
    derandomize=False,
    database=None,
    print_blob=True,
    suppress_health_check=_SUPPRESSED,
)


def active() -> str:
    """The profile this run uses: ``HYPOTHESIS_PROFILE`` (``short`` unless set)."""
    return os.environ.get("HYPOTHESIS_PROFILE", SHORT)


def examples(short: int) -> int:
    """A target's example budget: ``short`` in a short run, ``LONG_FACTOR`` times it in a long one."""
    return short * LONG_FACTOR if active() == LONG else short


def fuzz(short: int) -> settings:
    """The settings of one fuzz target: the active profile with its example budget."""
    return settings(settings.get_profile(active()), max_examples=examples(short))
