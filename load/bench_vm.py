"""VM sandboxes (QEMU microvm) against containers (OCI, runc), side by side in one run, through
the whole product (gateway → core → hostd → runtime → agent): boot to first exec, exec round
trip, memory snapshot, restore, fork, idle memory per sandbox, and what each is made of.

    sudo .venv/bin/python -m load.bench_vm                      # both runtimes, every part
    sudo .venv/bin/python -m load.bench_vm --runtimes qemu --parts snapshots --rounds 8
    sudo .venv/bin/python -m load.side_by_side --tree-bench --baseline <before> --after <after> \\
        load.bench_vm --runtimes qemu --parts snapshots,ramsweep --rounds 8 --sweep-repeats 1

Results are recorded in docs/performance.md ("VM sandboxes … vs containers") and summed up in
docs/runtimes.md ("Backends side by side").

Each runtime gets a stack of its own (``cli.stack.Stack``, as ``make up`` starts it: Postgres,
Redis, core, hostd, gateway; no warm pool, sandboxes without egress), started, measured and
removed before the next, so the two never share the CPU. One unmeasured create first builds
whatever the runtime needs (the VM guest image) and warms the caches. Every sandbox is 1 CPU,
512 MiB and the default disk unless a part says otherwise.

Parts (``--parts``):

* ``create``: create → first exec answered, through the gateway, then delete; broken down by
  hostd's own log (its request time, the runtime's ``*_ms`` steps) and, for a VM, the guest's
  console (kernel to /init, vminit, agent start, in guest uptime).
* ``exec``: ``true`` through the gateway on one sandbox (after warm-ups), with hostd's
  request time and the agent's own ``duration_ms``; then the sandbox's idle memory on the host
  (PSS/RSS of its processes, its cgroup's charge).
* ``snapshots``: rounds of pause → resume → snapshot → restore → fork of that sandbox (the fork and the
  snapshots deleted each round), with hostd's request times and the runtime's timing fields
  (a VM's ``frozen_ms``: vCPUs stopped, memory streamed, disk reflinked) and the memory
  state's size. The OCI runtime's snapshots hold the disk only; they are measured the same
  way, for comparison.
* ``ramsweep`` (VM only): snapshot and restore of idle guests of 256/512/1024 MiB, and of a
  512 MiB guest with ``--dirty-mb`` of random data in its tmpfs: the migration time against
  RAM size and against touched memory.
* ``vmm`` (VM only): exec of a bare ``-M microvm`` QEMU to its QMP greeting.

Every figure is printed with the 1-minute load average while it was measured (min–max): the
machine may be shared, and a figure taken under load says so. Latencies print as
``name  n=…  P50 … ms  P95 … ms`` for ``load/side_by_side.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from cli.stack import Stack, StackConfig
from load.bench_core import machine, pct
from load.vm_probe import (
    HostdLog,
    event_time,
    first_event,
    guest_boot,
    process_started,
    request_ms,
    runtime_event,
    sandbox_memory,
    timing_fields,
    vmm_memory,
    vmm_pid,
    vmm_start_ms,
)
from tests.support import free_port

RUNTIMES = ("oci", "qemu")
PARTS = ("create", "exec", "snapshots", "ramsweep", "vmm")
VM_RUNTIMES = frozenset({"qemu", "cloud-hypervisor"})
SPEC = {"cpu": 1, "ram_mb": 512}
TIMEOUT_S = 1200.0
"""Per HTTP call: a TCG boot under load, or a guest image built by the warm-up create."""
_UUID = "[0-9a-f-]+"
_SNAP = "snap-[0-9a-f]+"
_LOG_WAIT_S = 2.0


def load_average() -> float:
    return os.getloadavg()[0]


@dataclass
class Series:
    """Samples of one measurement (ms) and the load average when each was taken."""

    unit: str = "ms"
    samples: list[float] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)

    def add(self, value: float | None) -> None:
        if value is not None:
            self.samples.append(value)
            self.loads.append(load_average())


class Results:
    """Named series, printed in the order they were first recorded."""

    def __init__(self, runtime: str) -> None:
        self.runtime = runtime
        self.series: dict[str, Series] = {}
        self.notes: list[str] = []

    def add(self, name: str, value: float | None, unit: str = "ms") -> None:
        self.series.setdefault(name, Series(unit)).add(value)

    def note(self, line: str) -> None:
        self.notes.append(line)

    def print(self) -> None:
        for name, series in self.series.items():
            if not series.samples:
                continue
            values, loads, unit = series.samples, series.loads, series.unit
            print(
                f"{self.runtime} {name:<58} n={len(values):<4} P50 {pct(values, 0.5):10.1f} {unit}   "
                f"P95 {pct(values, 0.95):10.1f} {unit}   min {min(values):9.1f}   max {max(values):9.1f}   "
                f"load {min(loads):.1f}–{max(loads):.1f}"
            )
        for line in self.notes:
            print(f"{self.runtime} {line}")


def ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def ok(resp: httpx.Response) -> dict[str, Any]:
    if resp.status_code >= 300:
        raise RuntimeError(f"{resp.request.method} {resp.request.url.path}: {resp.status_code} {resp.text}")
    return dict(resp.json()) if resp.content else {}


class Bench:
    """One runtime's stack and the calls the parts make through its gateway."""

    def __init__(self, runtime: str, stack: Stack, results: Results) -> None:
        self.runtime = runtime
        self.stack = stack
        self.results = results
        self.log = HostdLog(stack.var / "log" / "hostd.log")
        self.gw = httpx.Client(
            base_url=stack.config.gateway_url,
            headers={"authorization": f"Bearer {stack.admin_token}"},
            timeout=TIMEOUT_S,
        )

    @property
    def is_vm(self) -> bool:
        return self.runtime in VM_RUNTIMES

    def sandbox_dir(self, sandbox_id: str) -> Path:
        return self.stack.var / "hostd" / "sandboxes" / sandbox_id

    def snapshot_dir(self, snapshot_id: str) -> Path:
        return self.stack.var / "hostd" / "pool" / "snapshots" / snapshot_id

    def create(self, spec: dict[str, Any] | None = None) -> str:
        return str(ok(self.gw.post("/v1/sandboxes", json=spec or SPEC))["id"])

    def exec(self, sandbox_id: str, cmd: list[str], timeout_ms: int = 60_000) -> dict[str, Any]:
        reply = ok(
            self.gw.post(f"/v1/sandboxes/{sandbox_id}/exec", json={"cmd": cmd, "timeout_ms": timeout_ms})
        )
        if reply.get("exit_code") != 0:
            raise RuntimeError(f"{cmd} failed in {sandbox_id}: {reply}")
        return reply

    def delete(self, sandbox_id: str) -> None:
        ok(self.gw.delete(f"/v1/sandboxes/{sandbox_id}"))

    def drop_snapshots(self, sandbox_id: str) -> None:
        for snapshot in ok(self.gw.get(f"/v1/sandboxes/{sandbox_id}/snapshots"))["items"]:
            ok(self.gw.delete(f"/v1/snapshots/{snapshot['id']}"))

    def timed(self, call: Callable[[], Any], requests: int = 1) -> tuple[Any, float, list[dict[str, Any]]]:
        """``call()``'s result, its duration at the client (ms) and hostd's log lines meanwhile:
        until the ``requests`` hostd requests the call makes are logged (hostd logs a request
        once its answer is sent, so the last line may trail the answer a little)."""
        mark = self.log.mark()
        started = time.perf_counter()
        result = call()
        elapsed = ms_since(started)
        return result, elapsed, self.hostd_lines(mark, requests)

    def hostd_lines(self, mark: int, requests: int) -> list[dict[str, Any]]:
        deadline = time.monotonic() + _LOG_WAIT_S
        while True:
            events = self.log.since(mark)
            if sum(e.get("event") == "request" for e in events) >= requests or time.monotonic() > deadline:
                return events
            time.sleep(0.01)

    # parts -------------------------------------------------------------------------------------

    def creates(self, n: int) -> None:
        r = self.results
        for _ in range(n):
            sid, create_ms, events = self.timed(self.create)
            reply, exec_ms, exec_events = self.timed(functools.partial(self.exec, sid, ["true"]))
            r.add("boot to first exec (create + first exec, gateway)", create_ms + exec_ms)
            r.add("create (gateway)", create_ms)
            r.add("first exec after create (gateway)", exec_ms)
            hostd_ms = request_ms(events, "POST", "/sandboxes")
            r.add("create: hostd request", hostd_ms)
            r.add(
                "create: gateway + core (gateway − hostd)", None if hostd_ms is None else create_ms - hostd_ms
            )
            fields = timing_fields(runtime_event(events, "sandbox created", sid))
            for name, value in fields.items():
                r.add(f"create: runtime {name}", value)
            exec_hostd = request_ms(exec_events, "POST", f"/sandboxes/{_UUID}/exec")
            r.add("first exec: hostd request", exec_hostd)
            r.add("first exec: agent's own duration_ms", float(reply["duration_ms"]))
            if self.is_vm:
                self.boot_parts(sid, events)
            self.delete(sid)

    def boot_parts(self, sid: str, events: list[dict[str, Any]]) -> None:
        """A VM's cold boot in parts that add up to the runtime's ``total_ms``: host clocks
        (hostd's log, QEMU's process start) up to QEMU, the guest's console clock from the
        kernel to the agent's spawn, the two tied together by the moment the agent channel
        synced (vminit starts the channel just before its ``ready`` line)."""
        r = self.results
        created = runtime_event(events, "sandbox created", sid)
        synced = first_event(events, "agent channel in sync")
        console = self.sandbox_dir(sid) / "run" / "console.log"
        boot = guest_boot(console.read_text(errors="replace")) if console.exists() else None
        pid = vmm_pid(self.stack.config.cgroup, sid)
        if created is None or synced is None or boot is None or pid is None:
            r.note(f"create of {sid}: boot parts not found in hostd's log or the console")
            return
        done = event_time(created)
        began = done - float(created["total_ms"]) / 1000
        qemu = process_started(pid)
        kernel_t0 = event_time(synced) - boot.vminit_ready
        r.add("create: 1 host setup before QEMU (disk, netns, cgroup)", (qemu - began) * 1000)
        r.add("create: 2 QEMU start → guest kernel clock 0 (VMM, kernel load)", (kernel_t0 - qemu) * 1000)
        r.add("create: 3 guest kernel → /init", boot.init * 1000)
        r.add(
            "create: 4 guest /init → vminit ready (modules, root, python)",
            (boot.vminit_ready - boot.init) * 1000,
        )
        r.add("create: 5 guest vminit ready → agent spawned", (boot.agent_started - boot.vminit_ready) * 1000)
        r.add(
            "create: 6 agent spawned → first answer (agent start-up)",
            (done - event_time(synced) - (boot.agent_started - boot.vminit_ready)) * 1000,
        )

    def resume_parts(self, label: str, sid: str, events: list[dict[str, Any]], event: str) -> None:
        """A restore or memory clone in parts adding up to the runtime's ``total_ms``: before
        the new QEMU starts, QEMU start → agent channel in sync (VMM start, memory loaded,
        ``cont``, the guest's channel answering), in sync → done (the agent's answer, the identity
        refresh)."""
        done_event = runtime_event(events, event, sid)
        synced = first_event(events, "agent channel in sync")
        pid = vmm_pid(self.stack.config.cgroup, sid)
        if done_event is None or synced is None or pid is None:
            return
        done = event_time(done_event)
        began = done - float(done_event["total_ms"]) / 1000
        qemu, sync = process_started(pid), event_time(synced)
        self.results.add(
            f"{label}: 1 before QEMU starts (old VM stopped, disk, netns)", (qemu - began) * 1000
        )
        self.results.add(
            f"{label}: 2 QEMU start → channel in sync (memory loaded, cont)", (sync - qemu) * 1000
        )
        self.results.add(f"{label}: 3 in sync → done (agent answers, identity refresh)", (done - sync) * 1000)

    def execs(self, sid: str, n: int) -> None:
        r = self.results
        for _ in range(20):
            self.exec(sid, ["true"])
        mark = self.log.mark()
        agent: list[float] = []
        for _ in range(n):
            started = time.perf_counter()
            reply = self.exec(sid, ["true"])
            r.add("exec round trip `true` (gateway)", ms_since(started))
            agent.append(float(reply["duration_ms"]))
        hostd = [
            float(e["duration_ms"])
            for e in self.hostd_lines(mark, n)
            if e.get("event") == "request" and str(e.get("path", "")).endswith("/exec")
        ][-n:]  # a warm-up's line may land after the mark
        for value in hostd:
            r.add("exec: hostd request", value)
        for value in agent:
            r.add("exec: agent's own duration_ms (the spawn in the sandbox)", value)

    def idle_memory(self, sid: str, execs: int, settle_s: float) -> None:
        time.sleep(settle_s)
        memory = sandbox_memory(self.stack.config.cgroup, sid)
        what = "QEMU process" if self.is_vm else "processes"
        if self.is_vm and (pid := vmm_pid(self.stack.config.cgroup, sid)) is not None:
            split = vmm_memory(pid, SPEC["ram_mb"])
            meminfo = self.exec(sid, ["cat", "/proc/meminfo"])["stdout"]
            kib = {line.split(":")[0]: int(line.split()[1]) for line in meminfo.splitlines() if line.strip()}
            used = (kib["MemTotal"] - kib["MemAvailable"]) / 1024
            self.results.note(
                f"idle VM's QEMU resident memory: guest RAM mapping {split.guest_ram:.1f} MiB, the rest "
                f"(QEMU, TCG translation cache) {split.other:.1f} MiB; the guest itself counts "
                f"{used:.1f} MiB in use (MemTotal − MemAvailable) and {kib['MemFree'] / 1024:.1f} MiB free"
            )
        self.results.note(
            f"idle memory of a {SPEC['ram_mb']} MiB sandbox after boot and {execs} execs: "
            f"PSS {memory.pss:.1f} MiB, RSS {memory.rss:.1f} MiB ({memory.processes} {what}); "
            f"cgroup anon {memory.cgroup_rss:.1f} MiB, "
            f"cgroup charge incl. page cache {memory.cgroup_usage:.1f} MiB "
            f"(load {load_average():.1f})"
        )

    def snapshot_round(self, sid: str, prefix: str, *, fork: bool = True) -> None:
        """Snapshot, restore and (with ``fork``) fork ``sid`` once, each recorded with its
        parts; then the snapshots go. A full round starts with a pause and resume (in memory:
        nothing is written)."""
        if fork:
            self.pause_resume(sid)
        snapshot_id = self.snapshot(sid, prefix)
        self.restore(sid, snapshot_id, prefix)
        if fork:
            self.fork(sid)
        self.drop_snapshots(sid)

    def pause_resume(self, sid: str) -> None:
        for verb in ("pause", "resume"):
            call = functools.partial(self.post, f"/v1/sandboxes/{sid}/{verb}")
            _, verb_ms, events = self.timed(call)
            self.results.add(f"{verb} (gateway)", verb_ms)
            self.results.add(
                f"{verb}: hostd request", request_ms(events, "POST", f"/sandboxes/{_UUID}/{verb}")
            )

    def post(self, path: str) -> dict[str, Any]:
        return ok(self.gw.post(path))

    def snapshot(self, sid: str, prefix: str) -> str:
        r = self.results
        snap, snap_ms, events = self.timed(lambda: ok(self.gw.post(f"/v1/sandboxes/{sid}/snapshot")), 2)
        r.add(f"{prefix}snapshot (gateway)", snap_ms)
        hostd_ms = request_ms(events, "POST", f"/sandboxes/{_UUID}/snapshots")
        r.add(f"{prefix}snapshot: hostd request", hostd_ms)
        for name, value in timing_fields(runtime_event(events, "sandbox snapshotted", sid)).items():
            r.add(f"{prefix}snapshot: runtime {name}", value)
        if hostd_ms is not None:
            r.add(f"{prefix}snapshot: gateway + core + seal (gateway − hostd snapshot)", snap_ms - hostd_ms)
        # QEMU's migration stream (``memory``; Cloud Hypervisor's ``memory-ranges``), wherever
        # the snapshot's layout puts it
        for memory in self.snapshot_dir(snap["id"]).rglob("memory*"):
            r.add(f"{prefix}snapshot: memory state size", memory.stat().st_size / 2**20, unit="MiB")
        return str(snap["id"])

    def restore(self, sid: str, snapshot_id: str, prefix: str) -> None:
        r = self.results
        body = {"snapshot_id": snapshot_id}
        _, restore_ms, events = self.timed(
            lambda: ok(self.gw.post(f"/v1/sandboxes/{sid}/restore", json=body))
        )
        r.add(f"{prefix}restore (gateway)", restore_ms)
        hostd_ms = request_ms(events, "POST", f"/sandboxes/{_UUID}/restore")
        r.add(f"{prefix}restore: hostd request", hostd_ms)
        fields = timing_fields(runtime_event(events, "sandbox restored", sid))
        for name, value in fields.items():
            r.add(f"{prefix}restore: runtime {name}", value)
        if hostd_ms is not None and "total_ms" in fields:
            r.add(
                f"{prefix}restore: hostd before the runtime (snapshot checks)", hostd_ms - fields["total_ms"]
            )
        if self.is_vm:
            self.resume_parts(f"{prefix}restore", sid, events, "sandbox restored")

    def fork(self, sid: str) -> None:
        r = self.results
        fork, fork_ms, events = self.timed(lambda: ok(self.gw.post(f"/v1/sandboxes/{sid}/fork", json={})), 3)
        r.add("fork (gateway)", fork_ms)
        r.add("fork: hostd snapshot request", request_ms(events, "POST", f"/sandboxes/{_UUID}/snapshots"))
        clone_hostd = request_ms(events, "POST", f"/snapshots/{_SNAP}/clone")
        r.add("fork: hostd clone request", clone_hostd)
        fields = timing_fields(runtime_event(events, "sandbox created", fork["id"]))
        for name, value in fields.items():
            r.add(f"fork: runtime create-from-snapshot {name}", value)
        if clone_hostd is not None and "total_ms" in fields:
            r.add("fork: hostd clone before the runtime (snapshot checks)", clone_hostd - fields["total_ms"])
        if self.is_vm:
            self.resume_parts("fork: clone", fork["id"], events, "sandbox created")
        self.delete(fork["id"])

    def snapshots(self, sid: str, rounds: int) -> None:
        for _ in range(rounds):
            self.snapshot_round(sid, "")

    def ramsweep(self, sizes: list[int], dirty_mb: int, repeats: int) -> None:
        cases = [(size, 0) for size in sizes] + ([(512, dirty_mb)] if dirty_mb else [])
        for ram_mb, dirty in cases:
            label = f"{ram_mb} MiB guest" + (f", {dirty} MiB dirty" if dirty else ", idle")
            sid = self.create({"cpu": 1, "ram_mb": ram_mb})
            self.exec(sid, ["true"])
            if dirty:
                cmd = f"head -c {dirty}M /dev/urandom > /dev/shm/fill"
                fill = functools.partial(self.exec, sid, ["sh", "-c", cmd], timeout_ms=600_000)
                _, fill_ms, _ = self.timed(fill)
                self.results.note(f"[{label}] writing {dirty} MiB of random data took {fill_ms / 1000:.1f} s")
            for _ in range(repeats):
                self.snapshot_round(sid, f"[{label}] ", fork=False)
            self.delete(sid)


