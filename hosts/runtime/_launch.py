"""Starting a sandbox's process tree and noticing when it ends.

hostd starts ``ns-init.sh`` (see there for the stages) with a fixed environment, stdin on
/dev/null, stdout and stderr appended to the sandbox's console log, and in a session of its
own so that a terminal's Ctrl-C aimed at hostd never reaches a sandbox. The process stays
hostd's child for the sandbox's life (it becomes ``unshare``, the supervisor of PID 1), and
hostd reaps it through a pidfd watched by the event loop: no thread per sandbox, and no
interference with asyncio's own child watcher, which only waits for pids it started.

A hostd that restarts adopts running sandboxes without being their parent: it watches their
PID 1 through a pidfd instead (``adopt``), and their supervisor, reparented to the host's
init, is reaped there (systemd does; an init that never reaps keeps one zombie per sandbox).

Inside, the last exec is ``setpriv`` (uid/gid 1000, no supplementary groups, empty
inheritable and bounding capability sets, no_new_privs) then ``env -i`` with the sandbox's
environment, then the agent as PID 1 with ``--init``. The agent's PYTHONPATH is set last, so a
PYTHONPATH in the spec's environment is overridden (the agent hides its own from commands).
"""

from __future__ import annotations

import asyncio
import functools
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from hosts.runtime._undo import Undo

NS_INIT = Path(__file__).with_name("ns-init.sh")
HOST_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
"""The launcher's whole environment: nothing from hostd's or the sandbox's leaks into the
root-owned host commands that build the sandbox."""
SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SANDBOX_HOME = "/home/daytona"
"""Home of the template's unprivileged user, and the agent's working directory."""
GUEST_ROOT = "/opt/dnah"
AGENT_SOCKET = "/run/dnah/agent.sock"


@dataclass(frozen=True, kw_only=True)
class BootPlan:
    """Everything ``ns-init.sh`` needs to boot one sandbox."""

    sandbox_dir: Path
    lower: Path
    guest_dir: Path
    resolv_conf: Path
    hostname: str
    netns: Path
    cgroup_procs: list[Path]
    cgroup_mounts: str
    uid: int
    gid: int
    env: dict[str, str] = field(default_factory=dict)

    def argv(self) -> list[str]:
        return [
            "/bin/sh",
            str(NS_INIT),
            "launch",
            str(self.netns),
            *map(str, self.cgroup_procs),
            "--",
            str(self.sandbox_dir),
            str(self.lower),
            str(self.guest_dir),
            str(self.resolv_conf),
            self.hostname,
            self.cgroup_mounts,
            "--",
            *self.agent_argv(),
        ]

    def agent_argv(self) -> list[str]:
        """The command ``ns-init.sh`` execs as PID 1 once the sandbox's root is in place.

        The sandbox's environment: a minimal base, then the spec's variables, then the
        agent's module path (the agent drops PYTHONPATH from what commands inherit).
        """
        env = {"PATH": SANDBOX_PATH, "HOME": SANDBOX_HOME, "LANG": "C.UTF-8", **self.env}
        env["PYTHONPATH"] = GUEST_ROOT
        return [
            "/usr/bin/setpriv",
            f"--reuid={self.uid}",
            f"--regid={self.gid}",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
            "--",
            "/usr/bin/env",
            "-i",
            "-C",
            SANDBOX_HOME,
            "--",
            *(f"{name}={value}" for name, value in env.items()),
            "/usr/bin/python3",
            "-S",
            "-m",
            "guest.agent",
            "--uds",
            AGENT_SOCKET,
            "--init",
        ]


@dataclass(frozen=True, eq=False)
class Supervisor:
    """The process whose end is the sandbox's end.

    For a sandbox this hostd started, the supervisor it spawned: ``exited`` resolves with its
    exit status once reaped. For one adopted from a previous hostd, its PID 1: ``exited``
    resolves with None (it is not our child; its parent reaps it).
    """

    pid: int
    exited: asyncio.Future[int | None]


async def spawn(plan: BootPlan, console: Path, undo: Undo) -> Supervisor:
    """Start the sandbox described by ``plan``; returns as soon as the launcher runs.

    The undo registered here kills the launcher itself: until it has joined the sandbox's
    cgroup, killing the cgroup would miss it.
    """
    proc = await asyncio.to_thread(_start, plan.argv(), console)
    undo.push("kill the supervisor", functools.partial(_kill, proc))
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[int | None] = loop.create_future()
    pidfd = os.pidfd_open(proc.pid)

    def reap() -> None:
        code = proc.poll()
        if code is None:
            return
        loop.remove_reader(pidfd)
        os.close(pidfd)
        if not exited.done():
            exited.set_result(code)

    loop.add_reader(pidfd, reap)
    return Supervisor(pid=proc.pid, exited=exited)


def adopt(pid: int) -> Supervisor:
    """Watch the PID 1 (host pid ``pid``) of a sandbox a previous hostd started.

    Raises:
        ProcessLookupError: it has already exited.
    """
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[int | None] = loop.create_future()
    pidfd = os.pidfd_open(pid)  # readable once the process has exited

    def gone() -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(pidfd, gone)
    return Supervisor(pid=pid, exited=exited)


def find_init(pids: list[int]) -> int | None:
    """The host pid of the sandbox's PID 1 among its processes ``pids``, if it still runs."""
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            continue
        nspids = next((line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), [])
        if len(nspids) > 1 and nspids[-1] == "1":
            return pid
    return None


def _start(argv: list[str], console: Path) -> subprocess.Popen[bytes]:
    with open(console, "ab", buffering=0) as log:
        os.fchmod(log.fileno(), 0o600)
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=HOST_ENV,
            close_fds=True,
            start_new_session=True,
        )


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL and reap (blocking); a no-op once it has exited. Popen does the waitpid, so this
    and the event loop's reaper agree on the exit status whichever runs first."""
    proc.kill()
    proc.wait()
