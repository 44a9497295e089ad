"""Starting a sandbox's VMM process (QEMU, Cloud Hypervisor) and watching it end, whether
this hostd started it or adopted it from a previous one.

The VMM runs in a session of its own (a terminal's Ctrl-C aimed at hostd never reaches a VM)
and outlives hostd: a restarted hostd adopts it by pid. ``nsenter --net=`` execs the VMM
inside the sandbox's network namespace, so the pid hostd sees is the VMM's own; it is moved
into the sandbox's cgroups right after the fork (threads it starts later inherit them).

A pid alone could name another process after a reboot or a wrap-around, so the record kept
for adoption (``VmmRecord``) also holds the process's start time (``/proc/<pid>/stat``), and
adoption checks both. The end of the process is watched through a pidfd on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import msgspec

HOST_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
"""The VMM's whole environment: nothing of hostd's leaks into it."""


class VmmRecord(msgspec.Struct, frozen=True, kw_only=True):
    pid: int
    start_time: int
    """Field 22 of ``/proc/<pid>/stat``: clock ticks after boot at which the process started."""


@dataclass(eq=False)
class Vmm:
    """A running VMM: ``exited`` resolves (with its status, or None for an adopted one, which
    is not our child) once it has ended."""

    pid: int
    exited: asyncio.Future[int | None]
    process: subprocess.Popen[bytes] | None = None

    def kill(self) -> None:
        """SIGKILL it and, if it is our child, reap it (blocking); gone already is fine."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        if self.process is not None:
            self.process.wait()


def spawn(netns: Path, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``argv`` in network namespace ``netns`` (blocking); stdout and stderr to ``log``."""
    with open(log, "ab", buffering=0) as out:
        os.fchmod(out.fileno(), 0o600)
        return subprocess.Popen(
            ["nsenter", f"--net={netns}", "--", *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env=HOST_ENV,
            close_fds=True,
            start_new_session=True,
        )


def watch(process: subprocess.Popen[bytes]) -> Vmm:
    """A ``Vmm`` for a process this hostd started; it is reaped when it exits."""
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[int | None] = loop.create_future()
    pidfd = os.pidfd_open(process.pid)

    def reap() -> None:
        code = process.poll()
        if code is None:
            return
        loop.remove_reader(pidfd)
        os.close(pidfd)
        if not exited.done():
            exited.set_result(code)

    loop.add_reader(pidfd, reap)
    return Vmm(pid=process.pid, exited=exited, process=process)


def adopt(record: VmmRecord, run_dir: Path) -> Vmm:
    """Watch the VMM a previous hostd started, if ``record`` still names it (same pid, same
    start time, its command line naming ``run_dir``).

    Raises:
        ProcessLookupError: it is gone (or the pid is another process's now).
    """
    if start_time(record.pid) != record.start_time or str(run_dir).encode() not in _cmdline(record.pid):
        raise ProcessLookupError(record.pid)
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[int | None] = loop.create_future()
    pidfd = os.pidfd_open(record.pid)

    def gone() -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(pidfd, gone)
    return Vmm(pid=record.pid, exited=exited)


def kill_strays(run_dir: Path) -> None:
    """SIGKILL every process whose command line names ``run_dir`` (a VMM of this sandbox that
    nobody tracks: started by a boot that failed before it learnt the pid, or left by a crash).
    Blocking; absent is fine."""
    needle = str(run_dir).encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid() and needle in _cmdline(int(entry.name)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


def start_time(pid: int) -> int | None:
    """Field 22 of ``/proc/<pid>/stat``; None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return b""
