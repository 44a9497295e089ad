"""Terminals: PTY sessions as named objects of the agent (``pty.*`` in ``contracts/guest.py``).

A session is one interactive login ``bash`` (``sh`` where there is none) running as the
agent's user on a pseudo-terminal. The shell is started with ``setsid`` and takes the
terminal as its controlling tty (``TIOCSCTTY``), so job control, ``^C`` and SIGWINCH work as in
any terminal, and every process it starts belongs to its process session, which is how a
kill finds them all, background jobs in their own process groups included.

Output. One pump thread per session reads the terminal's master side all the time, whether
or not a client is attached, so the shell never blocks on a full terminal buffer while nobody
watches. Each chunk goes into a bounded scrollback (``PTY_SCROLLBACK`` bytes, the newest kept)
and to every attached client, in order. A client that attaches first gets the scrollback,
under the same lock that publishes new output, so it sees every byte exactly once from there
on. A client whose connection fails is detached.

Input and size. Clients write to the master side, which is non-blocking: a shell that does
not read its input makes the writer wait in short sleeps (never holding a lock that the exit
path needs), and an exited session refuses input. Resizing is ``TIOCSWINSZ`` on the master;
the kernel sends SIGWINCH to the terminal's foreground process group.

Lifetime (also in the contract). A session made by ``pty.create`` lives until ``pty.kill`` or
until its shell exits, and then stays listed, inactive, with its exit code, until killed. An
*ephemeral* session (``pty.attach`` with ``create``: a WebSocket terminal) is killed when its
last client detaches and forgotten once its shell is gone. When the shell exits, the pump
drains what is left (briefly: a background job that keeps writing cannot hold it), kills
whatever else is still in the shell's process session, closes the terminal and sends
``pty.exited`` to every client, then closes their streams. Killing sends SIGHUP (and SIGCONT,
so stopped jobs get it) to every process of the session, then SIGKILL to any left after
``PTY_KILL_GRACE_MS``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import termios
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Protocol

from guest import framing

READ_CHUNK = 64 * 1024
POLL_S = 0.5
"""How often the pump checks whether the shell has exited while the terminal is quiet (its
end is normally seen at once, as EIO; this catches a background job still holding it)."""
DRAIN_S = 0.2
"""How long the pump keeps reading after the shell exited (a job may still be writing)."""
WRITE_WAIT_S = 0.01
DEFAULT_TERM = "xterm-256color"
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


class Session:
    """One terminal. ``lock`` guards the client list, the scrollback and the state;
    ``_fd_lock`` guards the master descriptor against being closed while it is used."""

    def __init__(
        self,
        session_id: str,
        *,
        cols: int,
        rows: int,
        cwd: str,
        env: dict[str, str],
        shell_env: dict[str, str],
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
        self.clients: list[Client] = []
        self.scrollback = bytearray()
        self.exit_code: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._shell_env = shell_env
        self._master = -1
        self._fd_lock = threading.Lock()
        self._pump_thread: threading.Thread | None = None
        self._ended = threading.Event()

    # state

    @property
    def exited(self) -> bool:
        return self._ended.is_set()

    def info(self) -> dict[str, object]:
        return framing.pty_info(
            session_id=self.session_id,
            cols=self.cols,
            rows=self.rows,
            cwd=self.cwd,
            env=self.env,
            created_at=self.created_at,
            active=self.proc is not None and not self.exited,
            exit_code=self.exit_code,
            clients=len(self.clients),
            ephemeral=self.ephemeral,
            lazy_start=self.lazy_start,
            pid=self.proc.pid if self.proc is not None else None,
        )

    # the shell

    def start(self) -> None:
        """Start the shell on a new terminal (called once, under ``lock`` or before the session
        is published)."""
        master, slave = os.openpty()
        try:
            _set_size(master, self.cols, self.rows)
            self.proc = subprocess.Popen(
                _shell_argv(self._shell_env),
                stdin=slave,
                stdout=slave,
                stderr=slave,
                cwd=self.cwd,
                env=self._shell_env,
                start_new_session=True,
                preexec_fn=_take_terminal,  # one ioctl in the child: it takes no lock
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        self._master = master
        self._pump_thread = threading.Thread(target=self._pump, name=f"pty-{self.session_id}", daemon=True)
        self._pump_thread.start()

    def _pump(self) -> None:
        """Read the terminal until the shell is gone, then end the session."""
        assert self.proc is not None
        drain_until: float | None = None
        while True:
            if drain_until is None and self.proc.poll() is not None:
                drain_until = time.monotonic() + DRAIN_S
            if drain_until is not None and time.monotonic() >= drain_until:
                break
            ready, _, _ = select.select([self._master], [], [], POLL_S)
            if not ready:
                if drain_until is not None:
                    break
                continue
            try:
                data = os.read(self._master, READ_CHUNK)
            except BlockingIOError:
                continue
            except OSError:  # EIO: no process holds the terminal any more
                data = b""
            if not data:
                break
            self._publish(data)
        self._finish(self.proc.wait())

    def _publish(self, data: bytes) -> None:
        with self.lock:
            self.scrollback += data
            excess = len(self.scrollback) - framing.PTY_SCROLLBACK
            if excess > 0:
                del self.scrollback[:excess]
            for client in list(self.clients):
                try:
                    client.send_binary(data)
                except OSError:
                    self.clients.remove(client)

    def _finish(self, exit_code: int) -> None:
        """The shell is gone: clean up its session, close the terminal, tell the clients."""
        assert self.proc is not None
        terminate_session(self.proc.pid)
        with self._fd_lock:
            os.close(self._master)
            self._master = -1
        with self.lock:
            self.exit_code = exit_code
            self._ended.set()
            clients, self.clients = self.clients, []
        if self.ephemeral:  # before the clients hear of the exit: then it is already gone
            _forget(self)
        for client in clients:
            with contextlib.suppress(OSError):
                client.send(framing.pty_exited(0, exit_code))
            client.close()

    def kill(self) -> None:
        """Kill the shell and everything in its session; returns once the session ended."""
        with self.lock:
            if self.proc is None:  # a lazy session that never started
                self.exit_code = -int(signal.SIGHUP)
                self._ended.set()
                return
        terminate_session(self.proc.pid)
        if self._pump_thread is not None:
            self._pump_thread.join(timeout=framing.PTY_KILL_GRACE_MS / 1000 + 2)

    # clients

    def attach(self, client: Client, request_id: int) -> None:
        """Send ``pty.attached`` and the scrollback, then add ``client`` to the audience."""
        with self.lock:
            if self.exited:
                message = f"pty session {self.session_id!r} has exited (exit code {self.exit_code})"
                raise PtyError("conflict", message)
            if self.proc is None:
                self.start()
            self.clients.append(client)
            client.send(framing.pty_attached(request_id, self.info()))
            if self.scrollback:
                try:
                    client.send_binary(bytes(self.scrollback))
                except OSError:
                    self.clients.remove(client)

    def detach(self, client: Client) -> None:
        """Remove ``client``; an ephemeral session whose last client left is killed."""
        with self.lock:
            with contextlib.suppress(ValueError):
                self.clients.remove(client)
            orphaned = self.ephemeral and not self.clients and not self.exited
        if orphaned:
            self.kill()

    def write(self, data: bytes) -> None:
        """Type ``data`` into the terminal, waiting while its input buffer is full."""
        view = memoryview(data)
        while view:
            with self._fd_lock:
                if self._master < 0:
                    raise PtyError("conflict", f"pty session {self.session_id!r} has exited")
                try:
                    written = os.write(self._master, view)
                except BlockingIOError:
                    written = 0
                except OSError as exc:
                    raise PtyError("conflict", f"pty session {self.session_id!r}: {exc.strerror}") from None
            view = view[written:]
            if view and not written:
                time.sleep(WRITE_WAIT_S)

    def resize(self, cols: int, rows: int) -> None:
        cols, rows = _check_size(cols, rows)
        with self.lock:
            if self.exited:
                raise PtyError("conflict", f"pty session {self.session_id!r} has exited")
            self.cols, self.rows = cols, rows
            with self._fd_lock:
                if self._master >= 0:
                    _set_size(self._master, cols, rows)


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
    shell_env = {**base_env, "TERM": DEFAULT_TERM, **env}
    session = Session(
        session_id,
        cols=cols,
        rows=rows,
        cwd=directory,
        env=dict(env),
        shell_env=shell_env,
        ephemeral=ephemeral,
        lazy_start=lazy_start,
    )
    with _registry_lock:
        if session_id in _sessions:
            raise PtyError("conflict", f"pty session {session_id!r} already exists")
        if len(_sessions) >= framing.PTY_MAX_SESSIONS:
            for stale in [s for s in _sessions.values() if s.exited and not s.clients]:
                del _sessions[stale.session_id]
        if len(_sessions) >= framing.PTY_MAX_SESSIONS:
            limit = framing.PTY_MAX_SESSIONS
            raise PtyError("conflict", f"this sandbox already has {limit} pty sessions; kill one first")
        if not lazy_start:
            try:
                session.start()
            except OSError as exc:
                raise PtyError("internal", f"cannot start a shell: {exc}") from None
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
        session.attach(client, request.id)
    except PtyError as exc:
        client.send(framing.error(request.id, exc.code, str(exc)))
        return
    try:
        _relay_input(session, client)
    finally:
        session.detach(client)


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


# processes and terminals ----------------------------------------------------------------------


def terminate_session(leader: int) -> None:
    """SIGHUP (and SIGCONT) every process of ``leader``'s process session, then SIGKILL those
    still alive after the grace period."""
    members = session_members(leader)
    for pid in members:
        for signum in (signal.SIGHUP, signal.SIGCONT):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)
    deadline = time.monotonic() + framing.PTY_KILL_GRACE_MS / 1000
    while members and time.monotonic() < deadline:
        time.sleep(0.02)
        members = session_members(leader)
    for pid in members:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def session_members(leader: int) -> list[int]:
    """Live (not zombie) processes whose process session or process group is ``leader``'s."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat:
                raw = stat.read()
        except OSError:
            continue
        fields = raw[raw.rfind(b")") + 2 :].split()
        if len(fields) < 4 or fields[0] == b"Z":
            continue
        if int(fields[3]) == leader or int(fields[2]) == leader:
            found.append(int(name))
    return found


def _check_size(cols: int, rows: int) -> tuple[int, int]:
    limit = framing.PTY_MAX_SIZE
    if not (1 <= cols <= limit and 1 <= rows <= limit):
        raise PtyError("bad_request", f"cols and rows must be 1 to {limit}, not {cols}x{rows}")
    return cols, rows


def _set_size(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _take_terminal() -> None:
    """In the child, after ``setsid``: make the terminal on stdin the controlling tty."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _shell_argv(env: dict[str, str]) -> list[str]:
    bash = shutil.which("bash", path=env.get("PATH"))
    if bash is not None:
        return [bash, "--login", "-i"]
    return [shutil.which("sh", path=env.get("PATH")) or "/bin/sh", "-l", "-i"]