@contextlib.contextmanager
def bench_stack(runtime: str, index: int) -> Iterator[Stack]:
    var = Path(tempfile.mkdtemp(prefix=f"dnah-bench-vm-{runtime}-"))
    tag = "q" if runtime in VM_RUNTIMES else "o"
    config = StackConfig(
        var_dir=var,
        gateway_port=free_port(),
        core_port=free_port(),
        hostd_port=free_port(),
        ssh_port=free_port(),
        bridge=f"dnahv{tag}",
        subnet=f"10.225.{index}.0/24",
        cgroup=f"dnahv{tag}",
        host_name=f"bench-vm-{runtime}",
        egress="none",  # benchmark sandboxes reach nothing beyond the machine
        runtime=runtime,
        extra_env={
            "DNAH_WARM_POOL": "",  # cold creates are what this measures
            # the warm-up may build the guest image (older trees know only the first setting)
            "DNAH_HOST_TIMEOUT_S": str(int(TIMEOUT_S)),
            "DNAH_VM_HOST_TIMEOUT_S": str(int(TIMEOUT_S)),
            "DNAH_VM_BOOT_TIMEOUT": "300",
        },
    )
    said: list[str] = []
    stack = Stack(config, say=said.append)
    try:
        stack.start()
        if not any(f"on the {runtime} runtime" in line for line in said):
            raise RuntimeError(f"the stack did not pick the {runtime} runtime: {said}")
        yield stack
    finally:
        stack.remove()


