"""The process registry (``guest/processes.py``) in a real agent process, driven by hostd's real
``AgentStream`` (``proc.start``/``proc.connect`` streams) and ``AgentClient`` (the ``proc.*``
relay requests): pipes and a terminal, output kept from the start and replayed on connect,
several clients, input through the stream and the relay, signals, resize, list, tags,
timeouts, ended processes, and bad input.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from contracts import guest
from hosts.agent_client import AgentClient, wait_ready
from hosts.agent_stream import AgentStream
from tests.guest.test_agent import Agent, StartAgent, start_agent, workdir
from tests.support import await_for

__all__ = ["start_agent", "workdir"]  # fixtures used by this module

OUT, ERR, PTY = guest.PROC_STDOUT, guest.PROC_STDERR, guest.PROC_PTY


@pytest.fixture
async def agent(start_agent: StartAgent) -> Agent:
    return start_agent(init=True)


@pytest.fixture
async def client(agent: Agent) -> AsyncIterator[AgentClient]:
    client = await wait_ready(agent.socket_path, timeout=10)
    yield client
    await client.close()


class Attached:
    """A ``proc.start`` or ``proc.connect`` stream and what it has received, in order."""

    def __init__(self, stream: AgentStream, started: guest.ProcStarted) -> None:
        self.stream = stream
        self.pid = started.pid
        self.frames: list[tuple[int, bytes]] = []
        self.ended: list[int] = []
        self.exited: guest.ProcExited | None = None

    @classmethod
    async def open(cls, agent: Agent, opener: guest.ProcStart | guest.ProcConnect) -> Attached:
        stream, first = await AgentStream.open(agent.socket_path, opener)
        assert isinstance(first, guest.ProcStarted), first
        return cls(stream, first)

    def output(self, tag: int) -> bytes:
        return b"".join(data for frame_tag, data in self.frames if frame_tag == tag)

    async def read_one(self) -> None:
        frame = await self.stream.read()
        if isinstance(frame, bytes):
            assert frame, "output frames always carry their tag"
            tag, data = frame[0], frame[1:]
            assert tag not in self.ended, f"output on stream {tag} after its end"
            if data:
                self.frames.append((tag, data))
            else:
                self.ended.append(tag)
        else:
            assert isinstance(frame, guest.ProcExited), frame
            assert self.exited is None
            self.exited = frame

    async def expect(self, tag: int, marker: bytes, timeout: float = 15) -> None:
        async with asyncio.timeout(timeout):
            while marker not in self.output(tag):
                assert self.exited is None, f"exited before {marker!r}: {self.frames}"
                await self.read_one()

    async def until_exit(self, timeout: float = 15) -> guest.ProcExited:
        async with asyncio.timeout(timeout):
            while self.exited is None:
                await self.read_one()
        return self.exited

    async def close(self) -> None:
        await self.stream.close()


def start(argv: list[str], **kw: object) -> guest.ProcStart:
    return guest.ProcStart(id=7, argv=argv, **kw)  # type: ignore[arg-type]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


async def done(client: AgentClient, message: guest.HostToGuest) -> None:
    reply = await client.call(message)
    assert isinstance(reply, guest.ProcDone), reply


async def listed(client: AgentClient, pid: int) -> guest.ProcInfo | None:
    reply = await client.call(guest.ProcList(id=0))
    assert isinstance(reply, guest.ProcListResult), reply
    return next((info for info in reply.processes if info.pid == pid), None)


async def test_pipes_stay_apart_and_the_process_is_listed(
    client: AgentClient, agent: Agent, workdir: Path
) -> None:
    attached = await Attached.open(
        agent,
        start(
            ["sh", "-c", 'echo "out $GREETING"; echo err >&2; exit 5'],
            env={"GREETING": "hi"},
            cwd=str(workdir),
        ),
    )
    exited = await attached.until_exit()
    assert exited == guest.ProcExited(id=7, exit_code=5)
    assert (attached.output(OUT), attached.output(ERR)) == (b"out hi\n", b"err\n")
    assert sorted(attached.ended) == [OUT, ERR]
    info = await listed(client, attached.pid)
    assert info == guest.ProcInfo(
        pid=attached.pid,
        argv=["sh", "-c", 'echo "out $GREETING"; echo err >&2; exit 5'],
        env={"GREETING": "hi"},
        cwd=str(workdir),
        pty=False,
        running=False,
        exit_code=5,
    )
    await attached.close()


async def test_a_terminal_its_size_input_and_resize(client: AgentClient, agent: Agent) -> None:
    script = 'tty; stty size; read line; echo "got $line"; stty size; echo "TERM=$TERM"'
    attached = await Attached.open(
        agent, start(["sh", "-c", script], pty=guest.ProcPty(cols=100, rows=30), tag="t")
    )
    await attached.expect(PTY, b"30 100")
    assert attached.output(PTY).startswith(b"/dev/pts/")
    info = await listed(client, attached.pid)
    assert info is not None and info.pty and info.running and info.tag == "t"
    await done(client, guest.ProcResize(id=0, tag="t", cols=120, rows=40))
    data = base64.b64encode(b"hello\n").decode()
    await done(client, guest.ProcInput(id=0, pid=attached.pid, data=data))
    exited = await attached.until_exit()
    assert exited.exit_code == 0 and not exited.timed_out
    output = attached.output(PTY)
    assert b"got hello" in output and b"40 120" in output and b"TERM=xterm-256color" in output
    assert attached.ended == [PTY] and not attached.output(OUT) and not attached.output(ERR)
    refused = await client.call(guest.ProcResize(id=0, pid=attached.pid, cols=1, rows=1))
    assert isinstance(refused, guest.Error) and refused.code == "conflict"
    await attached.close()


async def test_a_terminal_takes_input_on_its_stream(agent: Agent) -> None:
    attached = await Attached.open(agent, start(["cat"], pty=guest.ProcPty(cols=80, rows=24)))
    await attached.stream.send(b"typed\n")
    await attached.expect(PTY, b"typed\r\n")
    await attached.stream.end()  # ignored on a terminal: cat still reads
    await attached.stream.send(b"\x04")  # ^D at the start of a line: cat reads its end
    assert (await attached.until_exit()).exit_code == 0
    await attached.close()


async def test_output_from_the_start_is_replayed_on_connect(client: AgentClient, agent: Agent) -> None:
    """The start stream's end only detaches; a connect by pid, then by tag, replays the output
    from the start in the order it was written, then live output, then the exit."""
    script = "echo one; echo two >&2; read a; echo three; read b; echo $b; echo done >&2"
    first = await Attached.open(agent, start(["sh", "-c", script], tag="job"))
    await first.expect(OUT, b"one\n")
    await first.expect(ERR, b"two\n")
    await first.stream.send(b"go\n")
    await first.expect(OUT, b"three\n")
    await first.close()
    info = await listed(client, first.pid)
    assert info is not None and info.running

    again = await Attached.open(agent, guest.ProcConnect(id=9, pid=first.pid))
    assert again.pid == first.pid
    await again.expect(OUT, b"three\n")
    # "three" was written after both others were read, so it is replayed after them (the
    # relative order of pipes is the order their pumps read them; writes in a row on one
    # stream may come back as one frame)
    assert (again.output(OUT), again.output(ERR)) == (b"one\nthree\n", b"two\n")
    where = {data: index for index, (_, frame) in enumerate(again.frames) for data in frame.splitlines()}
    assert where[b"two"] < where[b"three"]
    await again.close()

    by_tag = await Attached.open(agent, guest.ProcConnect(id=10, tag="job"))
    await by_tag.expect(OUT, b"three\n")
    await by_tag.stream.send(b"four\n")
    exited = await by_tag.until_exit()
    assert exited == guest.ProcExited(id=10, exit_code=0)
    assert (by_tag.output(OUT), by_tag.output(ERR)) == (b"one\nthree\nfour\n", b"two\ndone\n")
    await by_tag.close()


async def test_two_clients_see_the_same_output(client: AgentClient, agent: Agent) -> None:
    one = await Attached.open(agent, start(["cat"], tag="shared"))
    two = await Attached.open(agent, guest.ProcConnect(id=2, tag="shared"))
    await one.stream.send(b"from one\n")
    await one.expect(OUT, b"from one\n")
    await two.expect(OUT, b"from one\n")
    await two.stream.send(b"from two\n")
    await one.expect(OUT, b"from two\n")
    data = base64.b64encode(b"from the relay\n").decode()
    await done(client, guest.ProcInput(id=0, tag="shared", data=data))
    await one.expect(OUT, b"from the relay\n")
    await done(client, guest.ProcCloseStdin(id=0, tag="shared"))
    for attached in (one, two):
        assert (await attached.until_exit()).exit_code == 0
        assert attached.output(OUT) == b"from one\nfrom two\nfrom the relay\n"
        await attached.close()
    refused = await client.call(guest.ProcInput(id=0, tag="shared", data=data))
    assert isinstance(refused, guest.Error) and refused.code == "conflict"


async def test_stdin_closed_on_the_stream_and_big_input(client: AgentClient, agent: Agent) -> None:
    payload = os.urandom(3 * guest.MAX_BINARY_FRAME + 5)
    attached = await Attached.open(agent, start(["sha256sum"]))
    await attached.stream.send(payload)
    await attached.stream.end()
    assert (await attached.until_exit()).exit_code == 0
    assert attached.output(OUT).split()[0].decode() == hashlib.sha256(payload).hexdigest()
    await attached.close()

    relayed = [os.urandom(guest.MAX_BINARY_FRAME), os.urandom(1000)]
    attached = await Attached.open(agent, start(["sha256sum"]))
    for data in relayed:  # one after another: each reply says its input is written
        await done(client, guest.ProcInput(id=0, pid=attached.pid, data=base64.b64encode(data).decode()))
    await done(client, guest.ProcCloseStdin(id=0, pid=attached.pid))
    assert (await attached.until_exit()).exit_code == 0
    assert attached.output(OUT).split()[0].decode() == hashlib.sha256(b"".join(relayed)).hexdigest()
    await attached.close()


async def test_without_stdin(client: AgentClient, agent: Agent) -> None:
    attached = await Attached.open(agent, start(["sh", "-c", "cat; echo end"], stdin=False))
    assert (await attached.until_exit()).exit_code == 0 and attached.output(OUT) == b"end\n"
    await attached.close()
    sleeper = await Attached.open(agent, start(["sleep", "300"], stdin=False))
    for message in (
        guest.ProcInput(id=0, pid=sleeper.pid, data="eA=="),
        guest.ProcCloseStdin(id=0, pid=sleeper.pid),
        guest.ProcResize(id=0, pid=sleeper.pid, cols=80, rows=24),
    ):
        refused = await client.call(message)
        assert isinstance(refused, guest.Error) and refused.code == "conflict", message
    await client.call(guest.ProcSignal(id=0, pid=sleeper.pid, signal=signal.SIGKILL))
    assert (await sleeper.until_exit()).exit_code == -signal.SIGKILL
    await sleeper.close()


async def test_a_signal_reaches_the_whole_session(client: AgentClient, agent: Agent, workdir: Path) -> None:
    pidfile = workdir / "child.pid"
    attached = await Attached.open(
        agent, start(["sh", "-c", f"sleep 300 & echo $! > {pidfile}; echo ready; wait"])
    )
    await attached.expect(OUT, b"ready\n")
    child = int(pidfile.read_text())
    await done(client, guest.ProcSignal(id=0, pid=attached.pid, signal=signal.SIGTERM))
    assert (await attached.until_exit()).exit_code == -signal.SIGTERM
    assert not alive(child)
    await attached.close()


async def test_a_timeout_kills_the_session(client: AgentClient, agent: Agent, workdir: Path) -> None:
    pidfile = workdir / "child.pid"
    script = f"sleep 300 & echo $! > {pidfile}; echo ready; sleep 300"
    attached = await Attached.open(agent, start(["sh", "-c", script], timeout_ms=500))
    await attached.expect(OUT, b"ready\n")
    exited = await attached.until_exit()
    assert exited == guest.ProcExited(id=7, exit_code=-signal.SIGKILL, timed_out=True)
    assert not alive(int(pidfile.read_text())) and not alive(attached.pid)
    await attached.close()


async def test_a_timeout_counts_while_a_job_holds_the_output(agent: Agent, workdir: Path) -> None:
    """The process itself exits at once, a background job keeps its stdout: it has not ended,
    so the deadline still applies."""
    attached = await Attached.open(agent, start(["sh", "-c", "sleep 300 & exit 0"], timeout_ms=500))
    exited = await attached.until_exit()
    assert exited.timed_out and exited.exit_code == -signal.SIGKILL
    await attached.close()


async def test_an_ended_process_can_still_be_connected(client: AgentClient, agent: Agent) -> None:
    attached = await Attached.open(agent, start(["sh", "-c", "echo bye; exit 3"], tag="short"))
    await attached.until_exit()
    await attached.close()
    late = await Attached.open(agent, guest.ProcConnect(id=4, tag="short"))
    assert late.pid == attached.pid
    assert await late.until_exit() == guest.ProcExited(id=4, exit_code=3)
    assert late.output(OUT) == b"bye\n" and sorted(late.ended) == [OUT, ERR]
    await late.close()
    for message in (
        guest.ProcSignal(id=0, tag="short", signal=signal.SIGTERM),
        guest.ProcInput(id=0, tag="short", data="eA=="),
    ):
        refused = await client.call(message)
        assert isinstance(refused, guest.Error) and refused.code == "conflict"
    # the tag is free again once its process ended
    again = await Attached.open(agent, start(["true"], tag="short"))
    assert (await again.until_exit()).exit_code == 0
    await again.close()


async def test_output_kept_is_bounded_to_the_newest(agent: Agent) -> None:
    produced = subprocess.run(["seq", "1", "400000"], capture_output=True, check=True).stdout
    assert len(produced) > 2 * guest.PROC_OUTPUT_KEPT
    attached = await Attached.open(agent, start(["seq", "1", "400000"]))
    assert (await attached.until_exit()).exit_code == 0
    assert attached.output(OUT) == produced  # an attached client gets every byte
    await attached.close()
    late = await Attached.open(agent, guest.ProcConnect(id=1, pid=attached.pid))
    await late.until_exit()
    assert late.output(OUT) == produced[-guest.PROC_OUTPUT_KEPT :]
    await late.close()


async def test_a_running_tag_is_taken(agent: Agent) -> None:
    attached = await Attached.open(agent, start(["sleep", "300"], tag="busy"))
    stream, first = await AgentStream.open(agent.socket_path, start(["true"], tag="busy"))
    await stream.close()
    assert isinstance(first, guest.Error) and first.code == "conflict"
    await attached.close()  # only detaches: the sleeper still runs
    assert alive(attached.pid)
    os.kill(attached.pid, signal.SIGKILL)


async def test_a_spawned_process_is_listed_and_killed_with_its_stream(
    client: AgentClient, agent: Agent
) -> None:
    stream, first = await AgentStream.open(agent.socket_path, guest.ProcSpawn(id=1, argv=["sleep", "300"]))
    assert isinstance(first, guest.ProcStarted)
    info = await listed(client, first.pid)
    assert info is not None and info.running and info.tag is None
    await stream.close()

    async def gone() -> bool:
        info = await listed(client, first.pid)
        return info is not None and not info.running and not alive(first.pid)

    await await_for(gone, what="the spawned process killed and listed as ended")


async def test_a_process_that_does_not_read_fails_a_relayed_input(client: AgentClient, agent: Agent) -> None:
    """The pipe fills; the input waits ``PROC_INPUT_WAIT_MS`` and is then refused."""
    attached = await Attached.open(agent, start(["sleep", "300"]))
    data = base64.b64encode(bytes(4 * 1024 * 1024)).decode()
    refused = await client.call(guest.ProcInput(id=0, pid=attached.pid, data=data), timeout=60)
    assert isinstance(refused, guest.Error) and refused.code == "conflict", refused
    await client.call(guest.ProcSignal(id=0, pid=attached.pid, signal=signal.SIGKILL))
    await attached.until_exit()
    await attached.close()


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (guest.ProcSignal(id=0, pid=2**31 - 1, signal=9), "not_found"),
        (guest.ProcSignal(id=0, tag="nobody", signal=9), "not_found"),
        (guest.ProcSignal(id=0, signal=9), "bad_request"),
        (guest.ProcInput(id=0, pid=2**31 - 1, data=""), "not_found"),
        (guest.ProcCloseStdin(id=0, tag="nobody"), "not_found"),
        (guest.ProcResize(id=0, tag="nobody", cols=80, rows=24), "not_found"),
    ],
)
async def test_unknown_processes(client: AgentClient, message: guest.HostToGuest, code: str) -> None:
    reply = await client.call(message)
    assert isinstance(reply, guest.Error) and reply.code == code, reply


async def test_bad_input(client: AgentClient, agent: Agent, workdir: Path) -> None:
    openers: list[tuple[guest.ProcStart | guest.ProcConnect, str]] = [
        (guest.ProcConnect(id=1, pid=2**31 - 1), "not_found"),
        (guest.ProcConnect(id=1, tag="nobody"), "not_found"),
        (guest.ProcConnect(id=1), "bad_request"),
        (start(["/nonexistent/program"]), "not_found"),
        (start(["true"], cwd=str(workdir / "missing")), "bad_request"),
        (start(["true"], pty=guest.ProcPty(cols=0, rows=24)), "bad_request"),
        (start(["true"], user="nosuchaccount"), "not_found"),
        (start(["true"], user="Not An Account"), "bad_request"),
    ]
    for opener, code in openers:
        stream, first = await AgentStream.open(agent.socket_path, opener)
        await stream.close()
        assert isinstance(first, guest.Error) and first.code == code, (opener, first)
    attached = await Attached.open(agent, start(["cat"]))
    too_big = base64.b64encode(bytes(guest.PROC_INPUT_MAX + 1)).decode()
    requests: list[tuple[guest.HostToGuest, str]] = [
        (guest.ProcInput(id=0, pid=attached.pid, data="not base64!"), "bad_request"),
        (guest.ProcInput(id=0, pid=attached.pid, data=too_big), "bad_request"),
        (guest.ProcSignal(id=0, pid=attached.pid, signal=0), "bad_request"),
        (guest.ProcSignal(id=0, pid=attached.pid, signal=65), "bad_request"),
        (guest.ProcResize(id=0, pid=attached.pid, cols=80, rows=24), "conflict"),
    ]
    for message, code in requests:
        reply = await client.call(message, timeout=30)
        assert isinstance(reply, guest.Error) and reply.code == code, (message.__class__.__name__, reply)
    await client.call(guest.ProcCloseStdin(id=0, pid=attached.pid))
    assert (await attached.until_exit()).exit_code == 0
    assert attached.output(OUT) == b""  # nothing of the refused input got through
    await attached.close()


async def test_ended_processes_hold_a_bounded_amount_of_output(client: AgentClient, agent: Agent) -> None:
    """Each process keeps 2 MiB (1 MiB per stream); ended ones keep 16 MiB together, so of
    ten the two oldest are forgotten."""
    script = "head -c 3000000 /dev/zero; head -c 3000000 /dev/zero >&2"
    pids = []
    for _ in range(10):
        attached = await Attached.open(agent, start(["sh", "-c", script]))
        assert (await attached.until_exit()).exit_code == 0
        await attached.close()
        pids.append(attached.pid)
    assert guest.PROC_EXITED_KEPT == 8 * 2 * guest.PROC_OUTPUT_KEPT  # what the count below assumes
    reply = await client.call(guest.ProcList(id=0))
    assert isinstance(reply, guest.ProcListResult)
    assert [info.pid for info in reply.processes if info.pid in pids] == pids[2:]
    stream, first = await AgentStream.open(agent.socket_path, guest.ProcConnect(id=1, pid=pids[1]))
    await stream.close()
    assert isinstance(first, guest.Error) and first.code == "not_found"


async def test_a_client_that_reads_nothing_is_cut_off_and_the_process_runs_on(
    agent: Agent, workdir: Path
) -> None:
    """Two clients of one process: one takes nothing (an E2B background command whose stream
    nobody reads), the other reads. Once the first has been ``PROC_CLIENT_BACKLOG`` bytes
    behind for ``PROC_CLIENT_STALL_MS`` it is cut off; the process writes on, the reader gets
    every byte and the exit, and the stalled one, reading at last, finds what was queued for
    it, then the error."""
    size = 6 * guest.PROC_CLIENT_BACKLOG
    script = f"until [ -e go ]; do sleep 0.05; done; head -c {size} /dev/zero | tr '\\0' x"
    stalled = await Attached.open(agent, start(["sh", "-c", script], cwd=str(workdir), tag="chatty"))
    reader = await Attached.open(agent, guest.ProcConnect(id=2, tag="chatty"))
    (workdir / "go").touch()  # both attached before the first byte: each is owed all of it
    exited = await reader.until_exit(timeout=guest.PROC_CLIENT_STALL_MS / 1000 + 60)
    assert exited.exit_code == 0 and reader.output(OUT) == b"x" * size

    received = bytearray()
    async with asyncio.timeout(30):
        while isinstance(frame := await stalled.stream.read(), bytes):
            received += frame[1:]
    assert isinstance(frame, guest.Error) and frame.code == "conflict", frame
    assert "cut off" in frame.message and str(stalled.pid) in frame.message
    assert 0 < len(received) < size and received == b"x" * len(received)
    for attached in (stalled, reader):
        await attached.close()


async def test_a_spawn_stream_is_paced_but_never_cut_off(agent: Agent) -> None:
    """A ``proc.spawn`` process ends with its stream, so a client that stops reading for
    longer than ``PROC_CLIENT_STALL_MS`` only holds the process up, and loses nothing."""
    size = 4 * guest.PROC_CLIENT_BACKLOG
    opener = guest.ProcSpawn(id=1, argv=["sh", "-c", f"head -c {size} /dev/zero | tr '\\0' y"])
    stream, first = await AgentStream.open(agent.socket_path, opener)
    assert isinstance(first, guest.ProcStarted)
    attached = Attached(stream, first)
    await asyncio.sleep(guest.PROC_CLIENT_STALL_MS / 1000 + 2)  # the client stalls that long
    exited = await attached.until_exit(timeout=60)
    assert exited.exit_code == 0 and attached.output(OUT) == b"y" * size
    await attached.close()
