"""Terminals: PTY sessions as named objects of the agent (``pty.*`` in ``contracts/guest.py``).

A session is one interactive login ``bash`` (``sh`` where there is none) running as the
agent's user on a pseudo-terminal. The shell is started with ``setsid`` and takes the
terminal as its controlling tty (``TIOCSCTTY``), so job control, ``^C`` and SIGWINCH work as in
any terminal, and every process it starts belongs to its process session, which is how a
kill finds them all, background jobs in their own process groups included.

Output, input and size. The shell is a terminal process of the agent's process registry
(``guest/processes.py``), which reads the terminal's master side all the time, whether or not
a client is attached (so the shell never blocks on a full terminal buffer while nobody
watches), keeps the newest ``PTY_SCROLLBACK`` bytes and sends each chunk to every attached
client, in order; a client that attaches first gets the scrollback, under the same lock, so it
sees every byte exactly once from there on. This module adds the names, the lifetime rules
and the ``pty.*`` wire shapes (``_Viewer`` translates the registry's frames). Input waits
while the shell does not read it; an exited session refuses it. Resizing is ``TIOCSWINSZ``
on the master; the kernel sends SIGWINCH to the terminal's foreground process group. The
shells are listed by ``proc.list`` too, like every registry process.

Lifetime (also in the contract). A session made by ``pty.create`` lives until ``pty.kill`` or
until its shell exits, and then stays listed, inactive, with its exit code, until killed. An
*ephemeral* session (``pty.attach`` with ``create``: a WebSocket terminal) is killed when its
last client detaches and forgotten once its shell is gone. When the shell exits, the registry
drains what is left (briefly: a background job that keeps writing cannot hold it), kills
whatever else is still in the shell's process session and closes the terminal; every client
then gets ``pty.exited``, and its stream is closed. Killing sends SIGHUP (and SIGCONT,
so stopped jobs get it) to every process of the session, then SIGKILL to any left after
``PTY_KILL_GRACE_MS``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import threading
import uuid
from datetime import UTC, datetime
from typing import Protocol

from guest import framing, processes

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class PtyError(Exception):
    """A request the terminals cannot serve; ``code`` is the agent error code to answer with."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Client(Protocol):
    """An attached stream, as a session sees it (the agent's ``Connection``)."""

    def send(self, message: dict[str, object]) -> None: ...

    def send_binary(self, data: bytes) -> None:
        """Raises ``OSError`` when the host is gone."""

    def read_frame(self) -> tuple[bytes, bool] | None: ...

    def close(self) -> None:
        """End the stream from the agent's side (the reader then sees the end)."""


class _Viewer:
    """A client as the session's registry process sees it: the terminal's output without the
    registry's tag byte (and without its end marker), ``pty.attached`` in place of
    ``proc.started``, and ``pty.exited`` (then the stream's close) in place of ``proc.exited``."""

    def __init__(self, session: Session, client: Client, request_id: int) -> None:
        self.session = session
        self.client = client
        self.request_id = request_id

    def send(self, message: dict[str, object]) -> None:
        if message["t"] == "proc.started":
            self.client.send(framing.pty_attached(self.request_id, self.session.info()))
        elif message["t"] == "proc.exited":
            try:
                exit_code = message["exit_code"]
                assert isinstance(exit_code, int)
                self.client.send(framing.pty_exited(0, exit_code))
            finally:
                self.client.close()

    def send_binary(self, data: bytes) -> None:
        if len(data) > 1:
            self.client.send_binary(data[1:])

    def read_frame(self) -> tuple[bytes, bool] | None:
        return self.client.read_frame()

    def close(self) -> None:
        self.client.close()


