"""What an agent's start costs a sandbox's first requests: spawn → first pong, and from that
pong to the reply of an ``exec`` sent at once (which waits for the handler imports the agent
defers past its first ping), with a template service declared, as in ``code-interpreter-v1``.

    .venv/bin/python -m load.bench_agent_start [--runs 40] [--tree OTHER_CHECKOUT ...]

Each ``--tree`` is another checkout's root whose ``guest/`` is measured beside this one's
(``git worktree add /tmp/before HEAD~1``, say), the trees taking turns run by run so drift
on the machine touches each alike. Every run is a new agent process with its own hash seed
(the seed orders the agent's warm-up imports) and a fresh bytecode cache, as hostd compiles
``guest/`` once per build. It prints P50/P95 per tree and how many runs' service started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hosts.agent_client import wait_ready
from load.bench_core import pct

REPO = Path(__file__).resolve().parent.parent
SERVICE_WAIT_S = 10.0


def compiled_copy(tree: Path, into: Path) -> Path:
    """``tree``'s ``guest/`` copied and compiled to bytecode, as hostd serves it."""
    shutil.copytree(tree / "guest", into / "guest", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(into / "guest")], check=True)
    return into


def _pid_in(path: Path, wait_s: float) -> int | None:
    """The pid the service wrote to ``path``, waiting up to ``wait_s`` for it; None if it
    never came (the service did not start)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if text.isdigit():
            return int(text)
        time.sleep(0.01)
    return None


async def one_start(code: Path, seed: int) -> tuple[float, float, bool]:
    """(ms to the first pong, ms from it to the exec's reply, whether the service started)."""
    with tempfile.TemporaryDirectory(prefix="dnah-bench-start-") as scratch:
        work = Path(scratch)
        pid_file = work / "service.pid"
        script = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
        service = {"name": "bench", "argv": [sys.executable, "-c", script]}
        declared = work / "services.json"
        declared.write_text(json.dumps({"services": [service]}))
        sock = work / "agent.sock"
        env = {"PYTHONPATH": str(code), "DNAH_SERVICES_FILE": str(declared), "PYTHONHASHSEED": str(seed)}
        t0 = time.perf_counter()
        agent = await asyncio.create_subprocess_exec(
            *[sys.executable, "-S", "-m", "guest.agent", "--uds", str(sock), "--init"],
            env=env,
            cwd=work,
            stdin=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        service_pid = None
        try:
            client = await wait_ready(sock, timeout=30)
            t1 = time.perf_counter()
            result = await client.exec(["true"])
            t2 = time.perf_counter()
            await client.close()
            if result.exit_code != 0:
                raise RuntimeError(f"exec failed: {result}")
            service_pid = await asyncio.to_thread(_pid_in, pid_file, SERVICE_WAIT_S)
            return (t1 - t0) * 1000, (t2 - t1) * 1000, service_pid is not None
        finally:
            os.killpg(agent.pid, signal.SIGKILL)
            await agent.wait()
            if service_pid is not None:  # in a session of its own: not in the agent's group
                with contextlib.suppress(ProcessLookupError):
                    os.kill(service_pid, signal.SIGKILL)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=40, help="starts per tree")
    parser.add_argument("--tree", type=Path, action="append", default=[], help="another checkout to compare")
    args = parser.parse_args()
    trees = [REPO, *(t.resolve() for t in args.tree)]
    with tempfile.TemporaryDirectory(prefix="dnah-bench-trees-") as scratch:
        codes = [compiled_copy(tree, Path(scratch) / str(i)) for i, tree in enumerate(trees)]
        results: dict[int, list[tuple[float, float, bool]]] = {i: [] for i in range(len(trees))}
        for run in range(args.runs):
            for i, code in enumerate(codes):
                results[i].append(await one_start(code, seed=run))
    print(f"{args.runs} starts per tree, a service declared, exec sent right after the first pong")
    for i, tree in enumerate(trees):
        pong = [r[0] for r in results[i]]
        exec_ms = [r[1] for r in results[i]]
        served = sum(r[2] for r in results[i])
        print(
            f"{tree}: spawn → pong P50 {statistics.median(pong):.1f} ms P95 {pct(pong, 0.95):.1f} ms; "
            f"pong → exec reply P50 {statistics.median(exec_ms):.1f} ms P95 {pct(exec_ms, 0.95):.1f} ms; "
            f"service started in {served}/{args.runs}"
        )


if __name__ == "__main__":
    asyncio.run(main())
