"""Process streams (``guest/proc.py``) through a real agent process, driven by hostd's real
``AgentStream``: stdout and stderr kept apart, stdin streamed and closed, exit codes, the
refusals, and a dropped host killing the process's whole session.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from contracts import guest
from hosts.agent_client import wait_ready
from hosts.agent_stream import AgentStream
from tests.guest.test_agent import Agent, StartAgent, start_agent, workdir
from tests.support import await_for

__all__ = ["start_agent", "workdir"]  # fixtures used by this module


@pytest.fixture
async def agent(start_agent: StartAgent) -> Agent:
    agent = start_agent(init=True)
    client = await wait_ready(agent.socket_path, timeout=10)
    await client.close()
    return agent


async def run(
    agent: Agent, argv: list[str], stdin: bytes = b"", **kw: object
) -> tuple[object, bytes, bytes, object]:
    """(first reply, stdout, stderr, last reply) of one process stream."""
    stream, first = await AgentStream.open(agent.socket_path, guest.ProcSpawn(id=3, argv=argv, **kw))  # type: ignore[arg-type]
    out, err = bytearray(), bytearray()
    try:
        if not isinstance(first, guest.ProcStarted):
            return first, b"", b"", None

        async def feed() -> None:  # beside the reads: a process's output may wait for them
            if stdin:
                await stream.send(stdin)
            await stream.end()

        feeding = asyncio.create_task(feed())
        ended: set[int] = set()
        while True:
            frame = await stream.read()
            if not isinstance(frame, bytes):
                await feeding
                assert ended == {guest.PROC_STDOUT, guest.PROC_STDERR}, "exit came before both ends"
                return first, bytes(out), bytes(err), frame
            assert frame, "output frames always carry their tag"
            tag, data = frame[0], frame[1:]
            assert tag not in ended
            if not data:
                ended.add(tag)
            (out if tag == guest.PROC_STDOUT else err).extend(data)
    finally:
        await stream.close()


async def test_stdout_and_stderr_stay_apart_and_the_exit_code_arrives(agent: Agent) -> None:
    first, out, err, last = await run(agent, ["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert isinstance(first, guest.ProcStarted) and first.pid > 0
    assert (out, err) == (b"out\n", b"err\n")
    assert last == guest.ProcExited(id=3, exit_code=7)


async def test_stdin_is_streamed_and_closed(agent: Agent) -> None:
    data = os.urandom(3 * guest.MAX_BINARY_FRAME + 17)
    _, out, err, last = await run(agent, ["cat"], stdin=data)
    assert out == data and err == b""
    assert last == guest.ProcExited(id=3, exit_code=0)


async def test_env_and_cwd(agent: Agent, workdir: Path) -> None:
    _, out, _, _ = await run(
        agent, ["sh", "-c", 'echo "$GREETING $PWD"'], env={"GREETING": "hi"}, cwd=str(workdir)
    )
    assert out == f"hi {workdir}\n".encode()


async def test_a_signal_is_a_negative_exit_code(agent: Agent) -> None:
    _, _, _, last = await run(agent, ["sh", "-c", "kill -TERM $$"])
    assert last == guest.ProcExited(id=3, exit_code=-signal.SIGTERM)


async def test_refusals(agent: Agent, workdir: Path) -> None:
    first, *_ = await run(agent, ["/nonexistent/program"])
    assert isinstance(first, guest.Error) and first.code == "not_found"
    first, *_ = await run(agent, ["true"], cwd=str(workdir / "missing"))
    assert isinstance(first, guest.Error) and first.code == "bad_request"


async def test_a_host_that_leaves_kills_the_process_session(agent: Agent, workdir: Path) -> None:
    pidfile = workdir / "child.pid"
    stream, first = await AgentStream.open(
        agent.socket_path,
        guest.ProcSpawn(id=1, argv=["sh", "-c", f"sleep 300 & echo $! > {pidfile}; echo ready; wait"]),
    )
    assert isinstance(first, guest.ProcStarted)
    assert await stream.read() == bytes((guest.PROC_STDOUT,)) + b"ready\n"
    child = int(pidfile.read_text())
    await stream.close()

    def alive(pid: int) -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0]
        except (FileNotFoundError, ProcessLookupError):
            return False
        return state != "Z"

    async def both_gone() -> bool:
        return not alive(child) and not alive(first.pid)

    await await_for(both_gone, what="the process and its background child killed")
