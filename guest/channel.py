"""The guest's end of the agent channel: one byte stream demultiplexed into local connections.

Run by vminit (root, PID 1 of the VM) on the virtio-serial port ``/dev/vport0p1``
(``serve_port``), or on AF_VSOCK under Cloud Hypervisor (``serve_vsock``, where the VMM's
muxer already made one vsock connection per stream). The wire format and why it is shaped so
are in ``guest/channel_wire.py`` (a byte-for-byte copy of ``contracts/channel.py``); the
story is in docs/runtimes.md, "Agent channel".

Each stream the host opens for a port is relayed to that port's *target*, a callable that
returns a connected socket: ``agent_target`` connects to the agent's Unix socket and does the
agent's ``CONNECT`` handshake on the host's behalf (the agent runs unchanged, as the sandbox
user); ``in_process`` runs a handler of vminit's in a thread on one end of a socket pair.
Targets are called in a thread of their own, so a slow one never holds up the port.

One thread (``Demux.run``) moves every byte: the port and every stream's socket are
non-blocking, and a stream's socket is read only while the host has given credit for it and
the port's queue is short, so a stalled reader on the host stalls only its own stream, and
memory stays bounded by the streams' windows.

virtio-serial semantics. The port can be opened once. While no host is connected a read
returns 0 (EOF) and a write would block; a host may connect at any moment, and after a memory
snapshot is restored the guest resumes with whatever it was in the middle of. So EOF here
means "host gone": every stream is dropped and the port is polled until a host is back, which
then starts with padding and a ``HELLO`` that the reader finds whatever state it was in.
"""

from __future__ import annotations

import collections
import contextlib
import os
import selectors
import socket
import sys
import threading
import time

from guest import channel_wire as wire

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    Target = Callable[[], socket.socket]

AGENT_SOCKET = "/run/dnah/agent.sock"
AGENT_PORT = 52
"""The agent's port (``contracts.guest.AGENT_PORT``), answered by the agent itself."""
READ_CHUNK = 64 * 1024
QUEUE_HIGH = 1024 * 1024
"""Stop reading the streams' sockets while this many bytes wait for the port."""
WINDOW_STEP = wire.INITIAL_WINDOW // 4
"""Return credit once this much was handed on (or the stream's queue ran dry)."""
ABSENT_POLL = 0.05
"""Seconds between reads of a port whose host is gone (the port reports EOF continuously)."""
REOPEN_DELAY = 0.5
"""Seconds between attempts to open the port device (missing, or still held)."""
HANDSHAKE_TIMEOUT = 5.0
"""Seconds a target may take to connect and answer the agent handshake."""
LISTEN_BACKLOG = 128

_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


def log(message: str) -> None:
    print(f"dnah-channel: {message}", file=sys.stderr, flush=True)


# Targets --------------------------------------------------------------------------------------


def agent_target(path: str = AGENT_SOCKET, port: int = AGENT_PORT) -> Target:
    """A target that connects to the agent's Unix socket and does its ``CONNECT`` handshake,
    so the stream carries frames from its first byte, as on Cloud Hypervisor's vsock."""

    def connect() -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(HANDSHAKE_TIMEOUT)
            sock.connect(path)
            sock.sendall(b"CONNECT %d\n" % port)
            line = bytearray()
            while not line.endswith(b"\n") and len(line) < 64:
                byte = sock.recv(1)
                if not byte:
                    raise ConnectionError("the agent closed the connection during the handshake")
                line += byte
            if line.split() != [b"OK", b"%d" % port]:
                raise ConnectionError(f"the agent answered the handshake with {bytes(line[:64])!r}")
        except BaseException:
            sock.close()
            raise
        return sock

    return connect


def in_process(handler: Callable[[socket.socket], None]) -> Target:
    """A target served by ``handler(sock)`` in a thread of its own (vminit's control port);
    the socket is closed when the handler returns."""

    def start() -> socket.socket:
        ours, theirs = socket.socketpair()
        threading.Thread(target=_handle, args=(handler, theirs), daemon=True).start()
        return ours

    return start


def _handle(handler: Callable[[socket.socket], None], sock: socket.socket) -> None:
    try:
        handler(sock)
    except Exception as exc:  # a handler's bug ends its stream, never the channel
        log(f"handler failed: {exc!r}")
    finally:
        sock.close()


# Serving --------------------------------------------------------------------------------------


