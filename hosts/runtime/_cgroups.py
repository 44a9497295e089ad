"""Sandbox cgroups: limits, membership, freezing and killing, on cgroup v1 and v2.

Every sandbox gets one cgroup, ``<parent>/<sandbox id>``, created before its first process:
the launcher writes its own pid into ``cgroup.procs`` before it execs anything (see
``ns-init.sh``), so the limits hold from the first instruction, and everything the sandbox
ever runs stays inside (a process cannot leave its cgroup without privileges it lacks).
That makes the cgroup the sandbox's authoritative process list: "is it running" is "does its
cgroup have processes", and "stop" is "kill everything in it".

v2 is detected by ``/sys/fs/cgroup/cgroup.controllers`` (a pure v2 host). Otherwise the v1
hierarchies holding ``cpu``, ``memory``, ``pids`` and ``freezer`` are found in mountinfo,
wherever and however combined they are mounted; a hybrid host's v2 tree is not used.

Functions here block (sysfs writes, short polls); the runtime calls them from a thread.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import functools
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hosts.errors import RuntimeFailure
from hosts.runtime._undo import Undo

CPU_PERIOD_US = 100_000
"""The CFS period; a sandbox with ``cpu`` CPUs gets ``cpu`` × this much runtime per period."""
V1_CONTROLLERS = ("cpu", "memory", "pids", "freezer")
V2_CONTROLLERS = ("cpu", "memory", "pids")
_POLL = 0.002
_WAIT = 5.0
_REFREEZE = 0.05
"""How long one freeze request is given before it is repeated."""
"""Seconds to wait for the kernel to freeze, thaw or empty a cgroup before calling it stuck."""
_CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class Limits:
    cpu: int
    ram_mb: int
    pids: int


class SandboxCgroup(abc.ABC):
    """One sandbox's cgroup: a directory per v1 hierarchy, or one directory on v2."""

    def __init__(self, dirs: list[Path]) -> None:
        self.dirs = dirs

    def procs_files(self) -> list[Path]:
        """The files a process writes its pid into to join the sandbox (one per hierarchy)."""
        return [d / "cgroup.procs" for d in self.dirs]

    def create(self, limits: Limits, undo: Undo) -> None:
        for directory in self.dirs:
            directory.parent.mkdir(exist_ok=True)
            undo.push(f"rmdir {directory}", functools.partial(_rmdir, directory))
            try:
                directory.mkdir()
            except FileExistsError:
                raise RuntimeFailure(f"cgroup {directory} already exists") from None
        self._apply(limits)

    def pids(self) -> list[int]:
        """Every process in the sandbox; empty when it has none or the cgroup is gone."""
        try:
            return [int(p) for p in self.procs_files()[0].read_text().split()]
        except FileNotFoundError:
            return []

    def freeze(self) -> None:
        """Freeze every process and return once the kernel reports them all frozen.

        The request is repeated while the cgroup is still freezing: cgroup v1's freezer can
        stay in ``FREEZING`` when a task forked or was in an uninterruptible sleep at the
        moment of the write, and the kernel's documented remedy is to write ``FROZEN`` again.
        """
        deadline = time.monotonic() + _WAIT
        while True:
            self._set_frozen(True)
            retry = time.monotonic() + _REFREEZE
            while not self.frozen() and time.monotonic() < retry:
                time.sleep(_POLL)
            if self.frozen():
                return
            if time.monotonic() > deadline:
                raise RuntimeFailure(f"timed out freezing {self.dirs[0]}")

    def thaw(self) -> None:
        self._set_frozen(False)
        _wait_for(lambda: not self.frozen(), f"thawing {self.dirs[0]}")

    def set_limits(self, limits: Limits) -> None:
        """Apply new limits to the live cgroup: its processes are held to them at once."""
        self._apply(limits)

    def kill(self) -> None:
        """SIGKILL every process and wait until the cgroup is empty; a no-op when it is.

        The cgroup is frozen while its pids are read and signalled, so nothing can fork a
        process we did not see; the signals land when it is thawed.
        """
        if not self.pids():
            return
        self.freeze()
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):  # exited since the read
                os.kill(pid, signal.SIGKILL)
        self.thaw()
        _wait_for(lambda: not self.pids(), f"emptying {self.dirs[0]}")

    def remove(self) -> None:
        """Remove the (empty) cgroup; absent is fine."""
        for directory in self.dirs:
            _rmdir(directory)

    @abc.abstractmethod
    def frozen(self) -> bool: ...

    @abc.abstractmethod
    def _set_frozen(self, frozen: bool) -> None: ...

    @abc.abstractmethod
    def _apply(self, limits: Limits) -> None: ...


