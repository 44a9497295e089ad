"""dnah's in-sandbox agent: answers hostd's requests on the sandbox's agent socket.

Run as ``PYTHONPATH=/opt/dnah python3 -S -m guest.agent --uds /run/dnah/agent.sock [--init]``.
Stdlib only, because it runs on whatever python3 the template ships (Debian's 3.11).

Transport. Under Cloud Hypervisor, the VMM's hybrid-vsock muxer answers the host's
``CONNECT <port>`` line and hands the agent a plain vsock stream. The namespace runtime has no
muxer, so the agent plays its part on a Unix socket: every connection must open with
``CONNECT 52\\n`` (case-insensitive, spaces trimmed), the agent answers ``OK 52\\n`` and frames
follow; any other port, or a line that is not a ``CONNECT``, gets the connection closed,
which is what the muxer does when nothing listens on a port. hostd's client is therefore the
same for both runtimes.

Concurrency. One thread per connection reads frames; each request runs in its own worker
thread (a stream runs in the reader thread itself: it owns its connection), so a long
``exec`` never delays a ``ping`` on the same connection. Replies are written
whole under a per-connection lock, so frames never interleave. A frame that is not valid JSON
or not a valid request gets an ``error`` frame and the connection carries on; a JSON frame
whose header claims more than ``MAX_JSON_FRAME`` bytes means the stream cannot be trusted,
so the connection is closed. Requests still running when their connection goes away finish
(within their own timeout) and their replies are dropped.

PID 1. The runtime starts the agent as PID 1 of a fresh PID namespace, where every orphan
is reparented to it and stays a zombie until reaped. With ``--init`` the agent forks: the
parent stays PID 1, reaps every child with ``os.wait()`` and forwards SIGTERM/SIGINT to the
child, which runs the server. The split matters: a reaping loop in the server's own process
would steal exit statuses from its ``subprocess.Popen`` calls.

Shutdown. SIGTERM (or SIGINT) stops accepting connections, removes the socket and exits 0.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import selectors
import signal
import socket
import stat
import sys
import threading

from guest import framing, lazy

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: ``typing`` is not worth importing at start
    from collections.abc import Callable, Mapping
    from types import FrameType
    from typing import Any

VERSION = "0.2.0"
AGENT = f"dnah-guest/{VERSION}"
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HANDSHAKE_MAX = 64
"""Longest ``CONNECT`` line accepted; a peer that sends more is not speaking the protocol."""
LISTEN_BACKLOG = 128
SKIP_CHUNK = 64 * 1024
PR_SET_CHILD_SUBREAPER = 36


USAGE = "usage: guest.agent --uds PATH [--init]"


def main(argv: list[str] | None = None) -> int:
    """``--uds PATH`` (the socket to listen on) and ``--init`` (act as PID 1: fork the server,
    reap orphans). Parsed by hand: ``argparse`` costs more to import than the rest of what
    the agent needs before it answers its first ping."""
    parsed = _parse_args(sys.argv[1:] if argv is None else argv)
    if isinstance(parsed, str):
        print(f"{USAGE}\nguest.agent: error: {parsed}", file=sys.stderr)
        return 2
    socket_path, init = parsed
    if not init:
        return serve(socket_path)
    child = os.fork()
    if child == 0:
        return serve(socket_path)
    return supervise(child)


def _parse_args(argv: list[str]) -> tuple[str, bool] | str:
    """``(socket path, init)``, or what is wrong with ``argv``."""
    socket_path, init = None, False
    rest = iter(argv)
    for arg in rest:
        if arg == "--init":
            init = True
        elif arg == "--uds" or arg.startswith("--uds="):
            value = arg.partition("=")[2] if "=" in arg else next(rest, None)
            if not value:
                return "--uds needs a path"
            socket_path = value
        else:
            return f"unrecognized argument {arg!r}"
    if socket_path is None:
        return "--uds is required"
    return socket_path, init


# PID 1 ---------------------------------------------------------------------------------------


def supervise(child: int) -> int:
    """Reap every child until ``child`` (the server) exits, then return its exit status.

    SIGTERM and SIGINT are forwarded to the server rather than acted on here, so shutdown
    always goes through the server's clean path. When PID 1 then exits, the kernel kills
    whatever else is left in the namespace.
    """

    def forward(signum: int, _frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):  # the server was reaped a moment ago
            os.kill(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    _become_subreaper()  # after the fork, so the server does not wait for ctypes to load
    while True:
        pid, status = os.wait()
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            return code if code >= 0 else 128 - code


def _become_subreaper() -> None:
    """Make orphans of the server's descendants come to this process.

    As PID 1 of a PID namespace the agent already gets them; being a subreaper as well keeps
    ``--init`` correct when something else is PID 1 (tini, or a test run on the host). Done
    just after the fork: the server, just started, has orphaned nothing yet.
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno), "prctl(PR_SET_CHILD_SUBREAPER)")


