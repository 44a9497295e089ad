"""Processes of a sandbox's agent registry (``contracts/guest.py``, "The process registry"):
start one and follow its output, attach to one again, list them, signal them, write to their
input, close it, resize their terminal. Typed: the adapters (E2B's envd process service) get
plain values and ``ProcessStream`` events and never see a guest message.

Following a process is a stream of its own to hostd (``core/proc_client.py``); closing it
only detaches: the process runs on in the sandbox, and ``connect`` replays what it wrote so
far. The rest goes through the agent relay. Every call is activity.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Literal

import asyncpg
import msgspec

from contracts import guest
from contracts.fields import TIMEOUT_MAX_MS
from core.db import sandboxes as sandboxes_db
from core.errors import BadRequest, Conflict, CoreError, HostUnavailable, NotFound
from core.proc_client import HostProcess, open_process
from core.services.sandboxes import SandboxService

StreamName = Literal["stdout", "stderr", "pty"]
_STREAMS: dict[int, StreamName] = {
    guest.PROC_STDOUT: "stdout",
    guest.PROC_STDERR: "stderr",
    guest.PROC_PTY: "pty",
}


class Output(msgspec.Struct, frozen=True):
    """A piece of the process's output on ``stream``."""

    stream: StreamName
    data: bytes


class Exited(msgspec.Struct, frozen=True):
    """The process ended: ``exit_code`` (``-N`` for signal N); ``timed_out`` when its
    ``timeout_ms`` ran out and the agent killed it."""

    exit_code: int
    timed_out: bool = False


class ProcessStream:
    """A followed process: ``pid``, then ``events()`` until ``Exited``. ``close`` detaches."""

    def __init__(self, process: HostProcess, pid: int) -> None:
        self.pid = pid
        self._process = process

    async def events(self) -> AsyncIterator[Output | Exited]:
        """Output as the agent sends it, then ``Exited``; a stream cut before the exit (the
        sandbox stopped, its host went away) raises ``HostUnavailable``."""
        while True:
            frame = await self._process.receive()
            if isinstance(frame, bytes):
                if len(frame) > 1 and frame[0] in _STREAMS:
                    yield Output(_STREAMS[frame[0]], frame[1:])
            elif isinstance(frame, guest.ProcExited):
                yield Exited(frame.exit_code, frame.timed_out)
                return
            elif isinstance(frame, guest.Error):
                raise _agent_error(frame)
            else:
                raise HostUnavailable("the process's stream ended before it exited (the sandbox went away)")

    async def close(self) -> None:
        await self._process.close()


