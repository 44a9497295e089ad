"""hostd's end of the agent channel: a hybrid-vsock socket multiplexed onto one serial port.

A VM under QEMU here has one host ↔ guest byte stream, a virtio-serial port whose host side
is QEMU's chardev socket (``serial_socket``). ``SerialMuxer`` listens on ``agent_socket`` and
answers each connection the way Cloud Hypervisor's vsock muxer does (``CONNECT <port>\\n`` →
``OK <port>\\n`` once the guest opened the stream; closed when nothing listens on the port),
then relays the connection as one stream of the channel (``contracts/channel.py``). So
``AgentClient``, ``AgentStream`` and the controller work unchanged whatever the VMM.

Flow control. Every stream has its own credit both ways (``INITIAL_WINDOW``): bytes from the
guest for a client that does not read stay queued here up to the window, and the guest stops
reading that stream's local socket; other streams go on. Memory is bounded by the windows.

Resync. QEMU's chardev takes one client at a time, so the connection is retried until it is
accepted. Every connection starts with padding and a ``HELLO`` (new nonce); everything the
guest sent before the matching ``HELLO_ACK`` is discarded. When the connection is lost, the
guest's bytes stop making sense, or the guest asks (``RESET`` on stream 0), every open stream
fails (its client connection is closed) and the channel starts over; connections made after
that work again. A guest speaking another channel version is reported once and every
``CONNECT`` then gets an ``ERR`` line instead of ``OK``: a clear error rather than a hang.

``AgentChannel`` is what a VM runtime runs beside its VMM to serve the agent socket: this
muxer, or ``VsockBridge`` (``hosts/runtime/_vsock.py``) where the VM has a vhost-vsock device.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from pathlib import Path
from typing import Protocol

import structlog

from contracts import channel as wire

log = structlog.get_logger("hosts.runtime.channel")

HANDSHAKE_TIMEOUT = 5.0
"""Seconds a client has to send its ``CONNECT`` line."""
HANDSHAKE_MAX = 64
"""Longest ``CONNECT`` line accepted."""
OPEN_TIMEOUT = 30.0
"""Seconds a ``CONNECT`` may wait for the channel to be in sync and the guest's answer."""
HELLO_RETRY = 1.0
"""Seconds between ``HELLO``s while the guest has not answered (its reader may have been
replaced before it saw the first one). Each one is sent only once the previous one left."""
RECONNECT_FIRST = 0.005
RECONNECT_MAX = 0.2
"""Backoff between attempts to connect to the serial socket, doubling up to the maximum."""
READ_CHUNK = 64 * 1024
WINDOW_STEP = wire.INITIAL_WINDOW // 4
"""Return credit once this much was handed to the client (or its queue ran dry)."""


class AgentChannel(Protocol):
    """hostd's end of a VM's agent channel: a Unix socket at ``agent_socket`` answering the
    hybrid-vsock handshake (``CONNECT <port>\\n`` → ``OK <port>\\n``, then the stream), served
    from ``start`` until ``close`` whatever carries the bytes to the guest."""

    @property
    def agent_socket(self) -> Path: ...

    async def start(self) -> None:
        """Listen on ``agent_socket`` at once; reach the guest in the background."""

    async def close(self) -> None:
        """Stop listening, drop every connection, remove the socket. Idempotent."""


async def read_connect(reader: asyncio.StreamReader) -> int | None:
    """The port of a client's ``CONNECT <port>`` line (read within ``HANDSHAKE_TIMEOUT``), or
    None when the line is malformed.

    Raises:
        TimeoutError: no line in time.
        asyncio.IncompleteReadError, asyncio.LimitOverrunError: the client closed or rambled.
    """
    async with asyncio.timeout(HANDSHAKE_TIMEOUT):
        line = await reader.readuntil(b"\n")
    words = line.split()
    if len(line) > HANDSHAKE_MAX or len(words) != 2 or words[0].upper() != b"CONNECT":
        return None
    if not words[1].isdigit() or int(words[1]) >= 2**32:
        return None
    return int(words[1])


class _VersionMismatch(Exception):
    pass


