"""Persistent shell sessions in the real guest agent (a subprocess), driven by ``AgentClient``."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from contracts import guest
from hosts.agent_client import AgentClient
from tests.support import await_for, wait_for

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=[False, True], ids=["plain", "init"])
def agent_socket(request: pytest.FixtureRequest) -> Iterator[Path]:
    """An agent in each mode: plain, and ``--init`` (the server is a forked child of PID 1's
    stand-in, which reaps what the sessions leave orphaned)."""
    workdir = Path(tempfile.mkdtemp(prefix="dnah-sess-", dir="/tmp"))
    socket_path = workdir / "agent.sock"
    process = subprocess.Popen(
        [
            sys.executable,
            "-S",
            "-m",
            "guest.agent",
            "--uds",
            str(socket_path),
            *(["--init"] if request.param else []),
        ],
        env={"PYTHONPATH": str(REPO)},
        cwd=workdir,
    )
    wait_for(socket_path.exists, what=f"the agent to listen on {socket_path}", timeout_s=10)
    yield socket_path
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
async def client(agent_socket: Path) -> AsyncIterator[AgentClient]:
    client = await AgentClient.connect(agent_socket)
    yield client
    await client.close()


async def ask(client: AgentClient, message: guest.HostToGuest) -> guest.GuestToHost:
    return await client.call(message)


async def create(
    client: AgentClient, session_id: str | None = None, cwd: str | None = None
) -> guest.SessionInfo:
    reply = await ask(client, guest.SessionCreate(id=0, session_id=session_id, cwd=cwd))
    assert isinstance(reply, guest.SessionResult), reply
    return reply.session


async def run(
    client: AgentClient, sid: str, command: str, *, timeout_ms: int = 10_000, run_async: bool = False
) -> guest.SessionCommandInfo:
    reply = await ask(
        client,
        guest.SessionExec(id=0, session_id=sid, command=command, timeout_ms=timeout_ms, run_async=run_async),
    )
    assert isinstance(reply, guest.SessionCommandResult), reply
    return reply.command


async def get(client: AgentClient, sid: str, *, output: bool = False) -> guest.SessionInfo:
    reply = await ask(client, guest.SessionGet(id=0, session_id=sid, output=output))
    assert isinstance(reply, guest.SessionResult), reply
    return reply.session


async def gone(marker: str, timeout_s: float = 5.0) -> bool:
    """Whether every process whose command line has ``marker`` is gone within ``timeout_s``
    (SIGKILL is delivered, not instantaneous, on a loaded machine)."""
    deadline = time.monotonic() + timeout_s
    while processes_of(marker):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def processes_of(marker: str) -> list[int]:
    """Pids whose command line contains ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
                state = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()[0]
            except OSError:
                continue
            if marker.encode() in cmdline and state != "Z":
                found.append(int(entry))
    return found


async def test_cd_and_export_persist_and_streams_are_separate(client: AgentClient) -> None:
    info = await create(client, "s1", cwd="/tmp")
    assert (info.session_id, info.cwd, info.alive) == ("s1", "/tmp", True)
    first = await run(client, "s1", "cd /usr && export GREETING=hi; X=local")
    assert (first.exit_code, first.cwd) == (0, "/usr")
    out = await run(
        client, "s1", 'echo "$GREETING $X"; pwd; echo oops >&2; printf no-newline; exit_code=3; false'
    )
    assert (out.stdout, out.stderr, out.exit_code, out.cwd) == (
        "hi local\n/usr\nno-newline",
        "oops\n",
        1,
        "/usr",
    )
    reads = await run(client, "s1", "cat; echo read-nothing")
    assert (reads.stdout, reads.exit_code) == ("read-nothing\n", 0)
    broken = await run(client, "s1", 'echo "unterminated')
    assert broken.exit_code == 2 and broken.stderr.startswith("bash: line 1: unexpected EOF")
    assert (await run(client, "s1", "echo still here")).stdout == "still here\n"

    history = await get(client, "s1", output=True)
    assert [c.command_id for c in history.commands][:1] == [first.command_id]
    assert history.commands[1].stdout == "hi local\n/usr\nno-newline"
    assert history.cwd == "/usr"

    taken = await ask(client, guest.SessionCreate(id=0, session_id="s1"))
    assert isinstance(taken, guest.Error) and taken.code == "conflict"
    missing = await ask(client, guest.SessionExec(id=0, session_id="nope", command="true"))
    assert isinstance(missing, guest.Error) and missing.code == "not_found"
    listed = await ask(client, guest.SessionList(id=0))
    assert isinstance(listed, guest.SessionListResult)
    assert [s.session_id for s in listed.sessions] == ["s1"]


