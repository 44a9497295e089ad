"""What must hold once a stack has settled after crashes: the rows in Postgres and what the
machine really runs agree, and nothing is left behind.

The checker reads both sides itself — the database with SQL, the machine from the kernel
(/proc, cgroupfs, /run/netns, the bridge's ports, mountinfo) and from runc's state directory —
instead of asking hostd, whose own bookkeeping is part of what is being checked. It is shared
by the chaos benchmark (``load/chaos.py``) and its short version in the test suite.

Every check returns the offending ids (empty when it holds):

* ``transitional`` — rows in an operation's in-flight state (``creating``, ``stopping``, …);
* ``snapshots_creating`` — snapshot rows never sealed;
* ``started_not_running`` — rows ``started`` (``paused``) whose container is not running
  (frozen) with processes in it;
* ``running_without_row`` — containers running or frozen whose row says otherwise, and
  processes in the cgroup of a sandbox that is not booted;
* ``error_but_running`` — the same for rows in ``error`` (an operation whose outcome the core
  did not learn), reported apart with the row's reason: the row says the sandbox is broken
  while the host runs it;
* ``containers``, ``cgroups``, ``netns``, ``sysfs_mounts``, ``runc_run``, ``processes``,
  ``veths`` — each host resource a booted sandbox holds, one per ``started``/``paused`` row
  (extra ones are leaks, missing ones broken sandboxes);
* ``disks`` — a disk subvolume for every row that keeps its disk on the host (``started``,
  ``paused``, ``stopped``; an ``error`` row may or may not have one) and for no other, and no
  half-made ``.new``/``.old`` copies;
* ``sandbox_dirs`` — hostd's directory for every live row on the host and for no other;
* ``snapshot_store`` — a snapshot in the store for every ``ready`` snapshot row of the host
  and for no other.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from core.states import TRANSITIONAL
from hosts.config import HostdConfig

IN_FLIGHT = TRANSITIONAL | {"creating", "destroying"}
BOOTED = frozenset({"started", "paused"})
"""Row states whose sandbox holds a container, cgroups, a netns, a veth and processes."""
WITH_DISK = BOOTED | {"stopped"}
"""Row states whose disk must be on the host (``error`` is allowed to have one or not)."""


@dataclass(frozen=True)
class Rows:
    """The database's side: sandbox and snapshot states of one host."""

    sandboxes: dict[str, str]
    snapshots: dict[str, str]
    notes: dict[str, str] = field(default_factory=dict)
    """Name and error reason of each sandbox row, for the report."""

    def where(self, states: frozenset[str] | set[str]) -> set[str]:
        return {sid for sid, state in self.sandboxes.items() if state in states}


@dataclass(frozen=True)
class Machine:
    """The machine's side: every resource of one hostd instance, by sandbox id (or name)."""

    containers: dict[str, str]
    """runc's containers and their status (running, paused, stopped, created)."""
    cgroups: set[str]
    processes: dict[str, int]
    """Processes in each sandbox's cgroups (any hierarchy)."""
    netns: set[str]
    veths: set[str]
    sysfs_mounts: set[str]
    runc_run: set[str]
    """Sandboxes with a live ``runc run`` (the process that owns the container's PID 1)."""
    disks: set[str]
    """Entries of the pool's ``disks/`` (a sandbox id, or ``<id>.new``/``<id>.old``)."""
    sandbox_dirs: set[str]
    snapshots: set[str]