# Server ---------------------------------------------------------------------------------------


def serve(socket_path: str) -> int:
    """Accept connections on ``socket_path`` until SIGTERM or SIGINT, then clean up.

    The signals reach the accept loop through ``signal.set_wakeup_fd`` instead of an exception
    raised from a handler, so they can never interrupt the loop halfway through starting a
    connection thread.
    """
    base_env = base_environment(os.environ)
    listener = _listen(socket_path)
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _ignore_signal)
    print(f"{AGENT} listening on {socket_path}", file=sys.stderr, flush=True)
    # after the line that says the socket is up: the services' imports are not the boot's
    threading.Thread(target=_start_services, args=(base_env,), daemon=True).start()
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(listener, selectors.EVENT_READ)
            selector.register(wake_read, selectors.EVENT_READ)
            while True:
                events = selector.select()
                if any(key.fd == wake_read for key, _ in events):
                    break
                conn, _ = listener.accept()
                threading.Thread(target=Connection(conn, base_env).serve, daemon=True).start()
    finally:
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(socket_path)
        for name in _CLOSE_AT_EXIT:
            # Not loaded, or still being loaded by the warm-up: it holds nothing yet.
            close_all = getattr(sys.modules.get(f"guest.{name}"), "close_all", None)
            if close_all is not None:
                close_all()
    return 0


def _start_services(base_env: dict[str, str]) -> None:
    """The template's services (``guest/services.py``), off the boot path: the first ping is
    answered while they start."""
    lazy.load("guest.services").start(base_env)


def _ignore_signal(_signum: int, _frame: FrameType | None) -> None:
    """A Python-level handler is required for the wakeup fd to fire; the work is done there."""


def base_environment(inherited: Mapping[str, str]) -> dict[str, str]:
    """The environment every command starts from; a request's ``env`` goes on top.

    Defaults for PATH, HOME, USER and LANG, overridden by the agent's own environment (which
    the runtime sets), minus the agent's plumbing: PYTHONPATH, which points at the agent's code,
    and every ``DNAH_*`` variable, which is for the agent alone.
    """
    try:
        entry = pwd.getpwuid(os.getuid())
        home, user = entry.pw_dir, entry.pw_name
    except KeyError:
        home, user = "/tmp", str(os.getuid())
    env = {"PATH": BASE_PATH, "HOME": home, "USER": user, "LANG": "C.UTF-8"}
    env.update(
        (name, value)
        for name, value in inherited.items()
        if name != "PYTHONPATH" and not name.startswith("DNAH_")
    )
    return env


