"""E2B shape benchmark: the unmodified E2B SDKs through the gateway, with the Daytona SDK doing
the same things through the same gateway in the same run, side by side.

Measured as a user's program sees each call (SDK included): create → first command, a
``true`` command's round trip, writing and reading 1 MB and 100 MB files, and ``1+1`` in a warm
code context (E2B: the ``code-interpreter-v1`` kernel; Daytona: ``process.code_run``, a fresh
interpreter per call, which is what that shape offers). It starts its own stack on spare ports
(as ``load/bench_toolbox.py`` does), with the templates imported into the pool before any
create is timed (as ``dnah up`` prepares them), and runs each SDK in its own environment
(``tests/sdk/install.sh``) through ``load/sdk/{e2b,daytona}_worker.py``.

    python -m load.bench_e2b                  # defaults
    python -m load.bench_e2b --runs 500 --big-files 3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from cli.stack import Stack, StackConfig
from load.bench_core import machine, pct

ROOT = Path(__file__).resolve().parent.parent
ROWS = (
    ("create_first_run", "create → first command"),
    ("run_true", "command `true` round trip"),
    ("write_1mb", "write 1 MB"),
    ("read_1mb", "read 1 MB"),
    ("write_100mb", "write 100 MB"),
    ("read_100mb", "read 100 MB"),
    ("run_code", "`1+1` in a warm context"),
)


TEMPLATES = ("dnah-base", "code-interpreter-v1")
"""What the SDKs create from (E2B's ``base`` is the default template)."""
PREPARE_TIMEOUT_S = 900.0


def wait_prepared(stack: Stack, templates: tuple[str, ...]) -> None:
    """Wait until hostd has imported ``templates`` into its pool (its "template prepared" log
    lines), so that the creates measured are those of a running deployment."""
    log = stack.var / "log" / "hostd.log"
    deadline = time.monotonic() + PREPARE_TIMEOUT_S
    while True:
        prepared = {
            json.loads(line).get("template")
            for line in log.read_text(errors="replace").splitlines()
            if '"template prepared"' in line
        }
        if prepared >= set(templates):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"hostd did not prepare {sorted(set(templates) - prepared)} in time")
        time.sleep(1)


def sdk_env(manifest: str) -> Path:
    """The SDK environment ``install.sh`` made for ``manifest`` (installed on first use)."""
    done = subprocess.run(
        ["bash", str(ROOT / "tests/sdk/install.sh"), str(ROOT / "tests/sdk" / manifest)],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(done.stdout.strip())


def run_worker(python: Path, worker: str, env: dict[str, str], rounds: list[int]) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory(prefix="dnah-bench-e2b-") as cwd:
        done = subprocess.run(
            [str(python), str(ROOT / "load/sdk" / worker), *map(str, rounds)],
            cwd=cwd,
            env={"PATH": "/usr/bin:/bin", "HOME": cwd, **env},
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"{worker} failed:\n{done.stderr}")
    samples: dict[str, list[float]] = json.loads(done.stdout)
    return samples


def cell(samples: list[float]) -> str:
    if not samples:
        return "–"
    return f"{pct(samples, 0.5):.1f} / {pct(samples, 0.95):.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--creates", type=int, default=10)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--small-files", type=int, default=30, help="1 MB write+read rounds")
    parser.add_argument("--big-files", type=int, default=3, help="100 MB write+read rounds")
    parser.add_argument("--codes", type=int, default=100)
    args = parser.parse_args()
    rounds = [args.creates, args.runs, args.small_files, args.big_files, args.codes]

    e2b_python = sdk_env("requirements-e2b.txt") / "bin" / "python"
    daytona_python = sdk_env("requirements.txt") / "bin" / "python"
    var = Path(tempfile.mkdtemp(prefix="dnah-bench-e2b-"))
    config = StackConfig(
        var_dir=var,
        gateway_port=24600,
        core_port=24700,
        hostd_port=24800,
        ssh_port=24850,
        bridge="dnahe0",
        subnet="10.219.0.0/24",
        cgroup="dnahe",
        host_name="bench-e2b",
        egress="none",  # benchmark sandboxes reach nothing beyond the machine
        # as ``dnah up`` does: no SDK's first create pays for importing its template
        extra_env={"DNAH_PREPARE_TEMPLATES": ",".join(TEMPLATES)},
    )
    stack = Stack(config, say=lambda _: None)
    stack.start()
    try:
        wait_prepared(stack, TEMPLATES)
        with httpx.Client(
            base_url=config.gateway_url, headers={"authorization": f"Bearer {stack.admin_token}"}, timeout=60
        ) as admin:
            key = admin.post("/v1/api-keys", json={"name": "bench-e2b"}).raise_for_status().json()["key"]
        with open("/proc/loadavg") as loadavg:
            load = loadavg.read().split()[:3]
        print(f"machine: {machine()}\ndate: {time.strftime('%Y-%m-%d %H:%M %Z')}")
        print(f"load average: {' '.join(load)}\n")
        url = config.gateway_url
        e2b = run_worker(
            e2b_python,
            "e2b_worker.py",
            {"E2B_API_URL": url, "E2B_SANDBOX_URL": url, "E2B_API_KEY": key},
            rounds,
        )
        daytona = run_worker(
            daytona_python, "daytona_worker.py", {"DAYTONA_API_URL": url, "DAYTONA_API_KEY": key}, rounds
        )
        print("| via the gateway, P50 / P95 | n | E2B SDK | Daytona SDK |\n|---|---|---|---|")
        for name, label in ROWS:
            print(f"| {label} | {len(e2b[name])} | {cell(e2b[name])} | {cell(daytona[name])} |")
    finally:
        stack.remove()


if __name__ == "__main__":
    main()