@dataclass
class Verdict:
    checks: dict[str, list[str]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(self.checks.values())

    def failed(self) -> dict[str, list[str]]:
        return {name: bad for name, bad in self.checks.items() if bad}

    def as_json(self) -> dict[str, object]:
        return {"ok": self.ok, "failed": self.failed(), "counts": self.counts}


async def read_rows(database_url: str, host_name: str) -> Rows:
    """Sandbox rows placed on the host (or not placed yet), snapshot rows of the host."""
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        host_id = await conn.fetchval("SELECT id FROM hosts WHERE name = $1", host_name)
        sandboxes = await conn.fetch(
            "SELECT id, state, name, error_reason FROM sandboxes WHERE host_id = $1 OR host_id IS NULL",
            host_id,
        )
        snapshots = await conn.fetch("SELECT id, state FROM snapshots WHERE host_id = $1", host_id)
    finally:
        await conn.close()
    return Rows(
        {r["id"]: r["state"] for r in sandboxes},
        {r["id"]: r["state"] for r in snapshots},
        {r["id"]: f"{r['name']} ({r['error_reason'] or 'no error'})" for r in sandboxes},
    )


def read_machine(config: HostdConfig) -> Machine:
    """Everything the runtime instance configured by ``config`` holds on this machine."""
    runc_root = config.state_dir / "runc"
    sandboxes = config.state_dir / "sandboxes"
    return Machine(
        containers=_runc_containers(runc_root),
        cgroups=set(_cgroup_dirs(config.cgroup)),
        processes=_cgroup_processes(config.cgroup),
        netns=_netns(config.bridge),
        veths=_bridge_ports(config.bridge),
        sysfs_mounts=_mounted_sandboxes(sandboxes),
        runc_run=_runc_runs(runc_root),
        disks=_entries(_pool_root(config) / "disks"),
        sandbox_dirs=_entries(sandboxes),
        snapshots=_entries(config.snapshot_dir),
    )


def judge(rows: Rows, machine: Machine) -> Verdict:
    """Compare both sides (see the module doc for each check)."""
    booted = rows.where(BOOTED)
    live = rows.where(set(rows.sandboxes.values()) - {"destroyed"})
    running = {sid for sid, status in machine.containers.items() if status in ("running", "paused")}
    with_processes = {sid for sid, n in machine.processes.items() if n}
    v = Verdict()
    v.checks["transitional"] = sorted(f"{sid}:{rows.sandboxes[sid]}" for sid in rows.where(IN_FLIGHT))
    v.checks["snapshots_creating"] = sorted(s for s, state in rows.snapshots.items() if state == "creating")
    v.checks["started_not_running"] = sorted(
        f"{sid}:{rows.sandboxes[sid]}:{machine.containers.get(sid, 'absent')}"
        for sid in booted
        if machine.containers.get(sid) != ("running" if rows.sandboxes[sid] == "started" else "paused")
        or sid not in with_processes
    )
    errored = rows.where({"error"})
    v.checks["running_without_row"] = sorted(
        f"{sid}:{rows.sandboxes.get(sid, 'no row')}" for sid in (running | with_processes) - booted - errored
    )
    v.checks["error_but_running"] = sorted(
        f"{sid}:{rows.notes[sid]}" for sid in (running | with_processes) & errored
    )
    for name, present in (
        ("containers", set(machine.containers)),
        ("cgroups", machine.cgroups),
        ("netns", machine.netns),
        ("sysfs_mounts", machine.sysfs_mounts),
        ("runc_run", machine.runc_run),
        ("processes", with_processes),
    ):
        v.checks[name] = _difference(present, booted)
    v.checks["veths"] = (
        [] if len(machine.veths) == len(booted) else [f"{len(machine.veths)} veths for {len(booted)} booted"]
    )
    must_have_disk, may_have_disk = rows.where(WITH_DISK), rows.where(WITH_DISK | {"error"})
    v.checks["disks"] = sorted(
        [f"missing:{sid}" for sid in must_have_disk - machine.disks]
        + [f"extra:{name}" for name in machine.disks - may_have_disk]
    )
    v.checks["sandbox_dirs"] = _difference(machine.sandbox_dirs, live)
    ready = {s for s, state in rows.snapshots.items() if state == "ready"}
    v.checks["snapshot_store"] = _difference(machine.snapshots, ready)
    v.counts = {
        "rows_live": len(live),
        "rows_booted": len(booted),
        "rows_stopped": len(rows.where({"stopped"})),
        "rows_error": len(rows.where({"error"})),
        "snapshots_ready": len(ready),
        "containers": len(machine.containers),
        "netns": len(machine.netns),
        "veths": len(machine.veths),
        "cgroups": len(machine.cgroups),
        "disks": len(machine.disks),
        "snapshot_store": len(machine.snapshots),
    }
    return v


async def check(database_url: str, host_name: str, config: HostdConfig) -> Verdict:
    """Rows first, then the machine: a sandbox settling in between shows up as a difference
    the caller's next poll no longer sees."""
    rows = await read_rows(database_url, host_name)
    return judge(rows, read_machine(config))


def _difference(present: set[str], expected: set[str]) -> list[str]:
    return sorted([f"extra:{x}" for x in present - expected] + [f"missing:{x}" for x in expected - present])


def _pool_root(config: HostdConfig) -> Path:
    return config.pool_dir if config.pool_dir is not None else config.pool_mount


def _entries(directory: Path) -> set[str]:
    try:
        return {p.name for p in directory.iterdir()}
    except FileNotFoundError:
        return set()


def _runc_containers(root: Path) -> dict[str, str]:
    if not root.is_dir():
        return {}
    out = subprocess.run(
        ["runc", "--root", str(root), "list", "--format", "json"], capture_output=True, text=True, check=True
    ).stdout
    return {c["id"]: c["status"] for c in json.loads(out or "null") or []}


def _cgroup_roots() -> list[Path]:
    roots = []
    with open("/proc/self/mountinfo") as table:
        for line in table:
            fields = line.split()
            if fields[fields.index("-", 6) + 1] in ("cgroup", "cgroup2"):
                roots.append(Path(fields[4]))
    return roots


def _cgroup_dirs(parent: str) -> dict[str, list[Path]]:
    """Each sandbox's cgroup directories under ``parent``, over every hierarchy."""
    found: dict[str, list[Path]] = {}
    for root in _cgroup_roots():
        try:
            children = [c for c in (root / parent).iterdir() if c.is_dir()]
        except FileNotFoundError:
            continue
        for child in children:
            found.setdefault(child.name, []).append(child)
    return found


def _cgroup_processes(parent: str) -> dict[str, int]:
    counts = {}
    for sid, dirs in _cgroup_dirs(parent).items():
        pids: set[str] = set()
        for directory in dirs:
            try:
                pids.update((directory / "cgroup.procs").read_text().split())
            except OSError:  # removed meanwhile (ENOENT, or ENODEV while being removed)
                continue
        counts[sid] = len(pids)
    return counts


def _netns(bridge: str) -> set[str]:
    prefix = f"{bridge}@"
    return {name[len(prefix) :] for name in _entries(Path("/run/netns")) if name.startswith(prefix)}


def _bridge_ports(bridge: str) -> set[str]:
    return _entries(Path("/sys/class/net") / bridge / "brif")


def _mounted_sandboxes(sandboxes: Path) -> set[str]:
    """Sandbox ids with anything mounted in their directory (the sysfs of a booted one)."""
    prefix = str(sandboxes) + "/"
    found = set()
    with open("/proc/self/mountinfo") as table:
        for line in table:
            point = line.split()[4]
            if point.startswith(prefix):
                found.add(point[len(prefix) :].split("/", 1)[0])
    return found


def _runc_runs(root: Path) -> set[str]:
    """Sandbox ids of the ``runc --root <root> … run … <id>`` processes alive on the machine."""
    found = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in argv]
        if "run" in args and "--root" in args and args[args.index("--root") + 1] == str(root):
            found.add(args[-1])
    return found
