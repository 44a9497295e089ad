"""What the host can see of a sandbox while ``load/bench_vm.py`` drives it through the gateway:
hostd's timing log lines, the VM's console (kernel and vminit lines stamped with the guest's
uptime), the memory of a sandbox's processes, and the bare cost of starting the VMM.

Read-only observers: none of this changes what is measured. Each says where its numbers come
from, because the breakdown of an operation is only as good as the clock behind each part.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any


class HostdLog:
    """hostd's JSON log (``var/log/hostd.log``), read from a mark onwards: the benchmark runs
    one operation at a time, so the lines after its mark are that operation's."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def mark(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def since(self, mark: int) -> list[dict[str, Any]]:
        with self.path.open("rb") as f:
            f.seek(mark)
            data = f.read()
        events = []
        for line in data.splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    events.append(event)
        return events


def request_ms(events: list[dict[str, Any]], method: str, path_pattern: str) -> float | None:
    """hostd's own duration of the request whose path matches ``path_pattern`` (a regex)."""
    pattern = re.compile(path_pattern)
    for event in events:
        if (
            event.get("event") == "request"
            and event.get("method") == method
            and pattern.fullmatch(event.get("path", ""))
        ):
            return float(event["duration_ms"])
    return None


def runtime_event(events: list[dict[str, Any]], name: str, sandbox_id: str) -> dict[str, Any] | None:
    """The runtime's log line ``name`` (``sandbox created``, ``sandbox snapshotted``, …) for
    ``sandbox_id``, with its ``*_ms`` timing fields."""
    for event in events:
        if event.get("event") == name and event.get("sandbox_id") == sandbox_id:
            return event
    return None


