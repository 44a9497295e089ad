"""Terminals (``guest/pty.py``) in a real agent process, driven by hostd's real ``AgentClient``
(the ``pty.*`` relay requests) and ``AgentStream`` (the ``pty.attach`` stream): input and
output, resize, exit codes, kill, scrollback replay, the ephemeral lifetime rule (no process
outlives its last client), the session cap and bad input.

The agent runs on the host here (as the test's user); sandbox confinement is proven by the
stack tests in ``tests/core/test_terminals.py``.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from contracts import guest
from hosts.agent_client import AgentClient, wait_ready
from hosts.agent_stream import AgentStream
from tests.guest.test_agent import Agent, StartAgent, start_agent, workdir
from tests.support import await_for

__all__ = ["start_agent", "workdir"]  # fixtures used by this module


@pytest.fixture
async def agent(start_agent: StartAgent) -> Agent:
    return start_agent(init=True)


@pytest.fixture
async def client(agent: Agent) -> AsyncIterator[AgentClient]:
    client = await wait_ready(agent.socket_path, timeout=10)
    yield client
    await client.close()


class Term:
    """An attach stream with a buffer of what it has received."""

    def __init__(self, stream: AgentStream, attached: guest.PtyAttached) -> None:
        self.stream = stream
        self.attached = attached
        self.output = bytearray()
        self.exited: guest.PtyExited | None = None

    @classmethod
    async def open(cls, agent: Agent, opener: guest.PtyAttach) -> Term:
        stream, first = await AgentStream.open(agent.socket_path, opener)
        assert isinstance(first, guest.PtyAttached), first
        return cls(stream, first)

    async def type(self, text: str) -> None:
        await self.stream.send(text.encode())

    async def expect(self, marker: bytes, timeout: float = 10) -> bytes:
        """Read until ``marker`` is in the output; return the output so far."""
        async with asyncio.timeout(timeout):
            while marker not in self.output:
                await self._read_one()
        return bytes(self.output)

    async def number(self, name: str, timeout: float = 10) -> int:
        """Wait for ``NAME=<digits><newline>`` in the output (type it as ``N''AME=`` so the
        terminal's echo of the command does not match) and return the digits."""
        pattern = re.compile(name.encode() + rb"=(\d+)\r?\n")
        async with asyncio.timeout(timeout):
            while (found := pattern.search(self.output)) is None:
                await self._read_one()
        return int(found[1])

    async def until_exit(self, timeout: float = 10) -> guest.PtyExited:
        async with asyncio.timeout(timeout):
            while self.exited is None:
                await self._read_one()
        return self.exited

    async def _read_one(self) -> None:
        frame = await self.stream.read()
        if isinstance(frame, bytes):
            self.output += frame
        elif isinstance(frame, guest.PtyExited):
            self.exited = frame
        else:
            raise AssertionError(f"unexpected frame {frame!r}")

    async def close(self) -> None:
        await self.stream.close()


def alive(pid: int) -> bool:
    """Running, not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            raw = stat.read()
    except OSError:
        return False
    return raw[raw.rfind(b")") + 2 :].split()[0] != b"Z"


async def wait_gone(pid: int, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid):
        assert time.monotonic() < deadline, f"process {pid} is still alive"
        await asyncio.sleep(0.05)


async def test_create_attach_type_resize_and_exit(client: AgentClient, agent: Agent, workdir: Path) -> None:
    made = await client.call(
        guest.PtyCreate(id=0, session_id="t1", cols=100, rows=30, cwd=str(workdir), env={"GREETING": "hi"})
    )
    assert isinstance(made, guest.PtyResult), made
    info = made.session
    assert (info.session_id, info.cols, info.rows, info.cwd, info.active) == (
        "t1",
        100,
        30,
        str(workdir),
        True,
    )
    assert info.env == {"GREETING": "hi"} and info.ephemeral is False and info.pid is not None
    assert info.created_at.endswith("Z")

    term = await Term.open(agent, guest.PtyAttach(id=7, session_id="t1"))
    assert term.attached.session.clients == 1 and term.attached.id == 7
    await term.type("echo $GREETING-$TERM; pwd; stty size; echo D''ONE1\n")
    out = await term.expect(b"DONE1")
    assert b"hi-xterm-256color" in out and str(workdir).encode() in out and b"30 100" in out

    resized = await client.call(guest.PtyResize(id=0, session_id="t1", cols=132, rows=43))
    assert isinstance(resized, guest.PtyResult) and (resized.session.cols, resized.session.rows) == (132, 43)
    await term.type("stty size; echo D''ONE2\n")
    assert b"43 132" in (await term.expect(b"DONE2")).split(b"DONE1", 1)[1]

    # A resize on the stream itself (what the native WebSocket sends) is applied too.
    await term.stream.send_message(guest.PtyResize(id=0, session_id="t1", cols=90, rows=20))
    await term.type("stty size; echo D''ONE3\n")
    assert b"20 90" in (await term.expect(b"DONE3")).split(b"DONE2", 1)[1]

    await term.type("exit 3\n")
    assert (await term.until_exit()).exit_code == 3
    await term.close()
    # A session made by pty.create stays listed, inactive, with its exit code, until killed.
    got = await client.call(guest.PtyGet(id=0, session_id="t1"))
    assert isinstance(got, guest.PtyResult)
    assert (got.session.active, got.session.exit_code, got.session.clients) == (False, 3, 0)
    refused = await client.call(guest.PtyResize(id=0, session_id="t1", cols=10, rows=10))
    assert isinstance(refused, guest.Error) and refused.code == "conflict"
    _, again = await AgentStream.open(agent.socket_path, guest.PtyAttach(id=1, session_id="t1"))
    assert isinstance(again, guest.Error) and again.code == "conflict"
    killed = await client.call(guest.PtyKill(id=0, session_id="t1"))
    assert isinstance(killed, guest.PtyResult)
    gone = await client.call(guest.PtyGet(id=0, session_id="t1"))
    assert isinstance(gone, guest.Error) and gone.code == "not_found"


async def test_scrollback_is_replayed_and_persistent_sessions_outlive_clients(
    client: AgentClient, agent: Agent
) -> None:
    made = await client.call(guest.PtyCreate(id=0, session_id="keep"))
    assert isinstance(made, guest.PtyResult)
    first = await Term.open(agent, guest.PtyAttach(id=1, session_id="keep"))
    await first.type("echo MARK''ER-$((6*7)); sleep 1000 &\n")
    await first.expect(b"MARKER-42")
    await first.close()

    # No client is attached (once the agent has seen the detach), yet the shell lives on and
    # its output is kept.
    async def detached() -> list[tuple[str, bool, int]] | None:
        listed = await client.call(guest.PtyList(id=0))
        assert isinstance(listed, guest.PtyListResult)
        sessions = [(s.session_id, s.active, s.clients) for s in listed.sessions]
        return sessions if [c for _, _, c in sessions] == [0] else None

    assert await await_for(detached, what="the agent to see the client detach", timeout_s=10) == [
        ("keep", True, 0)
    ]
    second = await Term.open(agent, guest.PtyAttach(id=1, session_id="keep"))
    await second.expect(b"MARKER-42")  # the scrollback, before anything new is typed
    # Killing reaches every process of the terminal's session, background jobs included.
    pid = made.session.pid
    assert pid is not None
    await second.type("echo J''OB=$!\n")
    job = await second.number("JOB")
    killed = await client.call(guest.PtyKill(id=0, session_id="keep"))
    assert isinstance(killed, guest.PtyResult) and killed.session.active is False
    exited = await second.until_exit()
    assert exited.exit_code != 0
    await second.close()
    await wait_gone(pid)
    await wait_gone(job)


async def test_an_ephemeral_session_dies_with_its_last_client(client: AgentClient, agent: Agent) -> None:
    opener = guest.PtyAttach(id=1, session_id="eph", create=True, cols=50, rows=10, env={"X": "1"})
    term = await Term.open(agent, opener)
    info = term.attached.session
    assert info.ephemeral and (info.cols, info.rows, info.env) == (50, 10, {"X": "1"})
    second = await Term.open(agent, guest.PtyAttach(id=1, session_id="eph"))
    await term.type("sleep 1000 & echo B''G=$!\n")
    job = await term.number("BG")
    assert alive(job)
    await term.close()  # one client left: the session lives on

    async def one_client() -> bool:  # the agent has seen the detach, and done what it does
        got = await client.call(guest.PtyGet(id=0, session_id="eph"))
        return isinstance(got, guest.PtyResult) and got.session.clients == 1

    await await_for(one_client, what="the agent to see the first client detach", timeout_s=10)
    assert alive(job)
    await second.stream.end()  # an empty binary frame detaches too
    assert info.pid is not None
    await wait_gone(info.pid)
    await wait_gone(job)
    await second.close()
    # the session is forgotten once its pump thread has seen the shell end, a moment after
    # the processes are gone
    for _ in range(100):
        gone = await client.call(guest.PtyGet(id=0, session_id="eph"))
        if isinstance(gone, guest.Error):
            break
        await asyncio.sleep(0.05)
    assert isinstance(gone, guest.Error) and gone.code == "not_found"
    # An existing id cannot be created again.
    await client.call(guest.PtyCreate(id=0, session_id="dup"))
    _, taken = await AgentStream.open(agent.socket_path, guest.PtyAttach(id=1, session_id="dup", create=True))
    assert isinstance(taken, guest.Error) and taken.code == "conflict"


async def test_lazy_sessions_start_at_the_first_attach(client: AgentClient, agent: Agent) -> None:
    made = await client.call(guest.PtyCreate(id=0, session_id="lazy", lazy_start=True))
    assert isinstance(made, guest.PtyResult)
    assert (made.session.active, made.session.pid, made.session.lazy_start) == (False, None, True)
    term = await Term.open(agent, guest.PtyAttach(id=1, session_id="lazy"))
    assert term.attached.session.active and term.attached.session.pid is not None
    await term.type("exit 0\n")
    assert (await term.until_exit()).exit_code == 0
    await term.close()


async def test_cap_and_bad_input(client: AgentClient, agent: Agent, workdir: Path) -> None:
    bad = [
        guest.PtyCreate(id=0, session_id="no spaces"),
        guest.PtyCreate(id=0, session_id="x" * 129),
        guest.PtyCreate(id=0, cols=0),
        guest.PtyCreate(id=0, rows=1001),
        guest.PtyCreate(id=0, cwd=str(workdir / "missing")),
        guest.PtyCreate(id=0, env={"A=B": "c"}),
    ]
    for message in bad:
        reply = await client.call(message)
        assert isinstance(reply, guest.Error) and reply.code == "bad_request", (message, reply)
    for name in ("pty.get", "pty.kill", "pty.resize"):
        reply = await client.call(
            guest.decode_relayed(f'{{"t":"{name}","session_id":"nope","cols":1,"rows":1}}'.encode())
        )
        assert isinstance(reply, guest.Error) and reply.code == "not_found"
    for n in range(guest.PTY_MAX_SESSIONS):
        made = await client.call(guest.PtyCreate(id=0, session_id=f"s{n}", lazy_start=True))
        assert isinstance(made, guest.PtyResult), made
    full = await client.call(guest.PtyCreate(id=0, lazy_start=True))
    assert isinstance(full, guest.Error) and full.code == "conflict" and "kill one" in full.message
    assert isinstance(await client.call(guest.PtyKill(id=0, session_id="s0")), guest.PtyResult)
    assert isinstance(await client.call(guest.PtyCreate(id=0, lazy_start=True)), guest.PtyResult)


async def test_agent_shutdown_kills_every_terminal(start_agent: StartAgent) -> None:
    agent = start_agent(init=False)
    client = await wait_ready(agent.socket_path, timeout=10)
    made = await client.call(guest.PtyCreate(id=0, session_id="bye"))
    await client.close()
    assert isinstance(made, guest.PtyResult) and made.session.pid is not None
    agent.process.terminate()
    agent.process.wait(timeout=10)
    await wait_gone(made.session.pid)
    assert not os.path.exists(agent.socket_path)
