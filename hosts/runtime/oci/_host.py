"""The host-side jobs runc cannot do here: a path to the disks it can reach, a sysfs for the
sandbox's /sys, and removing cgroups that a runc killed mid-start left behind (and the parent
cgroups at tear-down).

Disks: runc mounts a sandbox's root from inside its user namespace, as an unprivileged host
uid, so every directory above the disk must let others pass; hostd's state directory (and
the pool's mount point in it) need not. The pool's ``disks/`` is therefore bound at
``/run/dnah-oci/<instance>/disks`` (directories mode 0711) once per instance.

sysfs: the kernel lets a process mount sysfs only if it holds CAP_SYS_ADMIN over the network
namespace it is in. The sandbox's network namespace is created by hostd and owned by the
host's user namespace (so that root inside can never reconfigure it), hence runc, already in
the sandbox's user namespace, cannot mount one. hostd mounts it instead, read-only, from
inside that network namespace (so it shows the sandbox's interfaces, not the host's), at the
sandbox directory's ``sys/``; the bundle binds it at /sys.

Cgroups: runc creates ``<parent>/<id>`` in every hierarchy and removes it when the container
is deleted. A ``runc run`` killed before it wrote its state leaves the directories (possibly
with its init process inside) where ``runc delete`` cannot find them. Functions block.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import time
from pathlib import Path

from hosts.errors import RuntimeFailure
from hosts.runtime._mounts import mounts_under, unmount_all

_WAIT = 5.0
_POLL = 0.01


EXPOSED = Path("/run/dnah-oci")


def expose_disks(disks: Path, instance: str) -> Path:
    """Bind ``disks`` at ``/run/dnah-oci/<instance>/disks`` (idempotent); return that path.

    A bind already there is kept only if it shows this pool's ``disks/`` (same device and
    inode): one left by a killed hostd of the same instance name whose pool lived elsewhere
    would otherwise send runc to the dead pool ("invalid rootfs") for every sandbox.
    """
    target = EXPOSED / instance / "disks"
    if any(point == target for point in mounts_under(target)):
        if _same_directory(target, disks):
            return target
        unmount_all(target)
    target.mkdir(parents=True, exist_ok=True)
    for directory in (EXPOSED, EXPOSED / instance):
        directory.chmod(0o711)
    _run("mount", "--bind", str(disks), str(target))
    return target


def _same_directory(a: Path, b: Path) -> bool:
    try:
        first, second = a.stat(), b.stat()
    except OSError:  # a bind of a pool whose filesystem is gone
        return False
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)


def hide_disks(instance: str) -> None:
    """Undo ``expose_disks``; absent is fine."""
    unmount_all(EXPOSED / instance)
    for directory in (EXPOSED / instance / "disks", EXPOSED / instance):
        with contextlib.suppress(FileNotFoundError):
            directory.rmdir()


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeFailure(f"{' '.join(argv[:2])} failed: {done.stderr.strip()}")


def mount_sysfs(netns: Path, target: Path) -> None:
    """Mount a read-only sysfs of network namespace ``netns`` at ``target`` (on the host)."""
    mount = ["mount", "-t", "sysfs", "-o", "ro,nosuid,nodev,noexec", "sysfs", str(target)]
    done = subprocess.run(
        ["nsenter", f"--net={netns}", "--", *mount],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeFailure(f"mounting the sandbox's sysfs failed: {done.stderr.strip()}")


def hierarchies() -> list[Path]:
    """The mount point of every cgroup hierarchy (v1 ones and the v2 tree)."""
    found = []
    with open("/proc/self/mountinfo") as table:
        for line in table:
            fields = line.split()
            if fields[fields.index("-", 6) + 1] in ("cgroup", "cgroup2"):
                found.append(Path(fields[4]))
    return found


def sandbox_ids(parent: str) -> set[str]:
    """Ids of every sandbox with a cgroup under ``parent`` in any hierarchy."""
    return {
        child.name
        for root in hierarchies()
        if (root / parent).is_dir()
        for child in (root / parent).iterdir()
        if child.is_dir()
    }


def remove_sandbox(parent: str, sandbox_id: str) -> None:
    """SIGKILL whatever is left in the sandbox's cgroups and remove them; absent is fine."""
    dirs = [root / parent / sandbox_id for root in hierarchies()]
    dirs = [d for d in dirs if d.is_dir()]
    deadline = time.monotonic() + _WAIT
    while pids := {p for d in dirs for p in _pids(d)}:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise RuntimeFailure(f"cgroup {parent}/{sandbox_id} still has processes {sorted(pids)}")
        time.sleep(_POLL)
    for directory in dirs:
        _rmdir(directory)


def remove_parent(parent: str) -> None:
    """Remove the (empty) parent cgroups; absent is fine."""
    for root in hierarchies():
        _rmdir(root / parent)


def _pids(directory: Path) -> list[int]:
    try:
        return [int(p) for p in (directory / "cgroup.procs").read_text().split()]
    except FileNotFoundError:
        return []


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
