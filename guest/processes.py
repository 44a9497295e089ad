"""The process registry: every process the agent starts for a client, in one place
("The process registry" in ``contracts/guest.py``).

A ``Process`` runs as the agent's user in a process session of its own (``setsid``), so a
signal or a kill reaches everything it started; its stdio is pipes or a pseudo-terminal
that it takes as its controlling tty. Entries are found by pid or by tag.

Output. Pump threads read the process's output all the time, attached or not: one per pipe,
or one for the terminal. Each chunk is kept (``PROC_OUTPUT_KEPT`` bytes per stream, the
newest; see ``_Kept``) and queued for every attached client, in order, under the process's
lock; a client that attaches gets the kept output queued under the same lock, so it sees
every byte exactly once from there on. Each client has an ``_Outbox`` whose own thread
writes to its connection, outside any lock: a slow or stalled client never holds up another
client, an attach, a detach or the end. Pacing: after queueing, a pump waits while a client
is more than ``PROC_CLIENT_BACKLOG`` bytes behind, so a slow client slows the process (the
transport's flow control reaches it) and loses nothing. A client attached with
``cut_if_stalled`` (``proc.start``/``proc.connect`` streams, whose leaving does not end the
process) that has taken nothing for ``PROC_CLIENT_STALL_MS`` while that far behind is cut
off: it gets what was queued, then an ``error``, and the process reads on. A client whose
connection fails is dropped.

Input. The input descriptor (a pipe's write end, or the terminal's master) is non-blocking
and wrapped in ``_Fd``, which closes it only once no writer uses it: a writer waits for it
to drain with ``select`` (a stream's stdin without a deadline, so the host is paced by the
process; a ``proc.input`` for at most ``PROC_INPUT_WAIT_MS``), and a close meanwhile (the
process ended, ``proc.close_stdin``) makes the writer give up at its next look.

The end. A waiter thread per process reaps it, enforces its deadline (SIGKILL to every
process of its session, ``timed_out``) and waits for the pumps; then every client gets
``proc.exited``. The agent never closes a client's stream itself: the host closes it after
``proc.exited`` (see ``guest/proc.py`` for why). A terminal's pump stops ``DRAIN_S`` after
the process exited even if a background job still holds the terminal, and what is left of
its session is killed then (as a terminal's hangup would); pipes are read to their end.
Ended entries are kept for ``PROC_KEEP_EXITED_MS`` (``_prune``, run on every registry
operation: no timer thread).

The session helpers at the end (``terminate_session``, ``session_members``, the terminal
ioctls) are shared with ``guest/pty.py`` and ``guest/proc.py``.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import heapq
import os
import select
import signal
import struct
import subprocess
import termios
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import IO, Protocol

from guest import accounts, framing

READ_CHUNK = 64 * 1024
"""Largest read from an output pipe or terminal, and largest kept chunk."""
KEPT_CHUNKS = 16 * 1024
"""Chunks kept per stream at most, whatever their size (a process writing a byte at a time
would otherwise cost a chunk's overhead per byte)."""
POLL_S = 0.5
"""How often a terminal's pump checks whether the process has exited while it is quiet."""
DRAIN_S = 0.2
"""How long a terminal's pump keeps reading after the process exited."""
WAIT_STEP_S = 0.1
"""How often a writer waiting for the process to read checks whether the input was closed."""
DETACH_WAIT_S = 1.0
"""How long a detach waits for the client's sender to end before closing its stream."""
DEFAULT_TERM = "xterm-256color"


class ProcError(Exception):
    """A request the registry cannot serve; ``code`` is the agent error code to answer with."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Client(Protocol):
    """An attached stream, as a process sees it (the agent's ``Connection``)."""

    def send(self, message: dict[str, object]) -> None: ...

    def send_binary(self, data: bytes) -> None:
        """Raises ``OSError`` when the host is gone."""

    def read_frame(self) -> tuple[bytes, bool] | None: ...

    def close(self) -> None:
        """End the stream from the agent's side (a write blocked on it then fails)."""


class _Outbox:
    """What one attached client has yet to be sent, and the thread that sends it.

    ``put`` only queues (the process's lock is held); the sender writes in order, then ends
    after ``finish`` once the queue is empty, or at once after ``drop`` or when the client's
    connection fails. ``behind`` counts queued output bytes; ``idle_since`` is when the
    client last took a frame, or when the queue last became non-empty."""

    def __init__(self, client: Client, request_id: int, cut_if_stalled: bool) -> None:
        self.client = client
        self.request_id = request_id
        self.cut_if_stalled = cut_if_stalled
        self.cut = False
        self.behind = 0
        self.idle_since = time.monotonic()
        self._items: deque[bytes | dict[str, object]] = deque()
        self._changed = threading.Condition()
        self._finishing = False
        self._gone = False
        self._sender = threading.Thread(target=self._send_all, daemon=True)

    def start(self) -> None:
        """Start sending (the client is one of the process's clients by then)."""
        self._sender.start()

    @property
    def gone(self) -> bool:
        return self._gone

    @property
    def following(self) -> bool:
        """Neither finishing (the process ended, or the client was cut off) nor gone."""
        return not (self._finishing or self._gone)

    def put(self, item: bytes | dict[str, object]) -> None:
        """Queue a binary frame or a JSON message (nothing, once finishing or gone)."""
        with self._changed:
            if self._finishing or self._gone:
                return
            if not self._items:
                self.idle_since = time.monotonic()
            self._items.append(item)
            if isinstance(item, bytes):
                self.behind += len(item)
            self._changed.notify_all()

    def finish(self) -> None:
        """Nothing more comes: the sender ends once it has sent what is queued."""
        with self._changed:
            self._finishing = True
            self._changed.notify_all()

    def drop(self, wait_s: float) -> None:
        """Send nothing more and wait for the sender to end; a sender still blocked in a
        write after ``wait_s`` is freed by closing the client's stream. The connection is
        not written to once this returns."""
        with self._changed:
            self._gone = True
            self._items.clear()
            self.behind = 0
            self._changed.notify_all()
        self._sender.join(wait_s)
        if self._sender.is_alive():
            self.client.close()
            self._sender.join()

    def wait_for_room(self, stall_s: float | None) -> bool:
        """Wait until the client is at most ``PROC_CLIENT_BACKLOG`` bytes behind (or gone);
        False when it took nothing for ``stall_s`` while further behind."""
        with self._changed:
            while self.behind > framing.PROC_CLIENT_BACKLOG and not self._gone:
                left = None if stall_s is None else self.idle_since + stall_s - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._changed.wait(left)
            return True

    def _send_all(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._items or self._finishing or self._gone)
                if self._gone or not self._items:
                    return
                item = self._items[0]
            try:
                if isinstance(item, bytes):
                    self.client.send_binary(item)
                else:
                    self.client.send(item)
            except OSError:
                with self._changed:
                    self._gone = True
                    self._items.clear()
                    self.behind = 0
                    self._changed.notify_all()
                return
            with self._changed:
                if self._items and self._items[0] is item:
                    self._items.popleft()
                    if isinstance(item, bytes):
                        self.behind -= len(item)
                self.idle_since = time.monotonic()
                self._changed.notify_all()


class _Fd:
    """A descriptor shared by threads, closed once it is both closed and unused."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.closing = False
        self._users = 0
        self._cond = threading.Condition()

    def acquire(self) -> int | None:
        with self._cond:
            if self.closing:
                return None
            self._users += 1
            return self.fd

    def release(self) -> None:
        with self._cond:
            self._users -= 1
            if self.closing and not self._users:
                os.close(self.fd)

    def close(self) -> None:
        with self._cond:
            if self.closing:
                return
            self.closing = True
            if not self._users:
                os.close(self.fd)


class _Kept:
    """The newest output of one stream: at most ``limit`` bytes in at most
    ``KEPT_CHUNKS`` chunks, each with the sequence number that orders it among all streams.
    Small writes in a row on one stream are merged into one chunk."""

    def __init__(self, limit: int) -> None:
        self.chunks: deque[tuple[int, bytearray]] = deque()
        self.size = 0
        self.limit = limit

    def merge(self, seq: int, data: bytes) -> bool:
        """Add ``data`` to the last chunk if that is numbered ``seq`` and has room."""
        if not self.chunks or self.chunks[-1][0] != seq or len(self.chunks[-1][1]) + len(data) > READ_CHUNK:
            return False
        self.chunks[-1][1].extend(data)
        self._account(len(data))
        return True

    def add(self, seq: int, data: bytes) -> None:
        self.chunks.append((seq, bytearray(data)))
        self._account(len(data))

    def _account(self, added: int) -> None:
        self.size += added
        limit = self.limit
        while len(self.chunks) > KEPT_CHUNKS or self.size - len(self.chunks[0][1]) >= limit:
            self.size -= len(self.chunks.popleft()[1])
        excess = self.size - limit
        if excess > 0:
            del self.chunks[0][1][:excess]
            self.size -= excess


class Process:
    """One registry entry. ``lock`` guards the clients, the kept output and the end."""

    def __init__(
        self,
        argv: list[str],
        *,
        env: dict[str, str],
        cwd: str,
        tag: str | None,
        pty: tuple[int, int] | None,
        stdin: bool,
        kept: int = framing.PROC_OUTPUT_KEPT,
        on_end: Callable[[Process], None] | None = None,
        account: accounts.Account | None = None,
    ) -> None:
        self.argv = argv
        self._account = account
        self.env = env
        self.cwd = cwd
        self.tag = tag
        self.pty = pty is not None
        self.size = pty
        self.has_stdin = stdin or pty is not None
        self.pid = 0
        self.lock = threading.Lock()
        self.exit_code: int | None = None
        self.timed_out = False
        self.ended_at = 0.0
        self._clients: list[_Outbox] = []
        self._kept: dict[int, _Kept] = {}
        self._kept_limit = kept
        self._on_end = on_end
        self._done = False
        self._seq = 0
        self._ended_streams: list[int] = []
        self._ended = threading.Event()
        self._exited = threading.Event()
        self._input: _Fd | None = None
        self._write_lock = threading.Lock()
        self._popen: subprocess.Popen[bytes] | None = None
        self._pumps: list[tuple[Callable[..., None], tuple[object, ...]]] = []

    # state

    @property
    def running(self) -> bool:
        return not self._done

    def client_count(self) -> int:
        """Clients still following the process: not those it has ended for, been cut off or
        lost (they stay listed until they detach, so that detaching waits for their sender)."""
        return sum(1 for outbox in self._clients if outbox.following)

    def kept_bytes(self) -> int:
        return sum(kept.size for kept in self._kept.values())

    def info(self) -> dict[str, object]:
        return framing.proc_info(
            pid=self.pid,
            argv=self.argv,
            env=self.env,
            cwd=self.cwd,
            pty=self.pty,
            running=self.running,
            tag=self.tag,
            exit_code=self.exit_code,
        )

    # start

    def start(
        self,
        full_env: dict[str, str],
        timeout_ms: int | None,
        client: tuple[Client, int] | None,
        cut_if_stalled: bool = False,
    ) -> None:
        """Start the process and its threads, ``client`` (and its request id) attached before
        any output is read; raises what ``Popen`` raises."""
        if self.size is not None:
            self._start_terminal(full_env)
        else:
            self._start_pipes(full_env)
        popen = self._popen
        assert popen is not None
        self.pid = popen.pid
        deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000
        if client is not None:
            self.attach(*client, cut_if_stalled=cut_if_stalled)
        pumps = [threading.Thread(target=target, args=args, daemon=True) for target, args in self._pumps]
        for pump in pumps:
            pump.start()
        threading.Thread(target=self._wait, args=(popen, pumps, deadline), daemon=True).start()

    def _command(self, env: dict[str, str]) -> tuple[list[str], str]:
        """The argv and working directory to start: through sudo for another account."""
        if self._account is None:
            return self.argv, self.cwd
        return accounts.command(self._account, self.argv, env, self.cwd)

    def _start_pipes(self, env: dict[str, str]) -> None:
        read_end = write_end = -1
        if self.has_stdin:
            read_end, write_end = os.pipe()
        argv, cwd = self._command(env)
        try:
            self._popen = subprocess.Popen(
                argv,
                stdin=read_end if self.has_stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
        except BaseException:
            if self.has_stdin:
                os.close(write_end)
            raise
        finally:
            if self.has_stdin:
                os.close(read_end)
        if self.has_stdin:
            os.set_blocking(write_end, False)
            self._input = _Fd(write_end)
        assert self._popen.stdout is not None and self._popen.stderr is not None
        self._pumps = [
            (self._pump_pipe, (self._popen.stdout, framing.PROC_STDOUT)),
            (self._pump_pipe, (self._popen.stderr, framing.PROC_STDERR)),
        ]

    def _start_terminal(self, env: dict[str, str]) -> None:
        assert self.size is not None
        master, slave = os.openpty()
        argv, cwd = self._command(env)
        try:
            set_size(master, *self.size)
            self._popen = subprocess.Popen(
                argv,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                cwd=cwd,
                env=env,
                start_new_session=True,
                preexec_fn=take_terminal,  # one ioctl in the child: it takes no lock
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        self._input = _Fd(master)
        self._pumps = [(self._pump_terminal, (self._input,))]

    # output

    def _pump_pipe(self, pipe: IO[bytes], tag: int) -> None:
        try:
            while data := os.read(pipe.fileno(), READ_CHUNK):
                self._publish(tag, data)
        except OSError:
            pass
        finally:
            pipe.close()
            self._publish_end(tag)

    def _pump_terminal(self, master: _Fd) -> None:
        fd = master.acquire()
        assert fd is not None
        try:
            drain_until: float | None = None
            while True:
                if drain_until is None and self._exited.is_set():
                    drain_until = time.monotonic() + DRAIN_S
                if drain_until is not None and time.monotonic() >= drain_until:
                    break
                ready, _, _ = select.select([fd], [], [], POLL_S if drain_until is None else DRAIN_S)
                if not ready:
                    if drain_until is not None:
                        break
                    continue
                try:
                    data = os.read(fd, READ_CHUNK)
                except BlockingIOError:
                    continue
                except OSError:  # EIO: no process holds the terminal any more
                    break
                if not data:
                    break
                self._publish(framing.PROC_PTY, data)
        finally:
            master.release()
            self._publish_end(framing.PROC_PTY)

    def _publish(self, tag: int, data: bytes) -> None:
        frame = bytes((tag,)) + data
        with self.lock:
            kept = self._kept.setdefault(tag, _Kept(self._kept_limit))
            if not kept.merge(self._seq, data):  # the previous chunk was another stream's
                self._seq += 1
                kept.add(self._seq, data)
            self._deliver(frame)
            outboxes = [outbox for outbox in self._clients if not outbox.cut]
        self._pace(outboxes)

    def _publish_end(self, tag: int) -> None:
        with self.lock:
            self._ended_streams.append(tag)
            self._deliver(bytes((tag,)))

    def _deliver(self, frame: bytes) -> None:
        """Queue ``frame`` for every client (under ``lock``), forgetting those that are gone."""
        self._clients = [outbox for outbox in self._clients if not outbox.gone]
        for outbox in self._clients:
            if not outbox.cut:
                outbox.put(frame)

    def _pace(self, outboxes: list[_Outbox]) -> None:
        """Wait (outside ``lock``) while a client is too far behind; cut off one that took
        nothing for ``PROC_CLIENT_STALL_MS`` if it may be (see the module doc)."""
        stall_s = framing.PROC_CLIENT_STALL_MS / 1000
        for outbox in outboxes:
            if not outbox.wait_for_room(stall_s if outbox.cut_if_stalled else None):
                self._cut(outbox)

    def _cut(self, outbox: _Outbox) -> None:
        with self.lock:
            if outbox.cut:
                return
            outbox.cut = True
            message = (
                f"the client took no output for {framing.PROC_CLIENT_STALL_MS // 1000} s while "
                f"{framing.PROC_CLIENT_BACKLOG} bytes behind and was cut off; process {self.pid} "
                "runs on (connect again to follow it)"
            )
            outbox.put(framing.error(outbox.request_id, "conflict", message))
            outbox.finish()

    def _replay(self) -> list[bytes]:
        """The kept output as frames, in the order it was written (under ``lock``)."""
        merged = heapq.merge(
            *([(seq, tag, bytes(data)) for seq, data in kept.chunks] for tag, kept in self._kept.items())
        )
        return [bytes((tag,)) + data for _, tag, data in merged]

    # the end

    def _wait(
        self, popen: subprocess.Popen[bytes], pumps: list[threading.Thread], deadline: float | None
    ) -> None:
        try:
            code = popen.wait(timeout=_left(deadline))
        except subprocess.TimeoutExpired:
            self._time_out()
            code = popen.wait()
        self._exited.set()
        for pump in pumps:
            pump.join(timeout=_left(deadline))
            if pump.is_alive():  # a job still holds the output past the deadline
                self._time_out()
                pump.join()
        if self.pty:
            terminate_session(self.pid)
        if self._input is not None:
            self._input.close()
        with self.lock:
            self.exit_code = -signal.SIGKILL if self.timed_out else code
            self.ended_at = time.monotonic()
            self._done = True
            outboxes = [outbox for outbox in self._clients if not outbox.cut]
        if self._on_end is not None:
            self._on_end(self)
        self._ended.set()
        for outbox in outboxes:  # each still attached until it detaches: see ``detach``
            outbox.put(framing.proc_exited(outbox.request_id, self.exit_code, self.timed_out))
            outbox.finish()

    def _time_out(self) -> None:
        self.timed_out = True
        signal_session(self.pid, signal.SIGKILL)

    # clients

    def attach(self, client: Client, request_id: int, *, cut_if_stalled: bool = False) -> None:
        """``proc.started``, the kept output and the ended streams' ends, then live output
        (or, for an ended process, ``proc.exited`` at once). ``cut_if_stalled``: for a client
        whose leaving does not end the process, cut off when it stalls (see the module doc).
        The client stays attached until it detaches, which it must before its connection is
        closed."""
        with self.lock:
            outbox = _Outbox(client, request_id, cut_if_stalled)
            outbox.put(framing.proc_started(request_id, self.pid))
            for frame in [*self._replay(), *(bytes((tag,)) for tag in self._ended_streams)]:
                outbox.put(frame)
            if self._done:
                assert self.exit_code is not None
                outbox.put(framing.proc_exited(request_id, self.exit_code, self.timed_out))
                outbox.finish()
            self._clients.append(outbox)
            outbox.start()

    def detach(self, client: Client) -> None:
        """Stop sending to ``client``; once this returns nothing writes to its connection."""
        with self.lock:
            mine = [outbox for outbox in self._clients if outbox.client is client]
            self._clients = [outbox for outbox in self._clients if outbox.client is not client]
        for outbox in mine:
            outbox.drop(DETACH_WAIT_S)

    # control

    def write(self, data: bytes, wait_s: float | None) -> None:
        """Write ``data`` to the process's input, waiting for it to read for at most
        ``wait_s`` seconds (None: as long as the input is open)."""
        deadline = None if wait_s is None else time.monotonic() + wait_s
        if self._input is None:
            raise ProcError("conflict", f"process {self.pid} was started without stdin")
        if not self._write_lock.acquire(timeout=-1 if wait_s is None else wait_s):
            raise ProcError("conflict", f"process {self.pid} does not read its input")
        try:
            fd = self._input.acquire()
            if fd is None:
                raise ProcError("conflict", f"process {self.pid}'s input is closed")
            try:
                self._write_all(fd, memoryview(data), deadline)
            finally:
                self._input.release()
        finally:
            self._write_lock.release()

    def _write_all(self, fd: int, view: memoryview, deadline: float | None) -> None:
        assert self._input is not None
        while view:
            try:
                view = view[os.write(fd, view) :]
                continue
            except BlockingIOError:
                pass
            except OSError as exc:  # EPIPE: it closed its stdin; EIO: the terminal is gone
                raise ProcError("conflict", f"process {self.pid}'s input: {exc.strerror}") from None
            left = _left(deadline)
            if self._input.closing:
                raise ProcError("conflict", f"process {self.pid}'s input is closed")
            if left is not None and left <= 0:
                raise ProcError("conflict", f"process {self.pid} does not read its input")
            select.select([], [fd], [], WAIT_STEP_S if left is None else min(left, WAIT_STEP_S))

    def close_stdin(self) -> None:
        if self.pty:
            raise ProcError("conflict", f"process {self.pid} runs on a terminal: send ^D (0x04) instead")
        if self._input is None:
            raise ProcError("conflict", f"process {self.pid} was started without stdin")
        self._input.close()

    def resize(self, cols: int, rows: int) -> None:
        if not self.pty or self._input is None:
            raise ProcError("conflict", f"process {self.pid} does not run on a terminal")
        cols, rows = check_size(cols, rows)
        fd = self._input.acquire()
        if fd is None:
            raise ProcError("conflict", f"process {self.pid} has ended")
        try:
            set_size(fd, cols, rows)
            self.size = (cols, rows)
        finally:
            self._input.release()

    def send_signal(self, signum: int) -> None:
        signal_session(self.pid, signum)

    def kill(self) -> None:
        """SIGHUP, then SIGKILL, to every process of its session (see ``terminate_session``)."""
        if self.running:
            terminate_session(self.pid)

    def wait(self, timeout: float | None = None) -> bool:
        return self._ended.wait(timeout)


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


# the registry ---------------------------------------------------------------------------------

_processes: dict[int, Process] = {}
"""By pid, oldest first."""
_registry_lock = threading.Lock()


def start(
    argv: list[str],
    *,
    env: dict[str, str],
    cwd: str | None,
    base_env: dict[str, str],
    tag: str | None = None,
    pty: dict[str, int] | None = None,
    stdin: bool = True,
    timeout_ms: int | None = None,
    user: str | None = None,
    client: tuple[Client, int] | None = None,
    cut_if_stalled: bool = False,
    kept: int = framing.PROC_OUTPUT_KEPT,
    on_end: Callable[[Process], None] | None = None,
) -> Process:
    """Start a registry process (see the contract for the rules), ``client`` attached from
    the start (it gets ``proc.started``; ``cut_if_stalled``: see ``attach``); raises
    ``ProcError``. ``kept``: bytes of each stream kept for replay; ``on_end``: called once the
    process ended, before its clients hear of it (a terminal's scrollback and its session's
    bookkeeping, ``guest/pty.py``). ``user``: the account to run it as (its home is the
    default ``cwd``)."""
    account = _account(user)
    if account is not None:
        base_env = base_env | account.env()
    home = base_env.get("HOME") or "/"
    directory = os.path.normpath(os.path.join(home, cwd)) if cwd else home
    if not os.path.isdir(directory):
        raise ProcError("bad_request", f"cwd {directory!r} is not a directory")
    size = None if pty is None else check_size(pty["cols"], pty["rows"])
    full_env = {**base_env, "TERM": DEFAULT_TERM, **env} if size else {**base_env, **env}
    process = Process(
        argv,
        env=dict(env),
        cwd=directory,
        tag=tag,
        pty=size,
        stdin=stdin,
        kept=kept,
        on_end=on_end,
        account=account if account is not None and not account.own else None,
    )
    with _registry_lock:
        _prune()
        running = [entry for entry in _processes.values() if entry.running]
        if tag is not None and any(entry.tag == tag for entry in running):
            raise ProcError("conflict", f"a running process already has the tag {tag!r}")
        if len(running) >= framing.PROC_MAX_RUNNING:
            raise ProcError("conflict", f"{framing.PROC_MAX_RUNNING} processes are running already")
        try:
            process.start(full_env, timeout_ms, client, cut_if_stalled)
        except FileNotFoundError:
            raise ProcError("not_found", f"{argv[0]}: command not found") from None
        except PermissionError as exc:
            raise ProcError("forbidden", f"{argv[0]}: {exc.strerror}") from None
        except (OSError, ValueError) as exc:
            raise ProcError("bad_request", f"{argv[0]}: {exc}") from None
        _processes.pop(process.pid, None)  # an ended entry whose pid was reused
        _processes[process.pid] = process
    return process


def _account(user: str | None) -> accounts.Account | None:
    if user is None:
        return None
    try:
        return accounts.lookup(user)
    except KeyError:
        raise ProcError("not_found", f"the sandbox has no account {user!r}") from None


def find(pid: int | None, tag: str | None) -> Process:
    """The process ``pid``, else the newest with ``tag``; raises ``ProcError``."""
    with _registry_lock:
        _prune()
        if pid is not None:
            process = _processes.get(pid)
        elif tag is not None:
            tagged = [entry for entry in _processes.values() if entry.tag == tag]
            running = [entry for entry in tagged if entry.running]
            newest = running or tagged
            process = newest[-1] if newest else None
        else:
            raise ProcError("bad_request", "name the process by 'pid' or 'tag'")
    if process is None:
        name = f"pid {pid}" if pid is not None else f"tagged {tag!r}"
        raise ProcError("not_found", f"no process {name}")
    return process


def listing() -> list[Process]:
    with _registry_lock:
        _prune()
        return list(_processes.values())


def close_all() -> None:
    """Kill every running process (the agent is shutting down)."""
    for process in listing():
        process.kill()


def _prune() -> None:
    """Forget ended processes past their time, and the oldest beyond the count or the bytes
    of kept output (under the lock)."""
    horizon = time.monotonic() - framing.PROC_KEEP_EXITED_MS / 1000
    ended = [entry for entry in _processes.values() if not entry.running]
    kept = 0
    for newer, entry in enumerate(reversed(ended)):
        kept += entry.kept_bytes()
        if entry.ended_at < horizon or newer >= framing.PROC_MAX_EXITED or kept > framing.PROC_EXITED_KEPT:
            del _processes[entry.pid]


# requests -------------------------------------------------------------------------------------


def handle(request: framing.ProcRequest, base_env: dict[str, str]) -> dict[str, object]:
    """Answer one ``proc.*`` relay request."""
    try:
        if request.kind == "proc.list":
            return framing.proc_list_result(request.id, [entry.info() for entry in listing()])
        process = find(request.pid, request.tag)
        if not process.running:
            raise ProcError("conflict", f"process {process.pid} has ended (exit code {process.exit_code})")
        if request.kind == "proc.signal":
            if not 1 <= request.signal <= 64:
                raise ProcError("bad_request", f"no signal {request.signal}")
            process.send_signal(request.signal)
        elif request.kind == "proc.input":
            process.write(_decode_input(request.data), framing.PROC_INPUT_WAIT_MS / 1000)
        elif request.kind == "proc.close_stdin":
            process.close_stdin()
        else:  # proc.resize
            process.resize(request.cols, request.rows)
    except ProcError as exc:
        return framing.error(request.id, exc.code, str(exc))
    return framing.proc_done(request.id)


def _decode_input(data: str) -> bytes:
    limit = framing.PROC_INPUT_MAX
    if len(data) > (limit + 2) // 3 * 4:  # not worth decoding
        raise ProcError("bad_request", f"input is limited to {limit} bytes")
    try:
        decoded = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ProcError("bad_request", "'data' is not base64") from None
    if len(decoded) > limit:
        raise ProcError("bad_request", f"input is limited to {limit} bytes")
    return decoded


def start_stream(request: framing.ProcStartRequest, client: Client, base_env: dict[str, str]) -> None:
    """Run a ``proc.start`` stream: start the process, then as ``connect_stream``."""
    try:
        process = start(
            request.argv,
            env=request.env,
            cwd=request.cwd,
            base_env=base_env,
            tag=request.tag,
            pty=request.pty,
            stdin=request.stdin,
            timeout_ms=request.timeout_ms,
            user=request.user,
            client=(client, request.id),
            cut_if_stalled=True,
        )
    except ProcError as exc:
        client.send(framing.error(request.id, exc.code, str(exc)))
        return
    try:
        relay_input(process, client)
    finally:
        process.detach(client)


def connect_stream(request: framing.ProcConnectRequest, client: Client, base_env: dict[str, str]) -> None:
    """Run a ``proc.connect`` stream: the kept output, live output, input, until the host
    leaves (which only detaches)."""
    try:
        process = find(request.pid, request.tag)
    except ProcError as exc:
        client.send(framing.error(request.id, exc.code, str(exc)))
        return
    process.attach(client, request.id, cut_if_stalled=True)
    try:
        relay_input(process, client)
    finally:
        process.detach(client)


def relay_input(process: Process, client: Client) -> None:
    """Binary frames are input (an empty one closes a pipe's stdin), until the host leaves;
    input that has nowhere to go is dropped. JSON frames are ignored."""
    open_ = process.has_stdin
    while (frame := client.read_frame()) is not None:
        data, binary = frame
        if not binary or not open_:
            continue
        try:
            if data:
                process.write(data, None)
            elif not process.pty:
                open_ = False
                process.close_stdin()
        except ProcError:
            open_ = False


# process sessions and terminals ---------------------------------------------------------------


def signal_session(leader: int, signum: int) -> None:
    """Send ``signum`` to every process of ``leader``'s process session (those of another
    account through sudo: ``guest/accounts.py``)."""
    _signal(session_members(leader), signum)


def terminate_session(leader: int) -> None:
    """SIGHUP (and SIGCONT) every process of ``leader``'s process session, then SIGKILL those
    still alive after the grace period."""
    members = session_members(leader)
    for signum in (signal.SIGHUP, signal.SIGCONT):
        _signal(members, signum)
    deadline = time.monotonic() + framing.PTY_KILL_GRACE_MS / 1000
    while members and time.monotonic() < deadline:
        time.sleep(0.02)
        members = session_members(leader)
    _signal(members, signal.SIGKILL)


def _signal(pids: list[int], signum: int) -> None:
    denied = []
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass
        except PermissionError:  # another account's, started through sudo
            denied.append(pid)
    if denied:
        accounts.signal_as_root(denied, signum)


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


def check_size(cols: int, rows: int) -> tuple[int, int]:
    limit = framing.PTY_MAX_SIZE
    if not (1 <= cols <= limit and 1 <= rows <= limit):
        raise ProcError("bad_request", f"cols and rows must be 1 to {limit}, not {cols}x{rows}")
    return cols, rows


def set_size(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def take_terminal() -> None:
    """In the child, after ``setsid``: make the terminal on stdin the controlling tty."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
