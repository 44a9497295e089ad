"""Persistent shell sessions: one long-lived ``bash`` per session, ``cd`` and ``export``
carrying over from one command to the next.

The shell. ``bash --noprofile --norc`` runs as the agent's user in a session (and process
group) of its own, a pipes process of the agent's process registry (``guest/processes.py``,
so ``proc.list`` shows it too): it reads commands from its stdin; its stdout is the
*control* channel, which the session's monitor reads as a client of the registry process
(``_Control``); its stderr is read and dropped. Each session has a private directory
(``mkdtemp``, mode 0700) with one subdirectory per command.

A command. Its text is written to ``<dir>/cmd`` and the shell is sent one line::

    trap 'return 137' USR1; jobs -p >bg; . cmd </dev/null >out 2>err; rc=$?; trap : USR1;
    printf '%s\\n%s' "$rc" "$PWD" >status; echo TOKEN ID

``.`` runs the command in the shell itself, so ``cd`` and ``export`` persist; a syntax error
in it stays inside the ``.`` (exit code 2) instead of derailing the shell's own input. The
command reads /dev/null, and writes stdout and stderr to files, so output without a final
newline, huge output or binary output cannot confuse the control channel. The sentinel line
(a per-session random token and the command id) tells the session's monitor thread that the
command finished; the exit code and the new working directory are in ``status``. Output is
read from the files, at most ``OUTPUT_LIMIT`` bytes per stream (like exec); the files keep
whatever the command and its background jobs write later, so logs can be read again.

Commands run one after another, in the order they were sent (a shell is serial). A command's
deadline counts from when it was sent. At the deadline the monitor sends the shell SIGUSR1,
whose trap returns from the ``.`` (so the rest of the command does not run, and a loop of
builtins stops too), and SIGKILLs every process the shell started for it: the shell's
descendants except the background jobs that existed before the command began (``jobs -p``
wrote them to ``bg``). The shell survives and reports the command with ``timed_out`` and
exit code -9. If the command has still not finished ``KILL_GRACE`` seconds after the
deadline (it replaced the trap, say), the shell is killed and the session ends.

A command that ends the shell (``exit``, or ``set -e`` then a failure) ends the session: the
command is reported with the shell's exit status, the session stays listed with
``alive=False`` and refuses further commands. Deleting a session SIGKILLs the shell and every
process of its session or descended from it, then removes its directory.

The last ``MAX_HISTORY`` commands of a session are kept (their directories too); older ones
are forgotten and their files removed.
"""

from __future__ import annotations

import contextlib
import os
import queue
import secrets
import shlex
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections import OrderedDict, deque
from pathlib import Path

from guest import framing, processes

OUTPUT_LIMIT = 1024 * 1024
"""Bytes of each stream a command's result carries (the same cap as exec)."""
HISTORY_OUTPUT_LIMIT = 8 * 1024
"""Bytes of each stream per command when a whole history is returned at once, which keeps
100 commands within one frame."""
MAX_HISTORY = 100
MAX_SESSIONS = 64
MAX_QUEUED = 32
"""Commands a session accepts while earlier ones have not finished (they queue in the shell's
input pipe, which must never fill up)."""
KILL_GRACE = 2.0
"""Seconds after a timeout kill before a command that still has not finished takes the shell
(and the session) with it."""
TICK = 0.1
CONTROL_KEPT = 4096
"""Bytes of the control channel the registry keeps (nobody replays it)."""
ID_MAX = 256


