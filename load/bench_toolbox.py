"""Toolbox benchmark: exec, session exec and run-code round trips via the gateway, and file
upload/download throughput (1 MB and 100 MB) with the peak RSS of every process on the path.

It starts its own stack (``cli.stack.Stack``, as ``make up`` does) on spare ports, so it can
run beside a live stack or ``bench_core``. Peak RSS is each process's VmHWM, reset
(``/proc/<pid>/clear_refs``, needs root) right before each size class, so it is the peak of
that transfer, baseline included; the agent is the sandbox's PID-1 agent (its server child
does the transfer).

    python -m load.bench_toolbox                 # defaults
    python -m load.bench_toolbox --execs 2000
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from cli.stack import Stack, StackConfig
from load.bench_core import machine, report, timed

MB = 1_000_000


def pattern(size: int, chunk: int = 1 << 20) -> Iterator[bytes]:
    block = os.urandom(chunk)
    sent = 0
    while sent < size:
        piece = block[: min(chunk, size - sent)]
        sent += len(piece)
        yield piece


def process_groups(stack: Stack, sandbox_id: str) -> dict[str, list[int]]:
    """The pids of each hop: gateway, core, hostd (each with its Granian workers) and the
    sandbox's agent (found by the sandbox's cgroup)."""
    groups: dict[str, list[int]] = {name: [] for name in ("gateway", "core", "hostd", "agent")}
    leaders = {stack.procs[name].pid: name for name in ("gateway", "core", "hostd")}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            group = leaders.get(os.getpgid(pid))
            if group:
                groups[group].append(pid)
            elif (
                b"guest.agent" in (entry / "cmdline").read_bytes()
                and sandbox_id in (entry / "cgroup").read_text()
            ):
                groups["agent"].append(pid)
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            continue
    return groups


def reset_peaks(groups: dict[str, list[int]]) -> None:
    for pids in groups.values():
        for pid in pids:
            Path(f"/proc/{pid}/clear_refs").write_text("5")


def peaks_mb(groups: dict[str, list[int]]) -> str:
    parts = []
    for name, pids in groups.items():
        peak_kb = 0
        for pid in pids:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak_kb = max(peak_kb, int(line.split()[1]))
        parts.append(f"{name} {peak_kb / 1024:.0f}")
    return "peak RSS MiB: " + ", ".join(parts)


def transfer(client: httpx.Client, sid: str, size: int, rounds: int, groups: dict[str, list[int]]) -> None:
    base = f"/v1/sandboxes/{sid}/files"
    label = f"{size // MB} MB"
    reset_peaks(groups)
    ups: list[float] = []
    downs: list[float] = []
    for i in range(rounds):
        digest = hashlib.sha256()
        data = list(pattern(size)) if size <= 8 * MB else None
        started = time.perf_counter()
        resp = client.put(base, params={"path": f"bench-{i}.bin"}, content=data or pattern(size))
        ups.append(time.perf_counter() - started)
        resp.raise_for_status()
        started = time.perf_counter()
        received = 0
        with client.stream("GET", base, params={"path": f"bench-{i}.bin"}) as down:
            down.raise_for_status()
            for chunk in down.iter_raw():
                digest.update(chunk)
                received += len(chunk)
        downs.append(time.perf_counter() - started)
        if received != size:
            raise RuntimeError(f"downloaded {received} of {size} bytes")
    for name, seconds in (("upload", ups), ("download", downs)):
        ordered = sorted(seconds)
        p50 = ordered[len(ordered) // 2]
        print(
            f"{name} {label:<7} n={rounds:<4} P50 {p50 * 1000:8.1f} ms   "
            f"{size / MB / p50:8.1f} MB/s (P50)   best {size / MB / ordered[0]:8.1f} MB/s"
        )
    print(f"  {label}: {peaks_mb(groups)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--execs", type=int, default=1000)
    parser.add_argument("--small-files", type=int, default=50, help="1 MB upload+download rounds")
    parser.add_argument("--big-files", type=int, default=5, help="100 MB upload+download rounds")
    args = parser.parse_args()

    var = Path(tempfile.mkdtemp(prefix="dnah-bench-toolbox-"))
    config = StackConfig(
        var_dir=var,
        gateway_port=24300,
        core_port=24400,
        hostd_port=24500,
        ssh_port=24550,
        bridge="dnaht0",
        subnet="10.218.0.0/24",
        cgroup="dnaht",
        host_name="bench-toolbox",
        egress="none",  # benchmark sandboxes reach nothing beyond the machine
    )
    stack = Stack(config, say=lambda _: None)
    stack.start()
    try:
        print(f"machine: {machine()}\ndate: {time.strftime('%Y-%m-%d %H:%M %Z')}\n")
        headers = {"authorization": f"Bearer {stack.admin_token}"}
        gw = httpx.Client(base_url=config.gateway_url, headers=headers, timeout=300)
        sid = gw.post("/v1/sandboxes", json={}).json()["id"]

        calls = {
            "exec round trip via gateway": (f"/v1/sandboxes/{sid}/exec", {"cmd": ["true"]}),
            "run-code bash via gateway": (f"/v1/sandboxes/{sid}/run-code", {"code": "true", "lang": "bash"}),
            "run-code python via gateway": (
                f"/v1/sandboxes/{sid}/run-code",
                {"code": "pass", "lang": "python"},
            ),
        }
        session = gw.post(f"/v1/sandboxes/{sid}/sessions", json={}).json()["id"]
        calls["session exec round trip via gateway"] = (
            f"/v1/sandboxes/{sid}/sessions/{session}/exec",
            {"cmd": "true"},
        )
        for name, (path, body) in calls.items():
            runs = args.execs if "run-code" not in name else max(50, args.execs // 10)
            for _ in range(20):
                timed(lambda p=path, b=body: gw.post(p, json=b), 200)
            report(name, [timed(lambda p=path, b=body: gw.post(p, json=b), 200) for _ in range(runs)])
        print()

        groups = process_groups(stack, sid)
        if not groups["agent"]:
            raise RuntimeError("could not find the sandbox's agent process")
        transfer(gw, sid, 1 * MB, args.small_files, groups)
        transfer(gw, sid, 100 * MB, args.big_files, groups)
        gw.delete(f"/v1/sandboxes/{sid}").raise_for_status()
    finally:
        stack.remove()


if __name__ == "__main__":
    main()