def first_event(events: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((event for event in events if event.get("event") == name), None)


def event_time(event: dict[str, Any]) -> float:
    """When hostd logged ``event``, in seconds since the epoch (its ``timestamp``, UTC)."""
    return datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()


def timing_fields(event: dict[str, Any] | None) -> dict[str, float]:
    if event is None:
        return {}
    return {
        key: float(value)
        for key, value in event.items()
        if key.endswith("_ms") and isinstance(value, int | float)
    }


_KERNEL_LINE = re.compile(r"^\[\s*(?P<t>\d+\.\d+)\] (?P<text>.*)$")
_VMINIT_LINE = re.compile(r"^dnah-vminit: \[(?P<t>\d+\.\d+)\] (?P<text>.*)$")


@dataclass(frozen=True)
class GuestBoot:
    """Milestones of one cold boot, in seconds of guest uptime (the console's own stamps)."""

    init: float
    """The kernel runs the initramfs's /init: the kernel's own boot."""
    vminit_ready: float
    """vminit (PID 1 on the root disk) has mounted, configured and started its channel."""
    agent_started: float
    """vminit has spawned the agent (its Python still has to import and answer a ping)."""


def guest_boot(console: str) -> GuestBoot | None:
    """The milestones of the boot in ``console`` (a VM's ``console.log``), or None when it
    does not hold a whole cold boot (a restored VM's console starts after the boot)."""
    init = ready = agent = None
    for line in console.splitlines():
        if (
            (kernel := _KERNEL_LINE.match(line))
            and init is None
            and "Run /init as init process" in kernel["text"]
        ):
            init = float(kernel["t"])
        elif vminit := _VMINIT_LINE.match(line):
            if vminit["text"].startswith("ready:") and ready is None:
                ready = float(vminit["t"])
            elif vminit["text"].startswith("agent started") and agent is None:
                agent = float(vminit["t"])
    if init is None or ready is None or agent is None:
        return None
    return GuestBoot(init=init, vminit_ready=ready, agent_started=agent)


@dataclass(frozen=True)
class Memory:
    """Memory of a sandbox on the host, in MiB."""

    rss: float
    """Sum of the resident sets of its processes (shared pages counted in each)."""
    pss: float
    """Sum of their proportional sets (shared pages split among the sharers)."""
    cgroup_rss: float
    """Anonymous memory charged to the sandbox's cgroup (memory.stat ``total_rss``)."""
    cgroup_usage: float
    """Everything charged to it, page cache included (memory.usage_in_bytes)."""
    processes: int


_MEMORY_ROOT = Path("/sys/fs/cgroup/memory")


def _memory_cgroup(cgroup_parent: str, sandbox_id: str) -> Path:
    """The sandbox's directory in the cgroup v1 ``memory`` hierarchy (this machine's layout;
    on cgroup v2 the same names live under the unified root)."""
    root = _MEMORY_ROOT if _MEMORY_ROOT.is_dir() else Path("/sys/fs/cgroup")
    return root / cgroup_parent / sandbox_id


def cgroup_pids(cgroup_parent: str, sandbox_id: str) -> set[int]:
    directory = _memory_cgroup(cgroup_parent, sandbox_id)
    return {int(pid) for procs in directory.rglob("cgroup.procs") for pid in procs.read_text().split()}


def vmm_pid(cgroup_parent: str, sandbox_id: str) -> int | None:
    """The VMM process in the sandbox's cgroup (a VM sandbox has just that one)."""
    for pid in cgroup_pids(cgroup_parent, sandbox_id):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().startswith(("qemu", "cloud-hyperviso")):
                return pid
    return None


def process_started(pid: int) -> float:
    """When ``pid`` started, in seconds since the epoch: field 22 of /proc/<pid>/stat (clock
    ticks since boot, 10 ms steps) moved onto the wall clock through CLOCK_BOOTTIME."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    ticks = int(stat[stat.rindex(")") + 2 :].split()[19])
    boot = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
    return boot + ticks / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class VmmMemory:
    """A VMM's resident memory split by mapping, in MiB."""

    guest_ram: float
    """Resident pages of the guest RAM mapping (the one mapping of exactly the guest's size)."""
    other: float
    """Everything else: the VMM's own heap and libraries, and under TCG its translation cache."""


def vmm_memory(pid: int, ram_mb: int) -> VmmMemory:
    guest = total = 0
    size = rss = 0
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name == "Size":
            size = int(rest.split()[0])
        elif name == "Rss":
            rss = int(rest.split()[0])
            total += rss
            if size == ram_mb * 1024:
                guest += rss
    return VmmMemory(guest_ram=guest / 1024, other=(total - guest) / 1024)


_MIB = 2**20


def sandbox_memory(cgroup_parent: str, sandbox_id: str) -> Memory:
    """The memory of every process in the sandbox's cgroup. For a VM that is its VMM, whose
    resident set holds the guest's touched RAM."""
    directory = _memory_cgroup(cgroup_parent, sandbox_id)
    pids = cgroup_pids(cgroup_parent, sandbox_id)
    rss = pss = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                name, _, rest = line.partition(":")
                if name in ("Rss", "Pss"):
                    kib = int(rest.split()[0])
                    rss, pss = (rss + kib, pss) if name == "Rss" else (rss, pss + kib)
    stat = (
        dict(line.split() for line in (directory / "memory.stat").read_text().splitlines())
        if (directory / "memory.stat").exists()
        else {}
    )
    anon = int(stat.get("total_rss", stat.get("anon", 0)))
    usage_file = directory / "memory.usage_in_bytes"
    usage = (
        int(usage_file.read_text())
        if usage_file.exists()
        else int((directory / "memory.current").read_text())
    )
    return Memory(
        rss=rss / 1024, pss=pss / 1024, cgroup_rss=anon / _MIB, cgroup_usage=usage / _MIB, processes=len(pids)
    )


def vmm_start_ms(binary: str, ram_mb: int, accel: str = "tcg") -> float:
    """Milliseconds from exec of a bare ``-M microvm`` QEMU (no kernel run: ``-S``) to its QMP
    greeting: the VMM's own start-up, which every cold boot and restore pays before the guest
    runs."""
    with tempfile.TemporaryDirectory(prefix="dnah-bench-vmm-") as tmp:
        qmp = Path(tmp) / "qmp.sock"
        argv = [
            binary, "-M", "microvm", "-accel", accel, "-m", str(ram_mb), "-nodefaults", "-no-user-config",
            "-nographic", "-S", "-qmp", f"unix:{qmp},server=on,wait=off",
        ]  # fmt: skip
        started = time.perf_counter()
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"QEMU exited: {proc.stderr.read().decode() if proc.stderr else ''}")
                try:
                    with socket.socket(socket.AF_UNIX) as sock:
                        sock.connect(str(qmp))
                        sock.settimeout(30)
                        if sock.recv(4096).startswith(b'{"QMP"'):
                            return (time.perf_counter() - started) * 1000
                except OSError:
                    time.sleep(0.002)
        finally:
            proc.kill()
            proc.wait()