async def test_huge_output_is_capped(client: AgentClient) -> None:
    sid = (await create(client)).session_id
    big = await run(client, sid, "head -c 3000000 /dev/zero | tr '\\0' a; echo done >&2")
    assert (len(big.stdout), big.stderr, big.exit_code) == (1024 * 1024, "done\n", 0)


async def test_timeout_kills_the_command_not_the_shell(client: AgentClient) -> None:
    sid = (await create(client)).session_id
    await run(client, sid, "cd /tmp; sleep 444 > /dev/null 2>&1 &")  # a background job, spared
    started = time.monotonic()
    slow = await run(client, sid, "echo before; sleep 555; echo after", timeout_ms=500)
    assert time.monotonic() - started < 5
    assert (slow.timed_out, slow.exit_code, slow.stdout) == (True, -9, "before\n")
    assert await gone("sleep 555")
    assert processes_of("sleep 444") != [], "an earlier background job is not the command's"
    after = await run(client, sid, "pwd")
    assert (after.stdout, after.exit_code, after.timed_out) == ("/tmp\n", 0, False)
    spin = await run(client, sid, "while :; do :; done; echo after", timeout_ms=300)
    assert (spin.timed_out, spin.exit_code, spin.stdout) == (True, -9, "")
    assert (await get(client, sid)).alive
    assert (await run(client, sid, "echo alive")).stdout == "alive\n"
    await ask(client, guest.SessionDelete(id=0, session_id=sid))
    assert await gone("sleep 444")


async def test_async_commands_and_logs(client: AgentClient) -> None:
    sid = (await create(client)).session_id
    started = await run(
        client, sid, "echo one; sleep 0.5; echo two >&2; exit_code=0; (exit 4)", run_async=True
    )
    assert started.exit_code is None
    cid = started.command_id
    reply = await ask(client, guest.SessionCommand(id=0, session_id=sid, command_id=cid))
    assert isinstance(reply, guest.SessionCommandResult) and reply.command.exit_code is None
    for _ in range(100):
        reply = await ask(client, guest.SessionLogs(id=0, session_id=sid, command_id=cid))
        assert isinstance(reply, guest.SessionCommandResult)
        if reply.command.exit_code is not None:
            break
        await asyncio.sleep(0.05)
    assert (reply.command.stdout, reply.command.stderr, reply.command.exit_code) == ("one\n", "two\n", 4)
    # a command sent while another runs waits its turn
    await run(client, sid, "sleep 0.3; echo A", run_async=True)
    assert (await run(client, sid, "echo B")).stdout == "B\n"
    missing = await ask(client, guest.SessionLogs(id=0, session_id=sid, command_id="nope"))
    assert isinstance(missing, guest.Error) and missing.code == "not_found"


async def test_exit_ends_the_session(client: AgentClient) -> None:
    sid = (await create(client)).session_id
    done = await run(client, sid, "echo bye; exit 7")
    assert (done.exit_code, done.stdout) == (7, "bye\n")
    assert not (await get(client, sid)).alive
    refused = await ask(client, guest.SessionExec(id=0, session_id=sid, command="true"))
    assert isinstance(refused, guest.Error) and refused.code == "bad_request"


async def test_delete_kills_the_shell_and_everything_it_started(client: AgentClient) -> None:
    sid = (await create(client)).session_id
    await run(client, sid, "sleep 661 & setsid sleep 662 & (sleep 663 &) ; true")
    await run(client, sid, "sleep 664", run_async=True)

    async def all_running() -> bool:
        return all(processes_of(f"sleep 66{n}") for n in range(1, 5))

    await await_for(all_running, what="the four sleeps to start", timeout_s=10)
    reply = await ask(client, guest.SessionDelete(id=0, session_id=sid))
    assert isinstance(reply, guest.SessionResult)
    assert [await gone(f"sleep 66{n}") for n in range(1, 5)] == [True] * 4, [
        processes_of(f"sleep 66{n}") for n in range(1, 5)
    ]
    forgotten = await ask(client, guest.SessionGet(id=0, session_id=sid))
    assert isinstance(forgotten, guest.Error) and forgotten.code == "not_found"


async def test_the_last_100_commands_are_kept(client: AgentClient) -> None:
    sid = (await create(client)).session_id
    first = await run(client, sid, "echo 0")
    for n in range(1, 105):
        # A few async ones at the end (queued behind each other, well under MAX_QUEUED even
        # on a slow machine), the rest one at a time.
        await run(client, sid, f"echo {n}", run_async=100 <= n < 104)
    history = await get(client, sid, output=True)
    assert len(history.commands) == 100
    assert [c.stdout for c in history.commands[-2:]] == ["103\n", "104\n"]
    gone = await ask(client, guest.SessionLogs(id=0, session_id=sid, command_id=first.command_id))
    assert isinstance(gone, guest.Error) and gone.code == "not_found"
