"""The cgroup a VM sandbox's VMM process runs in: memory, CPU and pids limits on the host.

A container's limits are the kernel's, applied to its processes by runc; a VM's are the
VMM's (``-m``, ``-smp``) plus this cgroup around the VMM process, so a guest can never take
more of the host than its sandbox's share: memory = guest RAM + the VMM's own overhead
(device emulation, the TCG translation cache), CPU = ``cpu`` CPUs of time per period, and a
cap on the VMM's threads.

The cgroup is ``<parent>/<sandbox id>`` in every hierarchy that has the controller: on this
machine's hybrid layout the v1 ``memory``, ``cpu`` and ``pids`` hierarchies, on a v2 machine
the unified tree. The naming is the OCI backend's, so one parent serves both and its helpers
(``hosts.runtime.oci._host``: listing, killing and removing a sandbox's cgroups) do here too.
Functions block.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from hosts.runtime.oci._host import hierarchies, remove_parent, remove_sandbox, sandbox_ids

__all__ = ["VmLimits", "apply", "create", "move", "remove", "remove_parent", "sandbox_ids"]

CPU_PERIOD_US = 100_000
_MB = 2**20


@dataclass(frozen=True)
class VmLimits:
    cpu: int
    memory_mb: int
    """Guest RAM plus the VMM's overhead."""
    pids: int


def _v2_root() -> Path | None:
    for root in hierarchies():
        if (root / "cgroup.controllers").exists() and "memory" in (root / "cgroup.controllers").read_text():
            return root
    return None


def _v1(controller: str) -> Path | None:
    for root in hierarchies():
        named = root.name == controller or controller in root.name.split(",")
        if named and not (root / "cgroup.controllers").exists():
            return root
    return None


def directories(parent: str, sandbox_id: str) -> list[Path]:
    """The sandbox's cgroup directories (existing or not): the unified one on v2, else one per
    v1 controller we limit."""
    v2 = _v2_root()
    if v2 is not None:
        return [v2 / parent / sandbox_id]
    return [root / parent / sandbox_id for c in ("memory", "cpu", "pids") if (root := _v1(c)) is not None]


def create(parent: str, sandbox_id: str, limits: VmLimits) -> None:
    """Create the cgroups and set ``limits``; the caller registered ``remove`` first."""
    v2 = _v2_root()
    if v2 is not None:
        _enable_v2(v2, parent)
    for directory in directories(parent, sandbox_id):
        directory.mkdir(parents=True, exist_ok=True)
    apply(parent, sandbox_id, limits)


def apply(parent: str, sandbox_id: str, limits: VmLimits) -> None:
    memory = str(limits.memory_mb * _MB)
    quota = limits.cpu * CPU_PERIOD_US
    v2 = _v2_root()
    if v2 is not None:
        directory = v2 / parent / sandbox_id
        _write(directory / "memory.max", memory)
        _write(directory / "memory.swap.max", "0", optional=True)
        _write(directory / "cpu.max", f"{quota} {CPU_PERIOD_US}")
        _write(directory / "pids.max", str(limits.pids))
        return
    if (root := _v1("memory")) is not None:
        directory = root / parent / sandbox_id
        # v1 keeps memory <= memory+swap at every write: raised, the memsw limit goes first.
        order = ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]
        if _read_int(directory / "memory.limit_in_bytes") < int(memory):
            order.reverse()
        for name in order:
            _write(directory / name, memory, optional=name.startswith("memory.memsw"))
    if (root := _v1("cpu")) is not None:
        directory = root / parent / sandbox_id
        _write(directory / "cpu.cfs_period_us", str(CPU_PERIOD_US))
        _write(directory / "cpu.cfs_quota_us", str(quota))
    if (root := _v1("pids")) is not None:
        _write(root / parent / sandbox_id / "pids.max", str(limits.pids))


def move(parent: str, sandbox_id: str, pid: int) -> None:
    """Put process ``pid`` (all its threads) into the sandbox's cgroups."""
    for directory in directories(parent, sandbox_id):
        _write(directory / "cgroup.procs", str(pid))


def remove(parent: str, sandbox_id: str) -> None:
    """Kill whatever is still in the sandbox's cgroups and remove them; absent is fine."""
    remove_sandbox(parent, sandbox_id)


def _enable_v2(root: Path, parent: str) -> None:
    """On v2, the parent must delegate the controllers to its children."""
    (root / parent).mkdir(exist_ok=True)
    for directory in (root, root / parent):
        with contextlib.suppress(OSError):
            _write(directory / "cgroup.subtree_control", "+memory +cpu +pids")


def _read_int(path: Path) -> int:
    return int(path.read_text())


def _write(path: Path, value: str, *, optional: bool = False) -> None:
    try:
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError:
        if optional:
            return
        raise
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)