class SessionError(Exception):
    """A request the sessions cannot serve; ``code`` is the agent error code to answer with."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Command:
    def __init__(self, command_id: str, text: str, directory: Path, deadline: float | None) -> None:
        self.id = command_id
        self.text = text
        self.dir = directory
        self.deadline = deadline
        self.exit_code: int | None = None
        self.timed_out = False
        self.cwd: str | None = None
        self.done = threading.Event()
        self.killed_at: float | None = None

    def output(self, limit: int = OUTPUT_LIMIT) -> tuple[str, str]:
        """stdout and stderr so far; bash names the command file in its own messages, which
        read as ``bash -c`` would print them instead (``bash: line 1: …``)."""
        stderr = _head(self.dir / "err", limit).replace(f"{self.dir}/cmd: line ", "bash: line ")
        return _head(self.dir / "out", limit), stderr

    def finish(self, exit_code: int, cwd: str | None) -> None:
        self.exit_code = -signal.SIGKILL if self.timed_out else exit_code
        self.cwd = cwd
        self.done.set()


class _Control:
    """The shell's stdout, the control channel, as a client of its registry process: the
    chunks go to the monitor's queue, and the process's end as None."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()

    def send(self, message: dict[str, object]) -> None:
        if message["t"] == "proc.exited":
            self.queue.put(None)

    def send_binary(self, data: bytes) -> None:
        if len(data) > 1 and data[0] == framing.PROC_STDOUT:
            self.queue.put(data[1:])

    def read_frame(self) -> tuple[bytes, bool] | None:
        return None

    def close(self) -> None:
        """Nothing to close: the chunks are in memory."""