def _listen(socket_path: str) -> socket.socket:
    """Bind the agent socket with mode 0600, replacing a socket a previous run left behind."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(socket_path).st_mode):
            os.unlink(socket_path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    previous = os.umask(0o177)  # no thread runs yet, so the process-wide umask is safe to touch
    try:
        listener.bind(socket_path)
    finally:
        os.umask(previous)
    listener.listen(LISTEN_BACKLOG)
    return listener


# Connections ----------------------------------------------------------------------------------


class Connection:
    """One accepted connection: the handshake, then frames until either side hangs up."""

    def __init__(self, sock: socket.socket, base_env: dict[str, str]) -> None:
        self._sock = sock
        self._reader = sock.makefile("rb")
        self._base_env = base_env
        self._write_lock = threading.Lock()
        self._in_flight = 0
        self._idle = threading.Condition()

    def serve(self) -> None:
        """Run the connection to its end, then close the socket once no worker can write to it.

        ``shutdown`` tells the peer at once; the file descriptor itself is only closed after
        the last worker has replied, so a late reply can never land on a recycled descriptor.
        """
        try:
            if self._handshake():
                self._read_frames()
        except OSError:
            pass  # the peer reset the connection; nothing to answer
        finally:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            with self._idle:
                self._idle.wait_for(lambda: self._in_flight == 0)
            self._reader.close()
            self._sock.close()

    def _handshake(self) -> bool:
        """Answer ``CONNECT 52`` with ``OK 52``; anything else ends the connection."""
        line = bytearray()
        while not line.endswith(b"\n"):
            byte = self._reader.read(1)
            if not byte or len(line) >= HANDSHAKE_MAX:
                return False
            line += byte
        words = line.split()
        if len(words) != 2 or words[0].upper() != b"CONNECT" or not words[1].isdigit():
            return False
        if int(words[1]) != framing.AGENT_PORT:
            return False
        self._write(f"OK {framing.AGENT_PORT}\n".encode())
        return True

    def _read_frames(self) -> None:
        """Read frames until EOF or an oversize header. A stream opener as the first frame
        hands the connection to that stream (see "Streams" in ``contracts/guest.py``)."""
        first = True
        while True:
            header = self._read_exact(framing.HEADER_SIZE)
            if header is None:
                return
            length, binary = framing.parse_header(header)
            if binary:
                if length > framing.MAX_BINARY_FRAME or not self._skip(length):
                    return
                self._send(framing.error(0, "bad_request", "a binary frame outside a stream"))
                continue
            if length > framing.MAX_JSON_FRAME:
                return
            payload = self._read_exact(length)
            if payload is None:
                return
            if self._dispatch(payload, first):
                return
            first = False

    def _dispatch(self, payload: bytes, first: bool) -> bool:
        """Start the work a frame asks for; True when it was a stream, which has now ended
        (and with it the connection)."""
        try:
            request = framing.parse_request(payload)
        except framing.BadRequest as exc:
            self._send(framing.error(exc.request_id, "bad_request", str(exc)))
            return False
        if type(request).__name__ in _STREAMS:
            if not first:
                message = "a stream must open its own connection (its first frame)"
                self._send(framing.error(request.id, "bad_request", message))
                return False
            _handler(_STREAMS, request)(request, self, self._base_env)
            return True
        with self._idle:
            self._in_flight += 1
        threading.Thread(target=self._work, args=(request,), daemon=True).start()
        return False

    def _work(self, request: framing.Request) -> None:
        try:
            self._send(_answer(request, self._base_env))
            warm_up()
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def _send(self, message: dict[str, object]) -> None:
        """Write one reply frame; if the peer is gone the reply has nowhere to go."""
        with contextlib.suppress(OSError):
            self._write(framing.encode(message))

    def _write(self, data: bytes) -> None:
        with self._write_lock:
            self._sock.sendall(data)

    # the stream handlers' view of the connection (``transfer.Channel``)

    def read_frame(self) -> tuple[bytes, bool] | None:
        header = self._read_exact(framing.HEADER_SIZE)
        if header is None:
            return None
        length, binary = framing.parse_header(header)
        if length > (framing.MAX_BINARY_FRAME if binary else framing.MAX_JSON_FRAME):
            return None  # the stream cannot be trusted any more: treat it as gone
        payload = self._read_exact(length)
        return None if payload is None else (payload, binary)

    def send(self, message: dict[str, object]) -> None:
        self._send(message)

    def send_binary(self, data: bytes) -> None:
        with self._write_lock:
            self._sock.sendall(framing.binary_header(len(data)))
            if data:
                self._sock.sendall(data)

    def close(self) -> None:
        """End a stream from the agent's side: the host sees the end, and ``read_frame``
        returns None (the descriptor itself is closed by ``serve``)."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)

    def _read_exact(self, size: int) -> bytes | None:
        """``size`` bytes, or None at EOF (a frame cut short is treated as EOF too)."""
        data = self._reader.read(size)
        return data if len(data) == size else None

    def _skip(self, size: int) -> bool:
        """Read and drop ``size`` bytes; False at EOF."""
        while size:
            chunk = self._reader.read(min(size, SKIP_CHUNK))
            if not chunk:
                return False
            size -= len(chunk)
        return True