class Session:
    """One terminal: a shell that is a terminal process of the agent's process registry
    (``guest/processes.py``), which reads its output, keeps the scrollback and serves the
    clients. ``lock`` guards the start and the end."""

    def __init__(
        self,
        session_id: str,
        *,
        cols: int,
        rows: int,
        cwd: str,
        env: dict[str, str],
        base_env: dict[str, str],
        ephemeral: bool,
        lazy_start: bool,
    ) -> None:
        self.session_id = session_id
        self.cols, self.rows = cols, rows
        self.cwd = cwd
        self.env = env
        self.ephemeral = ephemeral
        self.lazy_start = lazy_start
        self.created_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        self.lock = threading.Lock()
        self.exit_code: int | None = None
        self.process: processes.Process | None = None
        self._base_env = base_env
        self._ended = threading.Event()

    # state

    @property
    def exited(self) -> bool:
        return self._ended.is_set()

    def client_count(self) -> int:
        return 0 if self.process is None else self.process.client_count()

    def info(self) -> dict[str, object]:
        """The session as ``pty.info`` describes it; an attaching client counts already (its
        ``pty.attached`` is sent once it is one of the process's clients)."""
        return framing.pty_info(
            session_id=self.session_id,
            cols=self.cols,
            rows=self.rows,
            cwd=self.cwd,
            env=self.env,
            created_at=self.created_at,
            active=self.process is not None and not self.exited,
            exit_code=self.exit_code,
            clients=self.client_count(),
            ephemeral=self.ephemeral,
            lazy_start=self.lazy_start,
            pid=self.process.pid if self.process is not None else None,
        )

    # the shell

    def start(self) -> None:
        """Start the shell (called once, under ``lock`` or before the session is published)."""
        shell_env = {**self._base_env, "TERM": processes.DEFAULT_TERM, **self.env}
        try:
            self.process = processes.start(
                _shell_argv(shell_env),
                env=self.env,
                cwd=self.cwd,
                base_env=self._base_env,
                pty={"cols": self.cols, "rows": self.rows},
                kept=framing.PTY_SCROLLBACK,
                on_end=self._ended_with,
            )
        except processes.ProcError as exc:
            raise PtyError("internal", f"cannot start a shell: {exc}") from None

    def _ended_with(self, process: processes.Process) -> None:
        """The shell is gone (the registry killed what was left of its session): record it,
        before the clients hear of it; an ephemeral session is then already forgotten."""
        with self.lock:
            self.exit_code = process.exit_code
            self._ended.set()
        if self.ephemeral:
            _forget(self)

    def kill(self) -> None:
        """Kill the shell and everything in its session; returns once the session ended."""
        with self.lock:
            if self.process is None:  # a lazy session that never started
                self.exit_code = -int(signal.SIGHUP)
                self._ended.set()
                return
        self.process.kill()
        self.process.wait(timeout=framing.PTY_KILL_GRACE_MS / 1000 + 2)

    # clients

    def attach(self, client: Client, request_id: int) -> _Viewer:
        """Send ``pty.attached`` and the scrollback, then add ``client`` to the audience."""
        with self.lock:
            if self.exited:
                message = f"pty session {self.session_id!r} has exited (exit code {self.exit_code})"
                raise PtyError("conflict", message)
            if self.process is None:
                self.start()
            assert self.process is not None
        viewer = _Viewer(self, client, request_id)
        self.process.attach(viewer, request_id)
        return viewer

    def detach(self, viewer: _Viewer) -> None:
        """Remove ``viewer``; an ephemeral session whose last client left is killed."""
        assert self.process is not None
        self.process.detach(viewer)
        if self.ephemeral and not self.process.client_count() and not self.exited:
            self.kill()

    def write(self, data: bytes) -> None:
        """Type ``data`` into the terminal, waiting while its input buffer is full."""
        if self.process is None or self.exited:
            raise PtyError("conflict", f"pty session {self.session_id!r} has exited")
        try:
            self.process.write(data, None)
        except processes.ProcError as exc:
            raise PtyError("conflict", f"pty session {self.session_id!r}: {exc}") from None

    def resize(self, cols: int, rows: int) -> None:
        cols, rows = _check_size(cols, rows)
        with self.lock:
            if self.exited:
                raise PtyError("conflict", f"pty session {self.session_id!r} has exited")
            self.cols, self.rows = cols, rows
            if self.process is not None:
                with contextlib.suppress(processes.ProcError):  # it ended just now
                    self.process.resize(cols, rows)


# the registry ---------------------------------------------------------------------------------

_sessions: dict[str, Session] = {}
_registry_lock = threading.Lock()


def create(
    session_id: str | None,
    *,
    cols: int,
    rows: int,
    cwd: str | None,
    env: dict[str, str],
    base_env: dict[str, str],
    ephemeral: bool,
    lazy_start: bool = False,
) -> Session:
    """Make (and, unless ``lazy_start``, start) a session; see the module doc for the rules."""
    if session_id is None:
        session_id = str(uuid.uuid4())
    if not _ID.fullmatch(session_id):
        raise PtyError("bad_request", "a pty session id is 1-128 letters, digits, '.', '_' or '-'")
    cols, rows = _check_size(cols, rows)
    home = base_env.get("HOME") or "/"
    directory = os.path.normpath(os.path.join(home, cwd)) if cwd else home
    if not os.path.isdir(directory):
        raise PtyError("bad_request", f"cwd {directory!r} is not a directory")
    for name, value in env.items():
        if not name or "=" in name or "\0" in name or "\0" in value:
            raise PtyError("bad_request", f"invalid environment variable name or value: {name!r}")
    session = Session(
        session_id,
        cols=cols,
        rows=rows,
        cwd=directory,
        env=dict(env),
        base_env=base_env,
        ephemeral=ephemeral,
        lazy_start=lazy_start,
    )
    with _registry_lock:
        if session_id in _sessions:
            raise PtyError("conflict", f"pty session {session_id!r} already exists")
        if len(_sessions) >= framing.PTY_MAX_SESSIONS:
            for stale in [s for s in _sessions.values() if s.exited and not s.client_count()]:
                del _sessions[stale.session_id]
        if len(_sessions) >= framing.PTY_MAX_SESSIONS:
            limit = framing.PTY_MAX_SESSIONS
            raise PtyError("conflict", f"this sandbox already has {limit} pty sessions; kill one first")
        if not lazy_start:
            session.start()
        _sessions[session_id] = session
    return session


