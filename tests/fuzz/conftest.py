"""Fuzz suites: Hypothesis against every parser an outsider can reach (see docs/reliability.md,
"Fuzzing"). ``--fuzz-long`` (or ``HYPOTHESIS_PROFILE=long``) selects the long profile; see
``tests/fuzz/profiles.py``."""

from __future__ import annotations

import os

import pytest

from tests.fuzz import profiles


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fuzz-long",
        action="store_true",
        default=False,
        help="run the fuzz suites with the long Hypothesis profile (many more examples)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--fuzz-long", default=False):
        os.environ["HYPOTHESIS_PROFILE"] = profiles.LONG  # read when the test modules are imported
