"""The agent channel end to end, without a VM: hostd's ``SerialMuxer`` ↔ a stand-in for QEMU's
chardev socket ↔ the guest's ``Demux`` (a ``python3 -S`` subprocess, as in the VM) ↔ the real
agent (``python3 -S -m guest.agent``), driven through ``AgentClient`` and ``AgentStream``.

``Chardev`` plays QEMU's side of the virtio-serial port: one host connection at a time on the
serial socket, its bytes relayed to the guest's end of a socket pair. A host that goes away
is not reported to the guest, the hardest case for the channel: it is what the guest sees
when a memory snapshot is restored (it resumes in the middle of whatever it was reading), so
the next host's bytes simply follow the old ones. ``cut`` drops the host connection after an
exact number of bytes in one direction, losing whatever was in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from contracts import guest
from hosts.agent_client import AgentClient, wait_ready
from hosts.agent_stream import AgentStream
from hosts.errors import AgentUnavailable
from hosts.runtime._channel import SerialMuxer
from tests.support import await_for

REPO = Path(__file__).resolve().parents[3]
ENV = {"PYTHONPATH": str(REPO)}
MiB = 1024 * 1024

GUEST = """
import socket, sys
from guest import channel

def upper(sock):
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.sendall(data.upper())

def firehose(sock):
    block = b"x" * 65536
    while True:
        sock.sendall(block)

if len(sys.argv) > 3:
    channel.wire.VERSION = int(sys.argv[3])
targets = {
    52: channel.agent_target(sys.argv[2]),
    53: channel.in_process(upper),
    54: channel.in_process(firehose),
}
channel.serve_socket(socket.socket(fileno=int(sys.argv[1])), targets)
"""
"""The guest's side: the agent on 52, an upper-casing handler on 53 (reads to EOF, answers,
closes: half-close both ways) and a handler on 54 that writes until its stream is gone."""


class Chardev:
    """QEMU's chardev socket server and the virtio-serial port behind it, played in-process."""

    def __init__(self, path: Path, guest_end: socket.socket) -> None:
        self.path = path
        self._guest_end = guest_end
        self._lock = asyncio.Lock()
        self._cut: tuple[str, int] | None = None
        self._host: asyncio.StreamWriter | None = None
        self.hosts = 0
        self._serving: set[asyncio.Task[None]] = set()
        self.passed = {"h2g": 0, "g2h": 0}

    async def start(self) -> None:
        self._g_reader, self._g_writer = await asyncio.open_unix_connection(sock=self._guest_end)
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))

    async def close(self) -> None:
        self._server.close()
        if self._host is not None:
            self._host.transport.abort()
        self._g_writer.transport.abort()
        await asyncio.gather(*self._serving, return_exceptions=True)

    def cut(self, direction: str, after: int) -> None:
        """Drop the host connection once ``after`` more bytes passed in ``direction``."""
        self._cut = (direction, after)

    async def inject(self, direction: str, data: bytes) -> None:
        """Put ``data`` on the wire as if it came from the other end."""
        if direction == "h2g":
            self._g_writer.write(data)
            await self._g_writer.drain()
        else:
            assert self._host is not None
            self._host.write(data)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._serving.add(task)
        async with self._lock:  # QEMU serves one chardev client at a time
            self.hosts += 1
            self._host = writer
            tasks = [
                asyncio.create_task(self._pump(reader, self._g_writer, "h2g")),
                asyncio.create_task(self._pump(self._g_reader, writer, "g2h")),
            ]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._host = None
            writer.transport.abort()
        self._serving.discard(task)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, direction: str) -> None:
        while data := await source.read(65536):
            if self._cut is not None and self._cut[0] == direction:
                left = self._cut[1]
                if len(data) >= left:
                    self._cut = None
                    sink.write(data[:left])
                    self.passed[direction] += left
                    return  # the rest of the chunk was in flight: lost
                self._cut = (direction, left - len(data))
            sink.write(data)
            self.passed[direction] += len(data)
            await sink.drain()