class _V1Sandbox(SandboxCgroup):
    def __init__(self, dirs: dict[str, Path]) -> None:
        super().__init__(list(dict.fromkeys(dirs.values())))
        self._by_controller = dirs

    def frozen(self) -> bool:
        return (self._by_controller["freezer"] / "freezer.state").read_text().strip() == "FROZEN"

    def _set_frozen(self, frozen: bool) -> None:
        _write(self._by_controller["freezer"] / "freezer.state", "FROZEN" if frozen else "THAWED")

    def _apply(self, limits: Limits) -> None:
        cpu, memory = self._by_controller["cpu"], self._by_controller["memory"]
        _write(cpu / "cpu.cfs_period_us", CPU_PERIOD_US)
        _write(cpu / "cpu.cfs_quota_us", limits.cpu * CPU_PERIOD_US)
        ram = limits.ram_mb * 2**20
        # memsw (memory + swap) equal to memory means no swap; it exists only when the kernel
        # accounts swap (swapaccount=1). The kernel wants limit ≤ memsw at every step, so memsw
        # goes first when the limit grows (a resize) and last otherwise.
        memsw = memory / "memory.memsw.limit_in_bytes"
        grows = int((memory / "memory.limit_in_bytes").read_text()) < ram
        if memsw.exists() and grows:
            _write(memsw, ram)
        _write(memory / "memory.limit_in_bytes", ram)
        if memsw.exists() and not grows:
            _write(memsw, ram)
        _write(self._by_controller["pids"] / "pids.max", limits.pids)


class _V2Sandbox(SandboxCgroup):
    def create(self, limits: Limits, undo: Undo) -> None:
        parent = self.dirs[0].parent
        parent.mkdir(exist_ok=True)
        enable = " ".join(f"+{c}" for c in V2_CONTROLLERS)
        _write(parent.parent / "cgroup.subtree_control", enable)
        _write(parent / "cgroup.subtree_control", enable)
        super().create(limits, undo)

    def kill(self) -> None:
        kill_file = self.dirs[0] / "cgroup.kill"  # Linux 5.14+: kills atomically, forks included
        if kill_file.exists() and self.pids():
            _write(kill_file, 1)
            _wait_for(lambda: not self.pids(), f"emptying {self.dirs[0]}")
        super().kill()

    def frozen(self) -> bool:
        events = (self.dirs[0] / "cgroup.events").read_text().split("\n")
        return "frozen 1" in events

    def _set_frozen(self, frozen: bool) -> None:
        _write(self.dirs[0] / "cgroup.freeze", int(frozen))

    def _apply(self, limits: Limits) -> None:
        leaf = self.dirs[0]
        _write(leaf / "cpu.max", f"{limits.cpu * CPU_PERIOD_US} {CPU_PERIOD_US}")
        _write(leaf / "memory.max", limits.ram_mb * 2**20)
        if (leaf / "memory.swap.max").exists():
            _write(leaf / "memory.swap.max", 0)
        _write(leaf / "pids.max", limits.pids)


class Cgroups:
    """The cgroup tree of one runtime instance: every sandbox's cgroup sits under ``parent``."""

    def __init__(self, parent: str) -> None:
        self.parent = parent
        self.v2 = (_CGROUP_ROOT / "cgroup.controllers").exists()
        self._hierarchies = {} if self.v2 else _v1_hierarchies()

    @property
    def inner_mounts(self) -> str:
        """What ``ns-init.sh`` mounts read-only at the sandbox's /sys/fs/cgroup."""
        if self.v2:
            return "cgroup2"
        return " ".join(dict.fromkeys(options for options, _ in self._hierarchies.values()))

    def sandbox(self, sandbox_id: str) -> SandboxCgroup:
        if self.v2:
            return _V2Sandbox([_CGROUP_ROOT / self.parent / sandbox_id])
        return _V1Sandbox(
            {c: mount / self.parent / sandbox_id for c, (_, mount) in self._hierarchies.items()}
        )

    def sandbox_ids(self) -> set[str]:
        """Ids of every sandbox that has a cgroup, in any hierarchy."""
        return {
            child.name
            for parent in self._parents()
            if parent.is_dir()
            for child in parent.iterdir()
            if child.is_dir()
        }

    def remove_parent(self) -> None:
        """Remove the (empty) parent cgroups; absent is fine."""
        for parent in self._parents():
            _rmdir(parent)

    def _parents(self) -> list[Path]:
        if self.v2:
            return [_CGROUP_ROOT / self.parent]
        return list(dict.fromkeys(mount / self.parent for _, mount in self._hierarchies.values()))


def _v1_hierarchies() -> dict[str, tuple[str, Path]]:
    """Map each controller we need to (its hierarchy's mount options, its mount point)."""
    with open("/proc/cgroups") as table:
        known = {line.split()[0] for line in table if not line.startswith("#")}
    found: dict[str, tuple[str, Path]] = {}
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            tail = fields[fields.index("-") + 1 :]
            if tail[0] != "cgroup":
                continue
            controllers = [opt for opt in tail[2].split(",") if opt in known]
            for controller in controllers:
                found.setdefault(controller, (",".join(controllers), Path(fields[4])))
    missing = [c for c in V1_CONTROLLERS if c not in found]
    if missing:
        raise RuntimeFailure(f"cgroup v1 controllers not mounted: {', '.join(missing)}")
    return {c: found[c] for c in V1_CONTROLLERS}


def _write(path: Path, value: object) -> None:
    with open(path, "w") as f:
        f.write(str(value))


def _rmdir(directory: Path) -> None:
    """rmdir, retrying while the kernel still releases exited tasks (EBUSY)."""
    deadline = time.monotonic() + _WAIT
    while True:
        try:
            directory.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            time.sleep(_POLL)


def _wait_for(done: Callable[[], bool], what: str) -> None:
    """Poll ``done`` until it is true; raise after ``_WAIT`` seconds."""
    deadline = time.monotonic() + _WAIT
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeFailure(f"timed out {what}")
        time.sleep(_POLL)