def qemu_version() -> str:
    done = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True, check=False)
    return done.stdout.splitlines()[0] if done.returncode == 0 and done.stdout else "unknown"


def run(runtime: str, index: int, args: argparse.Namespace) -> Results:
    results = Results(runtime)
    with bench_stack(runtime, index) as stack:
        bench = Bench(runtime, stack, results)
        started = time.perf_counter()
        warm = bench.create()  # builds what the runtime needs (the guest image), warms caches
        bench.exec(warm, ["true"])
        bench.delete(warm)
        results.note(f"warm-up create + exec + delete took {ms_since(started) / 1000:.1f} s (not counted)")
        if "create" in args.parts:
            bench.creates(args.creates)
        if {"exec", "snapshots"} & set(args.parts):
            sid = bench.create()
            bench.exec(sid, ["true"])
            if "exec" in args.parts:
                bench.execs(sid, args.execs)
                bench.idle_memory(sid, execs=args.execs + 21, settle_s=3.0)
            if "snapshots" in args.parts:
                bench.snapshots(sid, args.rounds)
            bench.delete(sid)
        if bench.is_vm and "ramsweep" in args.parts:
            bench.ramsweep(args.ram_sizes, args.dirty_mb, args.sweep_repeats)
    if runtime == "qemu" and "vmm" in args.parts:
        for _ in range(args.vmm_starts):
            results.add(
                "bare QEMU microvm exec → QMP greeting (512 MiB, -S)", vmm_start_ms("qemu-system-x86_64", 512)
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtimes", default=",".join(RUNTIMES), help="comma-separated, run in this order")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated among {', '.join(PARTS)}")
    parser.add_argument("--creates", type=int, default=15)
    parser.add_argument("--execs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=15, help="snapshot → restore → fork rounds")
    parser.add_argument("--ram-sizes", default="256,512,1024", help="MiB, for ramsweep")
    parser.add_argument(
        "--dirty-mb", type=int, default=192, help="random data in a 512 MiB guest's tmpfs (0: skip)"
    )
    parser.add_argument("--sweep-repeats", type=int, default=2)
    parser.add_argument("--vmm-starts", type=int, default=10)
    args = parser.parse_args()
    args.parts = [p for p in args.parts.split(",") if p]
    args.ram_sizes = [int(s) for s in args.ram_sizes.split(",") if s]
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")

    print(f"machine: {machine()}, nproc {os.cpu_count()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M %Z')}, load average at start {os.getloadavg()}")
    print(f"{qemu_version()}; accel tcg unless DNAH_VM_ACCEL says otherwise")
    print()
    for index, runtime in enumerate(r for r in args.runtimes.split(",") if r):
        started = time.perf_counter()
        results = run(runtime, index, args)
        results.print()
        print(f"{runtime}: {ms_since(started) / 1000:.0f} s in all\n", flush=True)
    print(f"load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
