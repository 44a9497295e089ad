"""File byte streams (``guest/transfer.py``) through a real agent process, driven by hostd's
real ``AgentStream``: content round trips, all-or-nothing uploads, modes, and the refusals.

The agent runs on the host here, so paths are the host's (a temporary home); confinement to
the sandbox is the kernel's and is proven by the stack tests in ``tests/core/test_files.py``.
"""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from contracts import guest
from hosts.agent_client import wait_ready
from hosts.agent_stream import AgentStream
from hosts.errors import AgentUnavailable
from tests.guest.test_agent import Agent, RawConnection, StartAgent, start_agent, workdir

__all__ = ["start_agent", "workdir"]  # fixtures used by this module


@pytest.fixture
async def agent(start_agent: StartAgent) -> Agent:
    agent = start_agent(init=True)
    client = await wait_ready(agent.socket_path, timeout=10)
    await client.close()
    return agent


async def upload(
    agent: Agent, path: Path | str, data: bytes, *, mode: str | None = None, chunk: int = 65536
) -> object:
    stream, first = await AgentStream.open(agent.socket_path, guest.FsWrite(id=1, path=str(path), mode=mode))
    try:
        if isinstance(first, guest.Error):
            return first
        assert isinstance(first, guest.FsReady)
        for start in range(0, len(data), chunk):
            await stream.send(data[start : start + chunk])
        await stream.end()
        return await stream.read()
    finally:
        await stream.close()


async def download(agent: Agent, path: Path | str) -> tuple[object, bytes]:
    stream, first = await AgentStream.open(agent.socket_path, guest.FsRead(id=1, path=str(path)))
    data = bytearray()
    try:
        if isinstance(first, guest.Error):
            return first, b""
        while True:
            frame = await stream.read()
            assert isinstance(frame, bytes), frame
            assert len(frame) <= guest.MAX_BINARY_FRAME
            if not frame:
                return first, bytes(data)
            data += frame
    finally:
        await stream.close()


async def test_upload_then_download_round_trips_every_byte(agent: Agent, workdir: Path) -> None:
    data = os.urandom(3 * guest.MAX_BINARY_FRAME + 12345)
    target = workdir / "deep" / "er" / "blob.bin"  # missing parents are created
    written = await upload(agent, target, data, chunk=700_000)
    assert written == guest.FsWritten(id=1, path=str(target), size=len(data))
    assert target.read_bytes() == data
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    reading, content = await download(agent, target)
    assert reading == guest.FsReading(id=1, path=str(target), size=len(data))
    assert content == data


async def test_empty_files_and_relative_paths(agent: Agent, workdir: Path) -> None:
    home = Path(os.path.expanduser("~"))  # the agent's HOME is the test user's
    name = f"dnah-transfer-{os.getpid()}.txt"
    try:
        written = await upload(agent, name, b"")
        assert written == guest.FsWritten(id=1, path=str(home / name), size=0)
        assert await download(agent, name) == (guest.FsReading(id=1, path=str(home / name), size=0), b"")
    finally:
        (home / name).unlink(missing_ok=True)


async def test_overwrite_keeps_the_mode_unless_one_is_given(agent: Agent, workdir: Path) -> None:
    target = workdir / "script.sh"
    target.write_text("old")
    target.chmod(0o750)
    await upload(agent, target, b"new")
    assert (target.read_bytes(), stat.S_IMODE(target.stat().st_mode)) == (b"new", 0o750)
    await upload(agent, target, b"newer", mode="600")
    assert (target.read_bytes(), stat.S_IMODE(target.stat().st_mode)) == (b"newer", 0o600)
    refused = await upload(agent, target, b"x", mode="9z")
    assert isinstance(refused, guest.Error) and refused.code == "bad_request"
    assert target.read_bytes() == b"newer"


async def test_an_upload_cut_short_leaves_the_old_file_and_no_leftovers(agent: Agent, workdir: Path) -> None:
    target = workdir / "keep.txt"
    target.write_text("original")
    stream, first = await AgentStream.open(agent.socket_path, guest.FsWrite(id=1, path=str(target)))
    assert isinstance(first, guest.FsReady)
    await stream.send(b"partial " * 10_000)
    await stream.close()  # no end frame: the upload is aborted
    for _ in range(100):  # the agent notices the closed connection asynchronously
        if [p.name for p in workdir.iterdir() if p.name.startswith(".dnah-upload-")] == []:
            break
        await asyncio.sleep(0.02)
    assert sorted(p.name for p in workdir.iterdir() if p.name != "agent.sock") == ["keep.txt"]
    assert target.read_text() == "original"