@dataclass
class Rig:
    workdir: Path
    chardev: Chardev
    muxer: SerialMuxer
    guest: subprocess.Popen[bytes]

    @property
    def socket(self) -> Path:
        return self.workdir / "mux.sock"

    async def client(self) -> AgentClient:
        return await wait_ready(self.socket, timeout=30)

    async def connect(self, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
        """A raw connection after the handshake line; returns the reply line too."""
        reader, writer = await asyncio.open_unix_connection(str(self.socket))
        writer.write(b"CONNECT %d\n" % port)
        line = await asyncio.wait_for(reader.readline(), 30)
        return reader, writer, line

    async def resynced(self, before: int) -> None:
        """Wait until the muxer came into sync again after ``before`` syncs."""
        await await_for(lambda: _true(self.muxer.syncs > before), what="the channel to resync")


async def _true(value: bool) -> bool:
    return value


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="dnah-chan-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def agent(workdir: Path) -> Iterator[Path]:
    socket_path = workdir / "agent.sock"
    argv = [sys.executable, "-S", "-m", "guest.agent", "--uds", str(socket_path)]
    process = subprocess.Popen(argv, env=ENV, cwd=workdir, start_new_session=True, stderr=subprocess.DEVNULL)
    yield socket_path
    _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.asynccontextmanager
async def rig_for(workdir: Path, agent: Path, *guest_args: str) -> AsyncIterator[Rig]:
    host_end, guest_end = socket.socketpair()
    argv = [sys.executable, "-S", "-c", GUEST, str(guest_end.fileno()), str(agent), *guest_args]
    process = subprocess.Popen(argv, env=ENV, pass_fds=(guest_end.fileno(),), stderr=subprocess.DEVNULL)
    guest_end.close()
    chardev = Chardev(workdir / "serial.sock", host_end)
    muxer = SerialMuxer(chardev.path, workdir / "mux.sock")
    try:
        await muxer.start()  # before the chardev listens: the muxer retries
        await chardev.start()
        yield Rig(workdir, chardev, muxer, process)
    finally:
        await muxer.close()
        await chardev.close()
        _stop(process)


@pytest.fixture
async def rig(workdir: Path, agent: Path) -> AsyncIterator[Rig]:
    async with rig_for(workdir, agent) as rig:
        yield rig


# the basics ----------------------------------------------------------------------------------


async def test_ping_and_exec_through_the_channel(rig: Rig) -> None:
    client = await rig.client()
    try:
        assert (await client.ping()).version == guest.PROTOCOL_VERSION
        result = await client.exec(["sh", "-c", "echo out; echo err >&2; exit 3"])
        assert (result.stdout, result.stderr, result.exit_code) == ("out\n", "err\n", 3)
    finally:
        await client.close()
    assert rig.muxer.error is None
    assert oct(rig.socket.stat().st_mode & 0o777) == "0o600"


async def test_half_close_reaches_the_target_and_comes_back(rig: Rig) -> None:
    await (await rig.client()).close()
    reader, writer, line = await rig.connect(53)
    assert line == b"OK 53\n"
    writer.write(b"hello ")
    writer.write(b"channel")
    writer.write_eof()  # the handler reads to EOF before it answers
    assert await asyncio.wait_for(reader.read(), 30) == b"HELLO CHANNEL"  # read() returns at EOF
    writer.close()


async def test_a_port_nobody_serves_closes_the_connection(rig: Rig) -> None:
    await (await rig.client()).close()
    _, writer, line = await rig.connect(99)
    assert line == b""  # closed without an OK, as Cloud Hypervisor's muxer does
    writer.close()
    _, writer, line = await rig.connect(52)  # and the channel carries on
    assert line == b"OK 52\n"
    writer.close()


async def test_a_malformed_handshake_is_closed(rig: Rig) -> None:
    reader, writer = await asyncio.open_unix_connection(str(rig.socket))
    writer.write(b"HELLO there\n")
    assert await asyncio.wait_for(reader.read(), 30) == b""
    writer.close()


# concurrency and flow control ----------------------------------------------------------------


async def _upload(socket_path: Path, path: Path, data: bytes) -> guest.StreamReply:
    stream, first = await AgentStream.open(socket_path, guest.FsWrite(id=1, path=str(path)))
    assert isinstance(first, guest.FsReady), first
    try:
        await stream.send(data)
        await stream.end()
        return await stream.read()  # type: ignore[return-value]
    finally:
        await stream.close()


async def _download(socket_path: Path, path: Path) -> bytes:
    stream, first = await AgentStream.open(socket_path, guest.FsRead(id=1, path=str(path)))
    assert isinstance(first, guest.FsReading), first
    chunks = []
    try:
        while chunk := await stream.read():
            assert isinstance(chunk, bytes)
            chunks.append(chunk)
    finally:
        await stream.close()
    return b"".join(chunks)


async def test_transfers_and_pings_go_on_beside_a_stalled_reader(rig: Rig) -> None:
    client = await rig.client()
    up_data = random.Random(1).randbytes(10 * MiB)
    down_data = random.Random(2).randbytes(10 * MiB)
    (rig.workdir / "down.bin").write_bytes(down_data)
    # a stream whose client never reads: the guest's handler writes as fast as it can
    stalled_reader, stalled_writer, line = await rig.connect(54)
    assert line == b"OK 54\n"
    try:
        upload = asyncio.create_task(_upload(rig.socket, rig.workdir / "up.bin", up_data))
        download = asyncio.create_task(_download(rig.socket, rig.workdir / "down.bin"))
        pings = 0
        while not (upload.done() and download.done()):
            await client.ping(timeout=30)
            pings += 1
        written = await upload
        assert isinstance(written, guest.FsWritten) and written.size == len(up_data)
        assert (
            hashlib.sha256((rig.workdir / "up.bin").read_bytes()).digest() == hashlib.sha256(up_data).digest()
        )
        assert await download == down_data
        assert pings > 0
        # the stalled stream was only paused: its bytes flow as soon as its client reads
        assert len(await asyncio.wait_for(stalled_reader.readexactly(4 * MiB), 60)) == 4 * MiB
    finally:
        stalled_writer.close()
        await client.close()
    assert rig.muxer.syncs == 1  # no resync was needed for any of it


async def test_an_aborted_stream_leaves_the_channel_working(rig: Rig) -> None:
    stream, first = await AgentStream.open(rig.socket, guest.FsWrite(id=1, path=str(rig.workdir / "x")))
    assert isinstance(first, guest.FsReady)
    await stream.send(b"y" * MiB)
    await stream.close()  # abort: the agent drops the upload
    client = await rig.client()
    try:
        await client.ping()
        listing = await client.exec(["ls", "-a", str(rig.workdir)])
        assert "x" not in listing.stdout.split()
    finally:
        await client.close()


# reconnects and garbage -------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
async def test_a_host_cut_at_any_offset_fails_open_streams_and_the_next_connection_works(
    rig: Rig, seed: int
) -> None:
    chance = random.Random(seed)
    client = await rig.client()
    direction = ("h2g", "g2h")[seed % 2]
    syncs = rig.muxer.syncs
    # The upload's stream is open before the cut is armed (armed first, pings alone could
    # reach it before the stream opened, and the stream then opened on the next connection:
    # the test failed under busy cores). Then cut somewhere inside its traffic: mid-header,
    # mid-payload, mid-WINDOW. Guest to host, the 8 MiB upload makes the guest send at least
    # 32 WINDOW frames of 20 bytes before its reply (the host may never have more than the
    # 256 KiB window unacknowledged), so a cut within 600 bytes always lands while it is open.
    stream, first = await AgentStream.open(rig.socket, guest.FsWrite(id=1, path=str(rig.workdir / "cut.bin")))
    assert isinstance(first, guest.FsReady), first
    rig.chardev.cut(direction, chance.randrange(1, 3 * MiB if direction == "h2g" else 600))

    async def send(data: bytes) -> guest.StreamReply:
        await stream.send(data)
        await stream.end()
        return await stream.read()  # type: ignore[return-value]

    upload = asyncio.create_task(send(chance.randbytes(8 * MiB)))
    pinging = asyncio.create_task(_ping_until_failure(client))
    try:
        with pytest.raises(AgentUnavailable):
            await upload
    finally:
        await stream.close()
    with pytest.raises(AgentUnavailable):
        await pinging
    await rig.resynced(syncs)
    assert rig.chardev.hosts == 2
    again = await rig.client()
    try:
        result = await again.exec(["echo", "again"])
        assert result.stdout == "again\n"
        data = chance.randbytes(MiB)
        written = await _upload(rig.socket, rig.workdir / "after.bin", data)
        assert isinstance(written, guest.FsWritten) and written.size == len(data)
    finally:
        await again.close()
        await client.close()


async def _ping_until_failure(client: AgentClient) -> None:
    while True:
        await client.ping(timeout=30)


@pytest.mark.parametrize("direction", ["h2g", "g2h"])
async def test_garbage_on_the_wire_resyncs_the_channel(rig: Rig, direction: str) -> None:
    client = await rig.client()
    syncs = rig.muxer.syncs
    garbage = random.Random(direction).randbytes(5000) + b"\xda\x7a" + b"\xff" * 40  # a false magic too
    await rig.chardev.inject(direction, garbage)
    with pytest.raises(AgentUnavailable):  # the channel resets: open streams fail
        await _ping_until_failure(client)
    await rig.resynced(syncs)
    again = await rig.client()
    try:
        await again.ping()
    finally:
        await again.close()
        await client.close()


async def test_the_muxer_reconnects_when_the_guest_restarts(workdir: Path, agent: Path) -> None:
    async with rig_for(workdir, agent) as rig:
        client = await rig.client()
        await client.ping()
        await client.close()
        assert rig.muxer.syncs == 1
    # a new guest process (another Demux) behind a new chardev: a new muxer syncs the same way
    async with rig_for(workdir, agent) as rig:
        await (await rig.client()).close()


async def test_a_channel_version_mismatch_is_a_clear_error(workdir: Path, agent: Path) -> None:
    async with rig_for(workdir, agent, "99") as rig:
        await await_for(lambda: _true(rig.muxer.error is not None), what="the muxer to see the mismatch")
        assert rig.muxer.error == "agent channel version mismatch: guest 99, hostd 1"
        with pytest.raises(AgentUnavailable, match="version mismatch: guest 99"):
            await AgentClient.connect(rig.socket, timeout=30)