def get(session_id: str) -> Session:
    with _registry_lock:
        session = _sessions.get(session_id)
    if session is None:
        raise PtyError("not_found", f"pty session {session_id!r} not found")
    return session


def kill(session_id: str) -> Session:
    session = get(session_id)
    session.kill()
    _forget(session)
    return session


def close_all() -> None:
    """Kill every session (the agent is shutting down)."""
    with _registry_lock:
        sessions = list(_sessions.values())
    for session in sessions:
        session.kill()


def _forget(session: Session) -> None:
    with _registry_lock:
        if _sessions.get(session.session_id) is session:
            del _sessions[session.session_id]


# requests -------------------------------------------------------------------------------------


def handle(request: framing.PtyRequest, base_env: dict[str, str]) -> dict[str, object]:
    """Answer one ``pty.*`` relay request."""
    try:
        return _handle(request, base_env)
    except PtyError as exc:
        return framing.error(request.id, exc.code, str(exc))


def _handle(request: framing.PtyRequest, base_env: dict[str, str]) -> dict[str, object]:
    if request.kind == "pty.list":
        with _registry_lock:
            sessions = list(_sessions.values())
        return framing.pty_list_result(request.id, [session.info() for session in sessions])
    if request.kind == "pty.create":
        session = create(
            request.session_id,
            cols=request.cols,
            rows=request.rows,
            cwd=request.cwd,
            env=request.env,
            base_env=base_env,
            ephemeral=False,
            lazy_start=request.lazy_start,
        )
        return framing.pty_result(request.id, session.info())
    assert request.session_id is not None  # required by the parser for the kinds below
    if request.kind == "pty.get":
        session = get(request.session_id)
    elif request.kind == "pty.kill":
        session = kill(request.session_id)
    else:  # pty.resize
        session = get(request.session_id)
        session.resize(request.cols, request.rows)
    with session.lock:
        return framing.pty_result(request.id, session.info())


def attach(request: framing.PtyAttachRequest, client: Client, base_env: dict[str, str]) -> None:
    """Run an attach stream: ``pty.attached``, then input in and output out until either the
    host detaches or the shell exits (see the module doc)."""
    try:
        if request.create:
            session = create(
                request.session_id,
                cols=request.cols,
                rows=request.rows,
                cwd=request.cwd,
                env=request.env,
                base_env=base_env,
                ephemeral=True,
            )
        else:
            session = get(request.session_id)
        viewer = session.attach(client, request.id)
    except PtyError as exc:
        client.send(framing.error(request.id, exc.code, str(exc)))
        return
    try:
        _relay_input(session, client)
    finally:
        session.detach(viewer)


def _relay_input(session: Session, client: Client) -> None:
    """Binary frames are typed into the terminal; ``pty.resize`` frames resize it; anything
    else is ignored. Returns when the host detaches or the session has ended."""
    while True:
        frame = client.read_frame()
        if frame is None:
            return
        data, binary = frame
        if binary:
            if not data:
                return
            try:
                session.write(data)
            except PtyError:
                return
            continue
        try:
            message = framing.parse_request(data)
        except framing.BadRequest:
            continue
        if isinstance(message, framing.PtyRequest) and message.kind == "pty.resize":
            with contextlib.suppress(PtyError):
                session.resize(message.cols, message.rows)


def _check_size(cols: int, rows: int) -> tuple[int, int]:
    limit = framing.PTY_MAX_SIZE
    if not (1 <= cols <= limit and 1 <= rows <= limit):
        raise PtyError("bad_request", f"cols and rows must be 1 to {limit}, not {cols}x{rows}")
    return cols, rows


def _shell_argv(env: dict[str, str]) -> list[str]:
    bash = shutil.which("bash", path=env.get("PATH"))
    if bash is not None:
        return [bash, "--login", "-i"]
    return [shutil.which("sh", path=env.get("PATH")) or "/bin/sh", "-l", "-i"]