class Session:
    def __init__(self, session_id: str, cwd: str, env: dict[str, str]) -> None:
        self.id = session_id
        self.cwd = cwd
        self.alive = True
        self.exit_code: int | None = None
        self.dir = Path(tempfile.mkdtemp(prefix="dnah-session-"))
        self._token = "__DNAH_" + secrets.token_hex(8)
        self._lock = threading.Lock()
        self._history: OrderedDict[str, Command] = OrderedDict()
        self._pending: deque[Command] = deque()
        self._control = _Control()
        try:
            self.process = processes.start(
                ["bash", "--noprofile", "--norc"],
                env={},
                cwd=cwd,
                base_env=env,
                client=(self._control, 0),
                kept=CONTROL_KEPT,
            )
            self.process.write(b"trap : USR1\n", None)  # a stray timeout signal must not kill the shell
        except processes.ProcError as exc:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise SessionError("internal", f"cannot start the session's shell: {exc}") from None
        self._monitor = threading.Thread(target=self._watch, daemon=True)
        self._monitor.start()

    # requests ---------------------------------------------------------------------------------

    def submit(self, text: str, timeout_ms: int) -> Command:
        with self._lock:
            if not self.alive:
                raise SessionError("bad_request", f"session {self.id!r} has ended")
            if len(self._pending) >= MAX_QUEUED:
                raise SessionError(
                    "bad_request", f"{MAX_QUEUED} commands are already waiting in this session"
                )
            command_id = str(uuid.uuid4())
            directory = self.dir / command_id
            directory.mkdir()
            (directory / "cmd").write_text(text, encoding="utf-8", errors="surrogateescape")
            deadline = time.monotonic() + timeout_ms / 1000 if timeout_ms > 0 else None
            command = Command(command_id, text, directory, deadline)
            d = shlex.quote(str(directory))
            line = (
                f"trap 'return 137 2>/dev/null' USR1; jobs -p >{d}/bg 2>/dev/null; "
                f". {d}/cmd </dev/null >{d}/out 2>{d}/err; __dnah_rc=$?; trap : USR1; "
                f'printf \'%s\\n%s\' "$__dnah_rc" "$PWD" >{d}/status; unset __dnah_rc; '
                f"printf '%s %s\\n' {self._token} {command_id}\n"
            )
            try:
                self.process.write(line.encode(), None)
            except processes.ProcError:
                shutil.rmtree(directory, ignore_errors=True)
                raise SessionError("bad_request", f"session {self.id!r} has ended") from None
            self._pending.append(command)
            self._history[command_id] = command
            while len(self._history) > MAX_HISTORY:
                _, old = self._history.popitem(last=False)
                if old.done.is_set():
                    shutil.rmtree(old.dir, ignore_errors=True)
            return command

    def command(self, command_id: str) -> Command:
        with self._lock:
            found = self._history.get(command_id)
        if found is None:
            raise SessionError("not_found", f"command {command_id!r} not found in session {self.id!r}")
        return found

    def commands(self) -> list[Command]:
        with self._lock:
            return list(self._history.values())

    def close(self) -> None:
        """Kill the shell and everything it started, then remove the session's files."""
        with self._lock:
            self.alive = False
        for _ in range(3):  # a dying process may fork once more; look again
            table = _proc_table()
            victims = _descendants(self.process.pid, table) | {
                pid for pid, (_, sid) in table.items() if sid == self.process.pid
            }
            victims.add(self.process.pid)
            _kill(victims)
            if not victims - {self.process.pid}:
                break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._monitor.join(timeout=5)
        shutil.rmtree(self.dir, ignore_errors=True)

    # the monitor ------------------------------------------------------------------------------

    def _watch(self) -> None:
        """Read sentinels off the control channel and enforce deadlines until the shell ended."""
        buffer = b""
        while True:
            try:
                chunk = self._control.queue.get(timeout=TICK)
            except queue.Empty:
                chunk = b""
            if chunk is None:
                break
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                self._sentinel(line.decode("utf-8", "replace"))
            self._enforce()
        code = self.process.exit_code if self.process.exit_code is not None else -1
        with self._lock:
            self.alive = False
            self.exit_code = code
            for index, command in enumerate(self._pending):
                command.finish(code if index == 0 else -1, None)
            self._pending.clear()

    def _sentinel(self, line: str) -> None:
        token, _, command_id = line.partition(" ")
        if token != self._token:
            return
        with self._lock:
            if not self._pending or self._pending[0].id != command_id:
                return
            command = self._pending.popleft()
            status = _head(command.dir / "status", 1 << 20)
            rc, _, cwd = status.partition("\n")
            if cwd:
                self.cwd = cwd
            command.finish(int(rc) if rc.strip().lstrip("-").isdigit() else -1, cwd or self.cwd)
            if command.id not in self._history:
                shutil.rmtree(command.dir, ignore_errors=True)

    def _enforce(self) -> None:
        with self._lock:
            current = self._pending[0] if self._pending else None
        if current is None or current.deadline is None:
            return
        now = time.monotonic()
        if now < current.deadline:
            return
        if current.killed_at is None:
            current.timed_out = True
            current.killed_at = now
            with contextlib.suppress(ProcessLookupError):  # the shell's trap ends the command
                os.kill(self.process.pid, signal.SIGUSR1)
        if now - current.killed_at > KILL_GRACE:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            return
        table = _proc_table()
        spared: set[int] = set()
        for pid in _background_jobs(current.dir / "bg"):
            if pid in table:
                spared |= {pid} | _descendants(pid, table)
        _kill(_descendants(self.process.pid, table) - spared)


# the registry ---------------------------------------------------------------------------------

_sessions: dict[str, Session] = {}
_registry_lock = threading.Lock()


def create(session_id: str | None, cwd: str | None, env: dict[str, str]) -> Session:
    session_id = session_id if session_id is not None else str(uuid.uuid4())
    if not 1 <= len(session_id) <= ID_MAX or "\x00" in session_id:
        raise SessionError("bad_request", f"a session id is 1 to {ID_MAX} characters")
    start = cwd or env.get("HOME") or "/"
    if not os.path.isdir(start):
        raise SessionError("bad_request", f"{start}: no such directory")
    with _registry_lock:
        if session_id in _sessions:
            raise SessionError("conflict", f"session {session_id!r} already exists")
        if len(_sessions) >= MAX_SESSIONS:
            raise SessionError("bad_request", f"at most {MAX_SESSIONS} sessions per sandbox")
        session = Session(session_id, os.path.abspath(start), env)
        _sessions[session_id] = session
    return session


