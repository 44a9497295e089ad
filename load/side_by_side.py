"""Before and after in one run: a benchmark module run at a baseline commit and at the working
tree, one after the other on the same machine, with the results in one table.

The baseline is exported with ``git archive`` into a temporary directory and run from there
(its own ``cli.stack`` starts its own core, hostd and runtime, with the template its own
build script names), so an old runtime is measured by its own code, not a re-creation of it.
Both runs use the same interpreter and virtualenv; the working tree's packages are shadowed by
the export's because ``python -m`` puts the current directory first on ``sys.path``.

    python -m load.side_by_side --baseline f77177d load.bench_core --creates 20
    python -m load.side_by_side --baseline f77177d load.bench_lifecycle --rounds 10

``--tree-bench`` runs the working tree's ``load/`` against the baseline's product code, so
both sides are measured by the same benchmark (needed when the benchmark is newer than the
baseline, or changed since). ``--after <commit>`` measures that commit, exported the same
way, instead of the working tree (which may hold someone's unfinished changes).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_LATENCY = re.compile(r"^(?P<name>.+?)\s+n=\d+\s+P50\s+(?P<p50>[\d.]+) ms\s+P95\s+(?P<p95>[\d.]+) ms")
_RATE = re.compile(r"^(?P<name>[^:]+?)\s+(?P<rate>[\d.]+) (?P<unit>\w+/s)$")


def run(module: str, args: list[str], cwd: Path) -> dict[str, str]:
    """Run ``python -m module args`` in ``cwd``, echo its output, return result per metric name."""
    done = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    sys.stderr.write(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"{module} failed in {cwd} with status {done.returncode}")
    results: dict[str, str] = {}
    for line in done.stdout.splitlines():
        if match := _LATENCY.match(line):
            results[match["name"].strip()] = f"{match['p50']} / {match['p95']} ms"
        elif match := _RATE.match(line):
            results[match["name"].strip()] = f"{match['rate']} {match['unit']}"
    return results


def export(ref: str, into: Path) -> None:
    archive = subprocess.run(["git", "archive", ref], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="the commit to compare against")
    parser.add_argument("--after", help="a commit to measure instead of the working tree")
    parser.add_argument("--tree-bench", action="store_true", help="run this tree's load/ on both sides")
    parser.add_argument("module", help="a benchmark module, e.g. load.bench_core")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    options = parser.parse_args()

    commit = short(options.baseline)
    before = run_at(commit, options)
    if options.after:
        after_name = short(options.after)
        after = run_at(after_name, options)
    else:
        after_name = "this tree"
        after = run(options.module, options.args, REPO)

    width = max(len(name) for name in [*before, *after, "metric"])
    print(f"{'metric':<{width}}  {'baseline ' + commit + ' (P50 / P95)':<30}  {after_name} (P50 / P95)")
    for name in dict.fromkeys([*before, *after]):
        print(f"{name:<{width}}  {before.get(name, '—'):<30}  {after.get(name, '—')}")


def short(ref: str) -> str:
    rev_parse = ["git", "rev-parse", "--short", ref]
    return subprocess.run(rev_parse, cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()


def run_at(commit: str, options: argparse.Namespace) -> dict[str, str]:
    """The benchmark run from an export of ``commit`` (with this tree's load/ on request)."""
    with tempfile.TemporaryDirectory(prefix=f"dnah-{commit}-") as tmp:
        export(commit, Path(tmp))
        if options.tree_bench:
            ignore = shutil.ignore_patterns("__pycache__")
            shutil.copytree(REPO / "load", Path(tmp) / "load", dirs_exist_ok=True, ignore=ignore)
        return run(options.module, options.args, Path(tmp))


if __name__ == "__main__":
    main()
