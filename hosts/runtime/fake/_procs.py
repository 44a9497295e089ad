"""The fake runtime's processes: the agent it starts, and the process tree under it.

The agent runs with ``--init``, so it is a child subreaper: every process a command leaves
behind (a ``nohup``'d job, a session's shell and its children) is reparented to it, never to
the host's init. The sandbox is therefore exactly the process tree under the agent's pid,
even though the agent starts each command in a process group, and each session in a
process session, of its own; signalling one process group would miss them.

Freezing walks that tree and stops every process in it, again and again until a walk finds
nothing new (a stopped process cannot fork, so the set converges). Killing freezes first,
then SIGKILLs the frozen set: nothing can escape by forking or by being reparented while the
kill runs.

A pid alone is not an identity (pids are reused), so records pair it with the process's start
time in clock ticks since boot (``/proc/<pid>/stat`` field 22).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec

_SETTLE_TIMEOUT = 10.0


class AgentRecord(msgspec.Struct, frozen=True, kw_only=True):
    """The agent of a booted sandbox, as ``agent.json`` keeps it for a later hostd."""

    pid: int
    start_ticks: int


def spawn_agent(
    guest_dir: Path, socket_path: Path, home: Path, env: dict[str, str], console: Path
) -> subprocess.Popen[bytes]:
    """Start the real guest agent as the current user, in a session of its own (a terminal's
    Ctrl-C aimed at hostd never reaches it), working in ``home``."""
    full_env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        **env,
        "HOME": str(home),
        "TMPDIR": str(home / "tmp"),
        "PYTHONPATH": str(guest_dir.parent),
    }
    argv = [sys.executable, "-S", "-m", "guest.agent", "--uds", str(socket_path), "--init"]
    with open(console, "ab") as out:
        return subprocess.Popen(
            argv,
            cwd=home,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def start_ticks(pid: int) -> int | None:
    """The process's start time, or None when no such process runs (a zombie counts as gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def alive(record: AgentRecord) -> bool:
    """Whether the process ``record`` names still runs (and is not a newer one with its pid)."""
    return start_ticks(record.pid) == record.start_ticks


_SIGSTOP_BIT = 1 << (signal.SIGSTOP - 1)


def stopped(pid: int) -> bool:
    """Whether the process can run no more user code: stopped by a signal (state ``T``), or
    in an uninterruptible wait (``D``) with our SIGSTOP pending, which it takes before it
    returns to user space. The second case is a parent waiting in ``vfork`` for a child that
    was stopped before its ``exec``: it stays in ``D`` until that child runs again, so waiting
    for its ``T`` would wait forever."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    state = fields.get("State", "").split()[:1]
    if state == ["T"]:
        return True
    pending = int(fields.get("SigPnd", "0"), 16) | int(fields.get("ShdPnd", "0"), 16)
    return state == ["D"] and bool(pending & _SIGSTOP_BIT)


def tree(root: int) -> list[int]:
    """``root`` and every live descendant, parents before children."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if fields[0] not in ("Z", "X"):
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, pending = [root], [root]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def freeze(root: int) -> list[int]:
    """SIGSTOP the whole tree under ``root`` until no new process appears; return it."""
    frozen: set[int] = set()
    deadline = time.monotonic() + _SETTLE_TIMEOUT
    while True:
        found = [pid for pid in tree(root) if pid not in frozen]
        if not found:
            return sorted(frozen)
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
            frozen.add(pid)
        _wait_stopped(found, deadline)


def thaw(root: int) -> None:
    """SIGCONT every process of the tree under ``root``."""
    for pid in tree(root):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def kill_tree(record: AgentRecord) -> None:
    """Kill the agent ``record`` names and everything under it; a gone agent is fine."""
    if not alive(record):
        return
    doomed = freeze(record.pid)
    for pid in doomed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + _SETTLE_TIMEOUT
    while any(start_ticks(pid) is not None for pid in doomed):
        if time.monotonic() > deadline:
            raise TimeoutError(f"processes {doomed} survived SIGKILL")
        time.sleep(0.005)


def _wait_stopped(pids: list[int], deadline: float) -> None:
    """Wait until every process in ``pids`` is stopped or gone (SIGSTOP is asynchronous)."""
    pending = list(pids)
    while pending:
        pending = [pid for pid in pending if start_ticks(pid) is not None and not stopped(pid)]
        if pending and time.monotonic() > deadline:
            raise TimeoutError(f"processes {pending} did not stop")
        if pending:
            time.sleep(0.005)