_HANDLERS: dict[str, tuple[str, str]] = {
    "ExecRequest": ("ops", "exec_command"),
    "CodeRunRequest": ("ops", "run_code"),
    "DirsRequest": ("ops", "dirs"),
    "EnvSetRequest": ("ops", "env_set"),
    "MetricsRequest": ("ops", "metrics"),
    "GitCloneRequest": ("git", "clone"),
    "GitStatusRequest": ("git", "status"),
    "GitAddRequest": ("git", "add"),
    "GitCommitRequest": ("git", "commit"),
    "GitPushRequest": ("git", "push"),
    "GitPullRequest": ("git", "pull"),
    "GitBranchesRequest": ("git", "branches"),
    "GitBranchCreateRequest": ("git", "branch_create"),
    "GitBranchDeleteRequest": ("git", "branch_delete"),
    "GitCheckoutRequest": ("git", "checkout"),
    "GitLogRequest": ("git", "log"),
    "SessionRequest": ("sessions", "handle"),
    "FsRequest": ("files", "handle"),
    "FsWatchRequest": ("watch", "handle"),
    "PtyRequest": ("pty", "handle"),
    "ProcRequest": ("processes", "handle"),
}
"""The handler of each request type but ``ping`` (answered here, it needs the agent's name),
as (module of ``guest``, function): see ``_handler``."""

_STREAMS: dict[str, tuple[str, str]] = {
    "FsWriteRequest": ("transfer", "write"),
    "FsReadRequest": ("transfer", "read"),
    "PtyAttachRequest": ("pty", "attach"),
    "ProcSpawnRequest": ("proc", "spawn"),
    "ProcStartRequest": ("processes", "start_stream"),
    "ProcConnectRequest": ("processes", "connect_stream"),
}
"""The handler of each stream opener; it runs in the connection's reader thread and owns the
connection until it returns."""

_CLOSE_AT_EXIT = ("sessions", "pty", "processes", "services")
"""Handler modules holding processes that must go when the server stops (if they were loaded)."""
_warm = threading.Event()


def _handler(table: dict[str, tuple[str, str]], request: object) -> Callable[..., Any]:
    """The function that handles ``request``, importing its module on first use.

    The handler modules, and what they import (``subprocess``, ``dataclasses``, ``pathlib``
    and more), are not loaded at start, so that the agent listens, and answers the ping the
    runtime waits for, as early as it can; ``warm_up`` loads them right after that, and
    ``guest/lazy.py`` keeps two threads from loading modules at once.
    """
    module, function = table[type(request).__name__]
    handler: Callable[..., Any] = getattr(lazy.load(f"guest.{module}"), function)
    return handler


def warm_up() -> None:
    """Import every handler module in a background thread, once: called after the first
    reply, so the first ``exec`` rarely waits for its module while the ping never does."""
    if _warm.is_set():
        return
    _warm.set()

    def load() -> None:
        for module, _ in {*_HANDLERS.values(), *_STREAMS.values()}:
            lazy.load(f"guest.{module}")

    threading.Thread(target=load, name="warm-up", daemon=True).start()


def _answer(request: framing.Request, base_env: dict[str, str]) -> dict[str, object]:
    """Compute the reply to one request. Never raises: the host always gets an answer."""
    if isinstance(request, framing.PingRequest):
        return framing.pong(request.id, AGENT)
    try:
        return _handler(_HANDLERS, request)(request, base_env)
    except ValueError as exc:  # NUL bytes or '=' in an env name: Popen refuses before forking
        return framing.error(request.id, "bad_request", str(exc))
    except Exception as exc:
        return framing.error(request.id, "internal", f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    sys.exit(main())