async def test_refusals_come_before_any_byte(agent: Agent, workdir: Path) -> None:
    (workdir / "dir").mkdir()
    (workdir / "fifo").parent.mkdir(exist_ok=True)
    os.mkfifo(workdir / "fifo")
    (workdir / "file").write_text("x")
    cases = {
        "upload onto a directory": (await upload(agent, workdir / "dir", b"x"), "bad_request"),
        "upload under a file": (await upload(agent, workdir / "file" / "child", b"x"), "bad_request"),
        "upload with an empty path": (await upload(agent, "", b"x"), "bad_request"),
        "download of a missing file": ((await download(agent, workdir / "missing"))[0], "not_found"),
        "download of a directory": ((await download(agent, workdir / "dir"))[0], "bad_request"),
        "download of a FIFO (would block)": ((await download(agent, workdir / "fifo"))[0], "bad_request"),
    }
    for case, (reply, code) in cases.items():
        assert isinstance(reply, guest.Error), case
        assert reply.code == code, (case, reply)
    if os.geteuid() != 0:  # root reads anything; the sandbox user does not
        locked = workdir / "locked"
        locked.write_text("secret")
        locked.chmod(0)
        reply, _ = await download(agent, locked)
        assert isinstance(reply, guest.Error) and reply.code == "forbidden"


async def test_a_json_frame_inside_an_upload_aborts_it(agent: Agent, workdir: Path) -> None:
    target = workdir / "t.txt"
    stream, first = await AgentStream.open(agent.socket_path, guest.FsWrite(id=1, path=str(target)))
    assert isinstance(first, guest.FsReady)
    await stream.send(b"abc")
    await stream.send_message(guest.Ping(id=2))
    reply = await stream.read()
    assert isinstance(reply, guest.Error) and reply.code == "bad_request"
    with pytest.raises(AgentUnavailable):
        await stream.read()  # the agent closed the stream
    await stream.close()
    assert not target.exists()


def test_a_stream_opener_must_be_the_first_frame(agent: Agent) -> None:
    raw = RawConnection(agent.socket_path)
    try:
        assert raw.handshake() == b"OK 52\n"
        raw.send_frame(guest.encode(guest.Ping(id=1))[4:])
        assert isinstance(raw.reply(), guest.Pong)
        raw.send_frame(guest.encode(guest.FsRead(id=2, path="/etc/hostname"))[4:])
        reply = raw.reply()
        assert isinstance(reply, guest.Error) and reply.code == "bad_request" and reply.id == 2
        raw.send_frame(b"x", binary=True)  # outside a stream: refused, the connection lives on
        assert isinstance(raw.reply(), guest.Error)
        raw.send_frame(guest.encode(guest.Ping(id=3))[4:])
        assert raw.reply() == guest.Pong(id=3, version=guest.PROTOCOL_VERSION, agent=raw_agent_name())
    finally:
        raw.close()


def raw_agent_name() -> str:
    from guest.agent import AGENT

    return AGENT


async def test_a_reader_that_stops_and_hangs_up_leaves_the_agent_healthy(agent: Agent, workdir: Path) -> None:
    """The agent sends only as fast as the host reads: with the host not reading, its stream
    thread blocks once the socket buffers are full, and closing the stream releases it."""
    target = workdir / "big.bin"
    with open(target, "wb") as f:
        f.truncate(64 * 1024 * 1024)  # sparse: cheap to make, 64 MiB to send
    stream, first = await AgentStream.open(agent.socket_path, guest.FsRead(id=1, path=str(target)))
    assert isinstance(first, guest.FsReading) and first.size == 64 * 1024 * 1024
    assert isinstance(await stream.read(), bytes)
    await asyncio.sleep(0.3)
    await stream.close()
    # the agent is still healthy and answers a new stream
    reading, content = await download(agent, workdir / "big.bin")
    assert isinstance(reading, guest.FsReading) and len(content) == 64 * 1024 * 1024
