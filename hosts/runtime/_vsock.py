"""hostd's end of the agent channel over vhost-vsock: the agent socket bridged to AF_VSOCK.

Where the kernel offers vhost-vsock (``/dev/vhost-vsock``), QEMU gives the VM a
``vhost-vsock-device`` with a guest CID of its own, and hostd reaches the guest's vsock ports
directly: one AF_VSOCK connection per stream, flow control and half-close done by the kernel.
No multiplexing is needed, so ``VsockBridge`` is small: it serves the same hybrid-vsock Unix
socket ``SerialMuxer`` serves (``CONNECT <port>\\n`` → ``OK <port>\\n``, as Cloud Hypervisor's
vsock muxer answers), and relays each connection to ``(cid, port)``. ``AgentClient``, the
controller and ``hosts/vm/control.py`` see no difference between the transports.

As under Cloud Hypervisor, ``OK`` means the guest's kernel accepted the vsock connection
(vminit listens on ports 52 and 53 with ``guest/channel.py``'s ``serve_vsock``); a connection
nobody listens for, or a guest that is not up yet, is closed without a line, which
``wait_ready`` retries. A hostd restart, or a memory snapshot loaded into a new QEMU (whose
vhost-vsock device resets the guest's transport and may give it a new CID), just drops the
connections of the moment; the listeners in the guest stay, and the next ``CONNECT`` works.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
import structlog

from hosts.runtime._channel import _listen, read_connect

log = structlog.get_logger("hosts.runtime.vsock")

VHOST_VSOCK = Path("/dev/vhost-vsock")
CONNECT_TIMEOUT = 10.0
"""Seconds a connection to the guest may take (the kernel's own limit is 2 s by default)."""
READ_CHUNK = 64 * 1024

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Connect = Callable[[int], Awaitable[Streams]]
"""Opens a connection to the guest's ``port``; raises ``OSError`` when the guest refuses."""


class VsockProbe(msgspec.Struct, frozen=True):
    usable: bool
    reason: str
    """Why, in words for the start-up log."""


def probe_vhost_vsock(dev: Path = VHOST_VSOCK) -> VsockProbe:
    """Can QEMU give a VM a vhost-vsock device here, and can hostd reach it? ``dev`` must be a
    character device this process opens read-write (QEMU runs as hostd's user), and AF_VSOCK
    sockets must exist. Opening the device creates nothing lasting (a vhost instance that the
    close drops); no connection is tried, since one to a guest that does not exist would only
    time out."""
    try:
        fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return VsockProbe(False, f"{dev} does not exist (the vhost_vsock module is not loaded)")
    except OSError as exc:
        return VsockProbe(False, f"{dev} cannot be opened read-write: {exc.strerror}")
    try:
        if not stat.S_ISCHR(os.fstat(fd).st_mode):
            return VsockProbe(False, f"{dev} is not a character device")
    finally:
        os.close(fd)
    try:
        socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM).close()
    except (AttributeError, OSError) as exc:
        return VsockProbe(False, f"AF_VSOCK sockets are not available: {exc}")
    return VsockProbe(True, f"{dev} is usable")


def vsock_connector(cid: int) -> Connect:
    """Connections to the guest with CID ``cid`` over AF_VSOCK."""

    async def connect(port: int) -> Streams:
        sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, (cid, port))
            return await asyncio.open_connection(sock=sock, limit=READ_CHUNK)
        except BaseException:
            sock.close()
            raise

    return connect


class VsockBridge:
    """Serves ``agent_socket`` (hybrid-vsock handshake) by connecting to the guest's vsock
    ports; ``connect`` replaces AF_VSOCK (tests put a stand-in of the guest's listeners there)."""

    def __init__(self, cid: int, agent_socket: Path, *, connect: Connect | None = None) -> None:
        self.cid = cid
        self._agent_socket = agent_socket
        self._connect = connect or vsock_connector(cid)
        self._server: asyncio.Server | None = None
        self._clients: dict[asyncio.Task[None], list[asyncio.StreamWriter]] = {}
        self._closed = False

    @property
    def agent_socket(self) -> Path:
        return self._agent_socket

    async def start(self) -> None:
        """Listen on ``agent_socket`` (mode 0600). Nothing to reach beforehand: every
        connection reaches the guest on its own."""
        with contextlib.suppress(FileNotFoundError):
            self._agent_socket.unlink()
        self._server = await asyncio.start_unix_server(self._accept, sock=_listen(self._agent_socket))

    async def close(self) -> None:
        """Stop listening, cut every connection (both ends), remove the socket. Idempotent."""
        self._closed = True
        if self._server is not None:
            self._server.close()
        for writers in self._clients.values():
            for writer in writers:
                writer.transport.abort()
        await asyncio.gather(*self._clients, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            self._agent_socket.unlink()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        writers = [writer]
        self._clients[task] = writers
        try:
            if not self._closed:
                await self._serve(reader, writer, writers)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            del self._clients[task]
            for each in writers:
                each.close()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, writers: list[asyncio.StreamWriter]
    ) -> None:
        port = await read_connect(reader)
        if port is None:
            return
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                guest_reader, guest_writer = await self._connect(port)
        except (OSError, TimeoutError) as exc:
            log.debug("vsock connection refused", cid=self.cid, port=port, error=str(exc))
            return  # closed without an OK, as Cloud Hypervisor's muxer does
        writers.append(guest_writer)
        if self._closed:
            return
        writer.write(b"OK %d\n" % port)
        await asyncio.gather(_pump(reader, guest_writer, writer), _pump(guest_reader, writer, guest_writer))


async def _pump(
    source: asyncio.StreamReader, sink: asyncio.StreamWriter, other: asyncio.StreamWriter
) -> None:
    """Copy ``source`` to ``sink`` and pass its end on as a half-close. A failure on either
    side aborts both connections (``other`` is ``source``'s own writer), ending the other pump."""
    try:
        while data := await source.read(READ_CHUNK):
            sink.write(data)
            await sink.drain()
        if sink.can_write_eof():
            sink.write_eof()
    except OSError:
        sink.transport.abort()
        other.transport.abort()