def get(session_id: str) -> Session:
    with _registry_lock:
        found = _sessions.get(session_id)
    if found is None:
        raise SessionError("not_found", f"session {session_id!r} not found")
    return found


def all_sessions() -> list[Session]:
    with _registry_lock:
        return list(_sessions.values())


def delete(session_id: str) -> Session:
    with _registry_lock:
        found = _sessions.pop(session_id, None)
    if found is None:
        raise SessionError("not_found", f"session {session_id!r} not found")
    found.close()
    return found


def close_all() -> None:
    with _registry_lock:
        sessions = list(_sessions.values())
        _sessions.clear()
    for session in sessions:
        session.close()


# processes ------------------------------------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, int]]:
    """Every visible process: pid → (parent pid, session id)."""
    table: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rpartition(b")")[2].split()
        except OSError:
            continue
        table[int(entry)] = (int(fields[1]), int(fields[3]))
    return table


def _descendants(root: int, table: dict[int, tuple[int, int]]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def _kill(pids: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _background_jobs(path: Path) -> list[int]:
    return [int(word) for word in _head(path, 65536).split() if word.isdigit()]


def _head(path: Path, limit: int) -> str:
    try:
        with open(path, "rb") as file:
            return file.read(limit).decode("utf-8", "replace")
    except OSError:
        return ""


# the agent's handler ----------------------------------------------------------------------------


def handle(request: framing.SessionRequest, base_env: dict[str, str]) -> dict[str, object]:
    """Answer any ``session.*`` request (``contracts.guest.SessionCreate`` and the rest)."""
    try:
        return _handle(request, base_env)
    except SessionError as exc:
        return framing.error(request.id, exc.code, str(exc))


def _handle(request: framing.SessionRequest, base_env: dict[str, str]) -> dict[str, object]:
    kind = request.kind
    if kind == "session.create":
        session = create(request.session_id, request.cwd, base_env)
        return framing.session_result(request.id, _info(session, with_commands=False))
    if kind == "session.list":
        return framing.session_list_result(request.id, [_info(s) for s in all_sessions()])
    assert request.session_id is not None  # required by the parser for every other kind
    if kind == "session.get":
        limit = HISTORY_OUTPUT_LIMIT if request.output else 0
        return framing.session_result(request.id, _info(get(request.session_id), output_limit=limit))
    if kind == "session.delete":
        return framing.session_result(request.id, _info(delete(request.session_id)))
    if kind == "session.exec":
        session = get(request.session_id)
        command = session.submit(request.command, request.timeout_ms)
        if request.run_async:
            return framing.session_command_result(request.id, _command_info(command))
        # Bounded even when the command waits behind an earlier one without a deadline: the
        # reply then says it is still running (no exit code), and its logs can be fetched later.
        command.done.wait(request.timeout_ms / 1000 + KILL_GRACE + 1 if request.timeout_ms else None)
        return framing.session_command_result(request.id, _command_info(command, OUTPUT_LIMIT))
    command = get(request.session_id).command(request.command_id)
    limit = OUTPUT_LIMIT if kind == "session.logs" else 0
    return framing.session_command_result(request.id, _command_info(command, limit))


def _info(session: Session, *, with_commands: bool = True, output_limit: int = 0) -> dict[str, object]:
    commands = session.commands() if with_commands else []
    return framing.session_info(
        session_id=session.id,
        cwd=session.cwd,
        alive=session.alive,
        commands=[_command_info(command, output_limit) for command in commands],
    )


def _command_info(command: Command, output_limit: int = 0) -> dict[str, object]:
    finished = command.done.is_set()
    stdout, stderr = command.output(output_limit) if output_limit else ("", "")
    return framing.session_command_info(
        command_id=command.id,
        command=command.text,
        exit_code=command.exit_code if finished else None,
        timed_out=command.timed_out and finished,
        cwd=command.cwd,
        stdout=stdout,
        stderr=stderr,
    )