def serve_port(path: str, targets: Mapping[int, Target]) -> None:
    """Serve the channel on the virtio-serial port at ``path`` forever: open it (retrying
    while it is missing or busy), and reopen it after an I/O error."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            log(f"cannot open {path}: {exc}")
            time.sleep(REOPEN_DELAY)
            continue
        try:
            Demux(targets).run(fd, eof_means_absent=True)
        except OSError as exc:
            log(f"{path} failed: {exc}; reopening")
        finally:
            os.close(fd)
        time.sleep(REOPEN_DELAY)


def serve_socket(sock: socket.socket, targets: Mapping[int, Target]) -> None:
    """Serve the channel on a connected stream socket until it ends (tests play the
    serial port's host side through one)."""
    Demux(targets).run(sock.fileno(), eof_means_absent=False)


def serve_vsock(port: int, target: Target) -> None:
    """Relay every AF_VSOCK connection to ``port`` to a fresh ``target()`` (Cloud Hypervisor:
    its muxer answered the host's ``CONNECT``, so each connection is one stream)."""
    listener = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    listener.bind((socket.VMADDR_CID_ANY, port))
    listener.listen(LISTEN_BACKLOG)
    serve_listener(listener, target)


def serve_listener(listener: socket.socket, target: Target) -> None:
    """Accept connections on ``listener`` forever, relaying each to a fresh ``target()``."""
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_relay, args=(conn, target), daemon=True).start()


def _relay(conn: socket.socket, target: Target) -> None:
    """Copy bytes both ways between ``conn`` and a new target connection, passing on each
    half-close; the transport's own flow control paces each direction."""
    try:
        local = target()
    except OSError as exc:
        log(f"target refused a vsock connection: {exc}")
        conn.close()
        return
    local.settimeout(None)
    back = threading.Thread(target=_copy, args=(local, conn), daemon=True)
    back.start()
    _copy(conn, local)
    back.join()
    conn.close()
    local.close()


