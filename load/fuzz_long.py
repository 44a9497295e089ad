"""The long fuzz run: every fuzz suite (``tests/fuzz/``) with the ``long`` Hypothesis profile
(randomized, ``LONG_FACTOR`` times the short run's examples), one pytest process per target,
and a summary to paste into docs/reliability.md ("Fuzzing").

    python -m load.fuzz_long                   # every target
    python -m load.fuzz_long pricing payment   # the targets whose module names contain these

Each target's examples are summed from Hypothesis' own statistics
(``--hypothesis-show-statistics``); its full output is kept in the log directory printed at
the end. The stack targets start their own stack, as ``make test`` does. The exit status
is non-zero when any target failed.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from load.bench_core import machine

REPO = Path(__file__).resolve().parents[1]
SUITES = REPO / "tests" / "fuzz"
_PASSING = re.compile(r"- (\d+) passing, (\d+) failing, and (\d+) invalid")
_OUTCOME = re.compile(r"^=* ?(\d+ (?:passed|failed).*?) in ([\d.]+)s", re.MULTILINE)


def run(module: Path, log_dir: Path) -> tuple[str, int, int, float, str]:
    """(target, examples run, failing examples, seconds, pytest's outcome line) of one module."""
    log = log_dir / f"{module.stem}.log"
    started = time.monotonic()
    with log.open("w") as out:
        code = subprocess.call(
            [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider",
             "--hypothesis-show-statistics", str(module.relative_to(REPO))],
            cwd=REPO,
            env={**os.environ, "HYPOTHESIS_PROFILE": "long"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    seconds = time.monotonic() - started
    text = log.read_text()
    passing = failing = 0
    for match in _PASSING.finditer(text):
        passing += int(match[1])
        failing += int(match[2])
    outcome = next((m[1] for m in _OUTCOME.finditer(text)), f"exit {code}")
    if code != 0 and "failed" not in outcome:
        outcome += f" (exit {code})"
    return (
        module.stem.removeprefix("test_").removesuffix("_fuzz"),
        passing + failing,
        failing,
        seconds,
        outcome,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("only", nargs="*", help="run only the modules whose names contain one of these")
    args = parser.parse_args()
    modules = sorted(SUITES.glob("test_*_fuzz.py"))
    if args.only:
        modules = [m for m in modules if any(word in m.stem for word in args.only)]
    log_dir = Path(tempfile.mkdtemp(prefix="dnah-fuzz-long-"))
    print(f"machine: {machine()}")
    print(f"date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, profile long")
    print("| target | examples | failing | time | pytest |")
    print("|---|---:|---:|---:|---|")
    failed = False
    total_examples, total_seconds = 0, 0.0
    for module in modules:
        target, examples, failing, seconds, outcome = run(module, log_dir)
        failed |= failing > 0 or "failed" in outcome or "error" in outcome
        total_examples += examples
        total_seconds += seconds
        print(f"| {target} | {examples} | {failing} | {seconds:.0f} s | {outcome} |", flush=True)
    print(f"| total | {total_examples} | | {total_seconds:.0f} s | |")
    print(f"logs: {log_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
