"""The one place that runs the ``runc`` binary.

Every command names this runtime instance's own state directory (``--root``), so a ``make up``
hostd and a test session never see each other's containers, and asks for JSON logs: runc's
error message is the ``msg`` of its last log line, quoted in the ``RuntimeFailure`` raised.

``run`` starts a sandbox in the foreground: ``runc run`` stays the parent of the sandbox's
PID 1 for the sandbox's whole life, forwards signals to it, and deletes the container (its
cgroup and state) once PID 1 has exited. hostd starts it in a session of its own (a terminal's
Ctrl-C aimed at hostd never reaches a sandbox) and reaps it through a pidfd watched by the
event loop (``Supervisor``). A hostd that restarts adopts running sandboxes by their PID 1's
pid from ``runc state`` instead (``adopt``); their ``runc run`` keeps running meanwhile.

All functions but ``run`` block; the runtime calls them from a thread.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hosts.errors import RuntimeFailure
from hosts.runtime.oci.bundle import CPU_PERIOD_US, Limits

HOST_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
"""runc's whole environment: nothing from hostd's leaks into it."""
_GONE = ("does not exist", "not exist", "container not running")


@dataclass(frozen=True, eq=False)
class Supervisor:
    """The process whose end is the sandbox's end.

    For a sandbox this hostd started, its ``runc run``: ``exited`` resolves with its exit
    status once reaped. For one adopted from a previous hostd, its PID 1: ``exited`` resolves
    with None (it is not our child; its ``runc run`` reaps it).
    """

    pid: int
    exited: asyncio.Future[int | None]
    process: subprocess.Popen[bytes] | None = None

    def kill(self) -> None:
        """SIGKILL our ``runc run`` and reap it (blocking); a no-op once it has exited or for an
        adopted sandbox. Only for a boot that failed: runc killed mid-start leaves its
        container for ``Runc.delete``."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()


class Runc:
    def __init__(self, root: Path, binary: str = "runc") -> None:
        self.root = root
        self.binary = binary
        self._running: dict[str, subprocess.Popen[bytes]] = {}
        """The ``runc run`` processes this instance started and has not reaped, by sandbox."""

    async def run(self, sandbox_id: str, bundle: Path, console: Path) -> Supervisor:
        """Start ``runc run`` for the bundle in ``bundle``; returns as soon as runc runs.
        Its stdout and stderr (and the sandbox's PID 1's) go to ``console``."""
        argv = [*self._base(), "--log", str(console), "run", "--bundle", str(bundle), sandbox_id]
        proc = await asyncio.to_thread(_start, argv, console)
        self._running[sandbox_id] = proc
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[int | None] = loop.create_future()
        pidfd = os.pidfd_open(proc.pid)

        def reap() -> None:
            code = proc.poll()
            if code is None:
                return
            loop.remove_reader(pidfd)
            os.close(pidfd)
            if self._running.get(sandbox_id) is proc:
                del self._running[sandbox_id]
            if not exited.done():
                exited.set_result(code)

        loop.add_reader(pidfd, reap)
        return Supervisor(pid=proc.pid, exited=exited, process=proc)

    def abort(self, sandbox_id: str) -> None:
        """SIGKILL and reap the ``runc run`` this instance started for ``sandbox_id``, if it
        still runs; a no-op otherwise. For a boot that failed after runc was started but
        before its ``Supervisor`` reached the caller: left alone, runc would go on creating the
        container (and its cgroups) after the failed boot was cleaned up."""
        proc = self._running.pop(sandbox_id, None)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def state(self, sandbox_id: str) -> dict[str, Any] | None:
        """``runc state``: status (created, running, paused, stopped) and PID 1's host pid;
        None when runc holds no such container."""
        out = self._call("state", sandbox_id, missing_ok=True)
        return json.loads(out) if out is not None else None

    def ids(self) -> list[str]:
        """Ids of every container this instance's runc holds, in any state."""
        out = self._call("list", "--format", "json") or "null"
        return [c["id"] for c in json.loads(out) or []]

    def pause(self, sandbox_id: str) -> None:
        self._call("pause", sandbox_id)

    def resume(self, sandbox_id: str) -> None:
        self._call("resume", sandbox_id)

    def update(self, sandbox_id: str, limits: Limits) -> None:
        """New limits for a live container (runc orders the memory and swap writes)."""
        ram = str(limits.ram_mb * 2**20)
        self._call(
            "update",
            "--cpu-period", str(CPU_PERIOD_US),
            "--cpu-quota", str(limits.cpu * CPU_PERIOD_US),
            "--memory", ram,
            "--memory-swap", ram,
            "--pids-limit", str(limits.pids),
            sandbox_id,
        )  # fmt: skip

    def kill(self, sandbox_id: str) -> None:
        """SIGKILL the container's PID 1; a no-op when runc holds no such container."""
        self._call("kill", sandbox_id, "KILL", missing_ok=True)

    def delete(self, sandbox_id: str) -> None:
        """Kill every process of the container (paused or not) and remove its cgroup and
        state; a no-op when runc holds no such container.

        runc keeps a container's state in ``<root>/<id>/`` from its creation until it is
        deleted, and a ``runc run`` whose PID 1 exited has deleted it itself: without that
        directory there is nothing to delete, and a stop saves starting runc for nothing."""
        if not (self.root / sandbox_id).exists():
            return
        self._call("delete", "--force", sandbox_id, missing_ok=True)

    def _base(self) -> list[str]:
        return [self.binary, "--root", str(self.root), "--log-format", "json"]

    def _call(self, *args: str, missing_ok: bool = False) -> str | None:
        done = subprocess.run(
            [*self._base(), *args], capture_output=True, text=True, env=HOST_ENV, check=False
        )
        if done.returncode == 0:
            return done.stdout
        message = _message(done.stderr)
        if missing_ok and any(gone in message for gone in _GONE):
            return None
        raise RuntimeFailure(f"runc {args[0]} failed: {message}")


def _message(stderr: str) -> str:
    """The ``msg`` of runc's last JSON log line, or its raw stderr."""
    for line in reversed(stderr.strip().splitlines()):
        try:
            return str(json.loads(line)["msg"])
        except (ValueError, KeyError, TypeError):
            continue
    return stderr.strip()


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