def _copy(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(READ_CHUNK):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:  # either end is gone: tear down both directions
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


# The demultiplexer ----------------------------------------------------------------------------


class _Stream:
    """One stream's state on the guest side."""

    __slots__ = (
        "allowance",
        "closed_local",
        "closed_remote",
        "credit",
        "id",
        "pending",
        "shut",
        "sock",
        "unacked",
    )

    def __init__(self, stream_id: int, sock: socket.socket) -> None:
        self.id = stream_id
        self.sock = sock
        self.credit = wire.INITIAL_WINDOW  # bytes we may still send the host
        self.allowance = wire.INITIAL_WINDOW  # bytes the host may still send us
        self.unacked = 0  # bytes handed on whose credit is not yet returned
        self.pending: collections.deque[memoryview] = collections.deque()  # host bytes for the socket
        self.closed_local = False  # our socket hit EOF and CLOSE went out
        self.closed_remote = False  # the host sent CLOSE
        self.shut = False  # our socket's write side is shut down


class Demux:
    """The guest end of one channel: hunts for the host's ``HELLO``, then serves streams."""

    def __init__(self, targets: Mapping[int, Target]) -> None:
        self._targets = dict(targets)
        self._reader = wire.FrameReader()
        self._out: collections.deque[bytes] = collections.deque()  # whole frames for the port
        self._out_sent = 0  # bytes of the first frame already written
        self._out_size = 0
        self._streams: dict[int, _Stream] = {}
        self._opening: set[int] = set()
        self._generation = 0  # bumped by every HELLO: an opener of an older one is stale
        self._opened: collections.deque[tuple[int, int, socket.socket | BaseException]] = collections.deque()
        self._synced = False
        self._asked = False  # sent the host a RESET on stream 0 since losing sync
        self._absent = False
        self._selector = selectors.DefaultSelector()
        self._events: dict[int, int] = {}
        self._wake_read, self._wake_write = os.pipe()
        self._wake_lock = threading.Lock()  # openers never write to a closed (reused) descriptor

    def run(self, fd: int, *, eof_means_absent: bool) -> None:
        """Serve the channel on ``fd`` until EOF (``eof_means_absent`` false) or an I/O error;
        with ``eof_means_absent`` an EOF means the host is gone, and the port is polled."""
        os.set_blocking(fd, False)
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._selector.register(self._wake_read, selectors.EVENT_READ)
        self._fd = fd
        # Zero bytes and a RESET on stream 0: a host that thinks it is in sync with an earlier
        # run of the channel loses it on the zeros and starts over.
        self._queue(bytes(wire.PADDING))
        self._send(wire.RESET, 0, wire.reason("the guest channel started"))
        try:
            while True:
                self._update_interest()
                ready = self._selector.select(ABSENT_POLL if self._absent else None)
                if self._absent:
                    self._probe(fd)
                for key, mask in ready:
                    if key.fd == fd:
                        data: bytes | None
                        if mask & selectors.EVENT_WRITE and self._out and not self._write_port(fd):
                            data = b""
                        elif mask & selectors.EVENT_READ:
                            data = self._read_port(fd)
                        else:
                            continue
                        if data == b"":  # the host is gone
                            if not eof_means_absent:
                                return
                            self._host_gone()
                    elif key.fd == self._wake_read:
                        self._collect_openers()
                    elif isinstance(key.data, _Stream) and self._streams.get(key.data.id) is key.data:
                        self._serve_stream(key.data, mask)
        finally:
            self._drop_streams()
            self._selector.close()
            with self._wake_lock:
                os.close(self._wake_read)
                os.close(self._wake_write)
                self._wake_read = self._wake_write = -1

    # the port

    def _read_port(self, fd: int) -> bytes | None:
        """Read and handle what the host sent: the bytes, b"" at EOF, None if none yet."""
        try:
            data = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return None
        except _GONE:
            return b""
        if data:
            self._reader.feed(data)
            self._handle_frames()
        return data

    def _probe(self, fd: int) -> None:
        """While the host is gone: notice when it is back (a read no longer returns EOF)."""
        if self._read_port(fd) != b"":
            self._absent = False
            log("host connected")

    def _host_gone(self) -> None:
        log("host disconnected; dropping every stream")
        self._absent = True
        self._drop_streams()
        self._out.clear()
        self._out_sent = self._out_size = 0
        self._reader = wire.FrameReader()
        self._synced = False
        self._asked = True  # the next host starts with HELLO anyway

    def _write_port(self, fd: int) -> bool:
        """Write as much of the queue as the port takes; False if the host is gone."""
        chunks: list[bytes | memoryview] = [memoryview(self._out[0])[self._out_sent :]]
        chunks += [self._out[i] for i in range(1, min(len(self._out), 64))]
        try:
            written = os.writev(fd, chunks)
        except BlockingIOError:
            return True
        except _GONE:
            return False
        self._out_size -= written
        while written:
            left = len(self._out[0]) - self._out_sent
            if written < left:
                self._out_sent += written
                break
            written -= left
            self._out.popleft()
            self._out_sent = 0
        return True

    def _queue(self, data: bytes) -> None:
        if not self._absent:
            self._out.append(data)
            self._out_size += len(data)

    def _send(self, kind: int, stream: int, payload: bytes = b"") -> None:
        self._queue(wire.encode(kind, stream, payload))

    # frames from the host

    def _handle_frames(self) -> None:
        while (frame := self._reader.next()) is not None:
            kind, stream_id, payload = frame
            if kind == wire.HELLO:
                self._hello(payload)
            elif kind == wire.LOST:
                self._synced = False
                self._asked = False
            elif not self._synced:
                if not self._asked:  # the host believes we are in sync: ask for a HELLO
                    self._send(wire.RESET, 0, wire.reason("the guest lost sync"))
                    self._asked = True
            elif kind == wire.OPEN:
                self._open(stream_id, payload)
            elif (stream := self._streams.get(stream_id)) is not None:
                self._stream_frame(stream, kind, payload)
            elif kind == wire.RESET:
                self._opening.discard(stream_id)

    def _hello(self, payload: bytes) -> None:
        parsed = wire.parse_hello(payload)
        if parsed is None:
            return
        version, nonce = parsed
        self._drop_streams()
        # Keep the rest of a frame the port took only part of, so the host's reader stays
        # aligned; whatever else was queued belonged to the old session.
        first = self._out[0] if self._out and self._out_sent else None
        self._out.clear()
        self._out_size = 0
        if first is not None:
            self._out.append(first)
            self._out_size = len(first) - self._out_sent
        else:
            self._out_sent = 0
        self._queue(wire.hello(wire.HELLO_ACK, wire.VERSION, nonce))
        self._synced = version == wire.VERSION
        self._asked = True
        if self._synced:
            log("in sync with the host")
        else:
            log(f"the host speaks channel version {version}, this guest {wire.VERSION}")

    def _open(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != wire.U32.size or stream_id == 0:
            self._send(wire.OPEN_FAIL, stream_id, wire.reason("malformed OPEN"))
            return
        (port,) = wire.U32.unpack(payload)
        target = self._targets.get(port)
        if target is None:
            self._send(wire.OPEN_FAIL, stream_id, wire.reason(f"nothing listens on port {port}"))
            return
        if stream_id in self._streams or stream_id in self._opening:
            self._send(wire.OPEN_FAIL, stream_id, wire.reason(f"stream {stream_id} is in use"))
            return
        self._opening.add(stream_id)
        args = (self._generation, stream_id, target)
        threading.Thread(target=self._call_target, args=args, daemon=True).start()

    def _call_target(self, generation: int, stream_id: int, target: Target) -> None:
        """In an opener thread: connect the target, hand the result to the loop."""
        result: socket.socket | BaseException
        try:
            result = target()
        except Exception as exc:
            result = exc
        self._opened.append((generation, stream_id, result))
        with self._wake_lock, contextlib.suppress(OSError):  # a full pipe wakes the loop anyway
            if self._wake_write >= 0:
                os.write(self._wake_write, b"x")
                return
        if not isinstance(result, BaseException):  # the loop is over
            result.close()

    def _collect_openers(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_read, 4096)
        while self._opened:
            generation, stream_id, result = self._opened.popleft()
            current = generation == self._generation and stream_id in self._opening
            self._opening.discard(stream_id)
            if isinstance(result, BaseException):
                if current:
                    self._send(wire.OPEN_FAIL, stream_id, wire.reason(str(result) or repr(result)))
                continue
            if not current:  # reset, or the host started over, while the target connected
                result.close()
                continue
            result.setblocking(False)
            self._streams[stream_id] = _Stream(stream_id, result)
            self._send(wire.OPEN_OK, stream_id)

    def _stream_frame(self, stream: _Stream, kind: int, payload: bytes) -> None:
        if kind == wire.DATA:
            if stream.closed_remote or len(payload) > stream.allowance:
                self._reset(stream, "data beyond the stream's credit or after its CLOSE")
                return
            stream.allowance -= len(payload)
            stream.pending.append(memoryview(payload))
            self._flush_stream(stream)
        elif kind == wire.WINDOW and len(payload) == wire.U32.size:
            stream.credit += wire.U32.unpack(payload)[0]
        elif kind == wire.CLOSE:
            stream.closed_remote = True
            self._flush_stream(stream)
        elif kind == wire.RESET:
            self._forget(stream)

    # the streams' sockets

    def _serve_stream(self, stream: _Stream, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self._flush_stream(stream)
        if mask & selectors.EVENT_READ and stream.id in self._streams:
            self._read_stream(stream)

    def _read_stream(self, stream: _Stream) -> None:
        if stream.credit <= 0:
            return
        try:
            data = stream.sock.recv(min(stream.credit, wire.MAX_PAYLOAD))
        except BlockingIOError:
            return
        except OSError as exc:
            self._reset(stream, f"the local socket failed: {exc}")
            return
        if not data:
            stream.closed_local = True
            self._send(wire.CLOSE, stream.id)
            self._finish_if_done(stream)
            return
        stream.credit -= len(data)
        self._send(wire.DATA, stream.id, data)

    def _flush_stream(self, stream: _Stream) -> None:
        """Hand the host's bytes on to the socket as far as it takes them, return credit,
        and pass a CLOSE on once everything before it is out."""
        handed = 0
        try:
            while stream.pending:
                chunk = stream.pending[0]
                sent = stream.sock.send(chunk)
                handed += sent
                if sent < len(chunk):
                    stream.pending[0] = chunk[sent:]
                    break
                stream.pending.popleft()
        except BlockingIOError:
            pass
        except OSError as exc:
            self._reset(stream, f"the local socket failed: {exc}")
            return
        stream.unacked += handed
        if stream.unacked and (stream.unacked >= WINDOW_STEP or not stream.pending):
            self._send(wire.WINDOW, stream.id, wire.U32.pack(stream.unacked))
            stream.allowance += stream.unacked
            stream.unacked = 0
        if stream.closed_remote and not stream.pending and not stream.shut:
            stream.shut = True
            with contextlib.suppress(OSError):
                stream.sock.shutdown(socket.SHUT_WR)
            self._finish_if_done(stream)

    def _finish_if_done(self, stream: _Stream) -> None:
        if stream.closed_local and stream.shut:
            self._forget(stream)

    def _reset(self, stream: _Stream, why: str) -> None:
        self._send(wire.RESET, stream.id, wire.reason(why))
        self._forget(stream)

    def _forget(self, stream: _Stream) -> None:
        del self._streams[stream.id]
        fd = stream.sock.fileno()
        if self._events.pop(fd, 0):
            self._selector.unregister(fd)
        stream.sock.close()

    def _drop_streams(self) -> None:
        for stream in list(self._streams.values()):
            self._forget(stream)
        self._opening.clear()
        self._generation += 1

    def _update_interest(self) -> None:
        """Register for exactly what each socket can make progress on now."""
        port = 0 if self._absent else selectors.EVENT_READ | (selectors.EVENT_WRITE if self._out else 0)
        self._want(self._fd, port, None)
        room = self._out_size < QUEUE_HIGH
        for stream in self._streams.values():
            events = selectors.EVENT_WRITE if stream.pending else 0
            if room and stream.credit > 0 and not stream.closed_local:
                events |= selectors.EVENT_READ
            self._want(stream.sock.fileno(), events, stream)

    def _want(self, fd: int, events: int, data: _Stream | None) -> None:
        current = self._events.get(fd, 0)
        if events == current:
            return
        if not events:
            self._selector.unregister(fd)
            del self._events[fd]
        elif not current:
            self._selector.register(fd, events, data)
            self._events[fd] = events
        else:
            self._selector.modify(fd, events, data)
            self._events[fd] = events