class ProcessService:
    def __init__(self, sandboxes: SandboxService, db: asyncpg.Pool) -> None:
        self._sandboxes = sandboxes
        self._db = db

    async def start(
        self,
        org_id: str,
        ref: str,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        tag: str | None = None,
        pty: tuple[int, int] | None = None,
        stdin: bool = True,
        timeout_ms: int | None = None,
        user: str | None = None,
    ) -> ProcessStream:
        """Start ``argv`` in the registry and follow it. ``pty``: (cols, rows) of a terminal
        to run it on; ``stdin`` false: its input is /dev/null; ``timeout_ms``: killed after
        that long (longer than a day: not by the agent); ``user``: run as that account of the
        sandbox (None: the sandbox's own). A missing program or account is a 404, a bad
        ``cwd`` or account name a 400, a tag in use a 409."""
        if user is not None:
            try:
                msgspec.convert(user, guest.Account)
            except msgspec.ValidationError:
                raise BadRequest(f"{user!r} is not an account name") from None
        try:
            opener = guest.ProcStart(
                id=0,
                argv=argv,
                env=env or {},
                cwd=cwd,
                tag=tag,
                pty=guest.ProcPty(cols=pty[0], rows=pty[1]) if pty else None,
                stdin=stdin,
                timeout_ms=_agent_timeout(timeout_ms),
                user=user,
            )
        except ValueError as exc:  # the command cannot be passed to execve (E2BIG)
            raise BadRequest(str(exc)) from None
        return await self._open(org_id, ref, opener)

    async def connect(self, org_id: str, ref: str, *, pid: int | None, tag: str | None) -> ProcessStream:
        """Follow a process of the registry again: its output from the start (as much as the
        agent keeps), then live output and its exit. Unknown: 404."""
        return await self._open(org_id, ref, guest.ProcConnect(id=0, pid=pid, tag=tag))

    async def list(self, org_id: str, ref: str) -> list[guest.ProcInfo]:
        """The registry's processes, oldest first (ended ones for a while, with their code)."""
        reply = await self._sandboxes.ask(org_id, ref, guest.ProcList(id=0), guest.ProcListResult)
        return reply.processes

    async def signal(self, org_id: str, ref: str, signal: int, *, pid: int | None, tag: str | None) -> None:
        """Send ``signal`` to the process's whole session; an ended process is a 409."""
        msg = guest.ProcSignal(id=0, signal=signal, pid=pid, tag=tag)
        await self._sandboxes.ask(org_id, ref, msg, guest.ProcDone)

    async def send_input(
        self, org_id: str, ref: str, data: bytes, *, pid: int | None, tag: str | None
    ) -> None:
        """Write ``data`` to the process's stdin or terminal (409: ended, no stdin, not read)."""
        if len(data) > guest.PROC_INPUT_MAX:
            raise BadRequest(f"input may be at most {guest.PROC_INPUT_MAX} bytes a call")
        msg = guest.ProcInput(id=0, data=base64.b64encode(data).decode(), pid=pid, tag=tag)
        await self._sandboxes.ask(org_id, ref, msg, guest.ProcDone)

    async def close_stdin(self, org_id: str, ref: str, *, pid: int | None, tag: str | None) -> None:
        """Close the process's stdin (its reader sees the end); 409 on a terminal."""
        msg = guest.ProcCloseStdin(id=0, pid=pid, tag=tag)
        await self._sandboxes.ask(org_id, ref, msg, guest.ProcDone)

    async def resize(
        self, org_id: str, ref: str, cols: int, rows: int, *, pid: int | None, tag: str | None
    ) -> None:
        """Set the process's terminal size; 409 for one without a terminal."""
        msg = guest.ProcResize(id=0, cols=cols, rows=rows, pid=pid, tag=tag)
        await self._sandboxes.ask(org_id, ref, msg, guest.ProcDone)

    async def _open(
        self, org_id: str, ref: str, opener: guest.ProcStart | guest.ProcConnect
    ) -> ProcessStream:
        await self._sandboxes.require_started(org_id, ref)  # 404/409 as every call; activity
        found = await sandboxes_db.get_with_host(self._db, org_id, ref)
        rec, host = found if found is not None else (None, None)
        if rec is None or host is None:
            raise Conflict("the sandbox is not started")
        process, first = await open_process(host, rec.id, opener)
        if isinstance(first, guest.Error):
            raise _agent_error(first)
        return ProcessStream(process, first.pid)


def _agent_timeout(timeout_ms: int | None) -> int | None:
    """The agent enforces deadlines up to ``TIMEOUT_MAX_MS`` (a day); a longer one is left to
    the caller (it then detaches, and the process runs on)."""
    if timeout_ms is None or timeout_ms > TIMEOUT_MAX_MS:
        return None
    return max(timeout_ms, 1)


def _agent_error(reply: guest.Error) -> CoreError:
    """The core error for the agent's refusal of a process request."""
    if reply.code == "not_found":
        return NotFound(reply.message)
    if reply.code == "conflict":
        return Conflict(reply.message)
    if reply.code == "bad_request":
        return BadRequest(reply.message)
    return HostUnavailable(f"the sandbox's agent failed: {reply.message}")