class _Stream:
    """One client connection relayed as one stream."""

    def __init__(
        self, mux: SerialMuxer, stream_id: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.mux = mux
        self.id = stream_id
        self.reader = reader
        self.writer = writer
        self.opened: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self.credit = wire.INITIAL_WINDOW  # bytes we may still send the guest
        self.allowance = wire.INITIAL_WINDOW  # bytes the guest may still send us
        self.credit_given = asyncio.Event()
        self.incoming: asyncio.Queue[bytes | None] = asyncio.Queue()  # None: the guest's CLOSE
        self.tasks: list[asyncio.Task[None]] = []

    async def relay(self) -> None:
        """Relay both ways until both directions are closed or the stream is aborted."""
        self.tasks = [asyncio.create_task(self._up()), asyncio.create_task(self._down())]
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.mux._forget(self)

    async def _up(self) -> None:
        """Client → guest, within the credit the guest gave."""
        try:
            while True:
                while self.credit <= 0:
                    self.credit_given.clear()
                    await self.credit_given.wait()
                data = await self.reader.read(min(self.credit, wire.MAX_PAYLOAD))
                if not data:
                    self.mux._send(wire.CLOSE, self.id)
                    return
                self.credit -= len(data)
                self.mux._send(wire.DATA, self.id, data)
                await self.mux._drain()
        except ConnectionError as exc:
            self.reset(f"the client connection failed: {exc}")

    async def _down(self) -> None:
        """Guest → client, returning credit as the client takes the bytes."""
        unacked = 0
        try:
            while (data := await self.incoming.get()) is not None:
                self.writer.write(data)
                await self.writer.drain()
                unacked += len(data)
                if unacked >= WINDOW_STEP or self.incoming.empty():
                    self.mux._send(wire.WINDOW, self.id, wire.U32.pack(unacked))
                    self.allowance += unacked
                    unacked = 0
            if self.writer.can_write_eof():
                self.writer.write_eof()
        except ConnectionError as exc:
            self.reset(f"the client connection failed: {exc}")

    def on_frame(self, kind: int, payload: bytes) -> None:
        if kind == wire.DATA:
            if len(payload) > self.allowance:
                self.reset("the guest sent beyond the stream's credit")
                return
            self.allowance -= len(payload)
            self.incoming.put_nowait(payload)
        elif kind == wire.WINDOW and len(payload) == wire.U32.size:
            self.credit += wire.U32.unpack(payload)[0]
            self.credit_given.set()
        elif kind == wire.CLOSE:
            self.incoming.put_nowait(None)
        elif kind == wire.RESET:
            self.fail(f"the guest reset the stream: {payload.decode('utf-8', 'replace')}")
        elif kind in (wire.OPEN_OK, wire.OPEN_FAIL) and not self.opened.done():
            self.opened.set_result(None if kind == wire.OPEN_OK else payload.decode("utf-8", "replace"))

    def reset(self, why: str) -> None:
        """Abort from this side: tell the guest, drop the client."""
        if self.mux._streams.get(self.id) is self:
            self.mux._send(wire.RESET, self.id, wire.reason(why))
        self.fail(why)

    def fail(self, why: str) -> None:
        """End the stream at once: the client's connection is closed (not flushed)."""
        if not self.opened.done():
            self.opened.set_result(why)
        for task in self.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        self.writer.transport.abort()
        self.mux._forget(self)


class SerialMuxer:
    """Serves ``agent_socket`` (hybrid-vsock handshake) over the channel on ``serial_socket``."""

    def __init__(self, serial_socket: Path, agent_socket: Path) -> None:
        self._serial_socket = serial_socket
        self._agent_socket = agent_socket
        self._server: asyncio.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._clients: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._closed = False
        self._writer: asyncio.StreamWriter | None = None
        self._reader = wire.FrameReader()
        self._nonce = b""
        self._synced = False
        self._state = asyncio.Event()  # set while synced or failed for good
        self._streams: dict[int, _Stream] = {}
        self._ids = 0
        self.error: str | None = None
        """Why the channel cannot work (the guest's channel version differs), or None."""
        self.syncs = 0
        """How many times the channel came into sync (each connection, each resync)."""

    @property
    def agent_socket(self) -> Path:
        return self._agent_socket

    async def start(self) -> None:
        """Listen on ``agent_socket`` now; connect to the serial socket in the background."""
        with contextlib.suppress(FileNotFoundError):
            self._agent_socket.unlink()
        self._server = await asyncio.start_unix_server(self._accept, sock=_listen(self._agent_socket))
        self._task = asyncio.create_task(self._run(), name=f"serial-muxer {self._serial_socket}")

    async def close(self) -> None:
        """Stop listening, fail every stream, drop the serial connection. Idempotent."""
        self._closed = True
        if self._server is not None:
            self._server.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._fail_all("the muxer was closed")
        self._state.set()  # connections waiting for the channel give up
        for writer in self._clients.values():
            writer.transport.abort()
        await asyncio.gather(*self._clients, return_exceptions=True)
        if self._writer is not None:
            self._writer.transport.abort()
        with contextlib.suppress(FileNotFoundError):
            self._agent_socket.unlink()

    # the serial connection

    async def _run(self) -> None:
        delay = RECONNECT_FIRST
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(str(self._serial_socket))
            except OSError:
                await asyncio.sleep(delay)
                delay = min(2 * delay, RECONNECT_MAX)
                continue
            delay = RECONNECT_FIRST
            self._writer = writer
            self._reader = wire.FrameReader()
            self._resync("connected")
            hello = asyncio.create_task(self._repeat_hello())
            try:
                await self._pump(reader)
                reason = "the serial connection was lost"
            except ConnectionError as exc:
                reason = f"the serial connection failed: {exc}"
            except _VersionMismatch as exc:
                self.error = str(exc)
                log.error("agent channel version mismatch", serial=str(self._serial_socket), error=self.error)
                self._fail_all(self.error)
                self._state.set()
                return
            finally:
                hello.cancel()
                writer.transport.abort()
            log.info("agent channel lost", serial=str(self._serial_socket), reason=reason)
            self._synced = False
            self._state.clear()
            self._fail_all(reason)

    async def _pump(self, reader: asyncio.StreamReader) -> None:
        while data := await reader.read(READ_CHUNK):
            self._reader.feed(data)
            while self._synced or self._hunt():
                frame = self._reader.next()
                if frame is None:
                    break
                self._on_frame(*frame)

    def _hunt(self) -> bool:
        """Skip to this session's ``HELLO_ACK``; True once it is found."""
        while self._reader.seek(self._nonce, wire.ACK_NONCE_AT):
            frame = self._reader.next()
            if frame is None:
                return False
            kind, _, payload = frame
            parsed = wire.parse_hello(payload) if kind == wire.HELLO_ACK else None
            if parsed is None or parsed[1] != self._nonce:
                continue
            if parsed[0] != wire.VERSION:
                raise _VersionMismatch(
                    f"agent channel version mismatch: guest {parsed[0]}, hostd {wire.VERSION}"
                )
            self._synced = True
            self.syncs += 1
            self._state.set()
            log.info("agent channel in sync", serial=str(self._serial_socket))
            return True
        return False

    def _resync(self, why: str) -> None:
        """Fail every stream and start a new session: padding, then a ``HELLO``."""
        self._synced = False
        self._state.clear()
        self._fail_all(f"the agent channel was reset ({why})")
        self._nonce = os.urandom(wire.NONCE_SIZE)
        self._send_hello()

    def _send_hello(self) -> None:
        assert self._writer is not None
        self._writer.write(bytes(wire.PADDING))
        self._writer.write(wire.hello(wire.HELLO, wire.VERSION, self._nonce))

    async def _repeat_hello(self) -> None:
        while True:
            await asyncio.sleep(HELLO_RETRY)
            writer = self._writer
            if not self._synced and writer is not None and not writer.transport.get_write_buffer_size():
                self._send_hello()

    def _on_frame(self, kind: int, stream_id: int, payload: bytes) -> None:
        if kind == wire.LOST or (kind == wire.RESET and stream_id == 0):
            why = (
                "unreadable bytes from the guest" if kind == wire.LOST else payload.decode("utf-8", "replace")
            )
            log.warning("agent channel out of sync", serial=str(self._serial_socket), reason=why)
            self._resync(why)
        elif (stream := self._streams.get(stream_id)) is not None:
            stream.on_frame(kind, payload)
        elif kind == wire.OPEN_OK:  # its client gave up waiting
            self._send(wire.RESET, stream_id, wire.reason("the client is gone"))
        elif kind == wire.OPEN:  # streams are the host's to open
            self._send(wire.RESET, stream_id, wire.reason("the host opens streams"))

    def _send(self, kind: int, stream_id: int, payload: bytes = b"") -> None:
        if self._synced and self._writer is not None:
            self._writer.write(wire.encode(kind, stream_id, payload))

    async def _drain(self) -> None:
        if self._writer is not None:
            await self._writer.drain()

    def _forget(self, stream: _Stream) -> None:
        if self._streams.get(stream.id) is stream:
            del self._streams[stream.id]

    def _fail_all(self, why: str) -> None:
        for stream in list(self._streams.values()):
            stream.fail(why)

    # clients on the agent socket

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients[task] = writer
        try:
            await self._serve_client(reader, writer)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            del self._clients[task]
            writer.close()  # after what was written is out; a failed stream aborted already

    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        port = await read_connect(reader)
        if port is None:
            return
        stream = await self._open(port, reader, writer)
        if stream is None:
            return
        writer.write(b"OK %d\n" % port)
        await stream.relay()

    async def _open(
        self, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> _Stream | None:
        """Wait for the channel, open a stream to ``port``; None (after an ``ERR`` line when
        the channel cannot work) if the guest refused or the channel was reset meanwhile."""
        async with asyncio.timeout(OPEN_TIMEOUT):
            while not self._synced and self.error is None and not self._closed:
                await self._state.wait()
        if self._closed:
            return None
        if self.error is not None:
            writer.write(f"ERR {self.error}\n".encode())
            await writer.drain()
            return None
        self._ids += 1
        stream = _Stream(self, self._ids, reader, writer)
        self._streams[stream.id] = stream
        self._send(wire.OPEN, stream.id, wire.U32.pack(port))
        try:
            async with asyncio.timeout(OPEN_TIMEOUT):
                refusal = await stream.opened
        except BaseException:
            stream.reset("the client gave up")
            raise
        if refusal is not None:
            log.debug("agent channel open refused", port=port, reason=refusal)
            self._forget(stream)
            return None
        return stream


_SUN_PATH_MAX = 107
"""A Unix socket's address holds at most 107 bytes of path."""


def _listen(path: Path) -> socket.socket:
    """A socket listening on ``path`` (mode 0600), bound through ``/proc/self/fd`` when the
    path is longer than a socket address holds (a run directory deep in a test's tree)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if len(os.fsencode(path)) <= _SUN_PATH_MAX:
            sock.bind(str(path))
        else:
            fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
            try:
                sock.bind(f"/proc/self/fd/{fd}/{path.name}")
            finally:
                os.close(fd)
        os.chmod(path, 0o600)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock
