"""``AgentClient`` against a scripted fake agent: the misbehaviour a real agent never shows.

The fake answers the handshake the way Cloud Hypervisor's muxer does (``OK`` with a local port
from 2^30 up, not the guest port), so the client is also shown not to depend on the number.
The protocol version check also runs against real agents, copies of ``guest/`` whose
``PROTOCOL_VERSION`` is changed: what a sandbox restored from an older image runs.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from contracts import guest
from hosts.agent_client import CALL_TIMEOUT, EXEC_MARGIN, AgentClient, reply_wait, wait_ready
from hosts.errors import AgentError, AgentIncompatible, AgentUnavailable
from tests.support import await_for

REPO = Path(__file__).resolve().parents[2]

Respond = Callable[[guest.HostToGuest], list[bytes]]


def pong(request: guest.HostToGuest) -> bytes:
    return guest.encode(guest.Pong(id=request.id, version=guest.PROTOCOL_VERSION, agent="fake"))


class FakeAgent:
    """Answers each request with whatever frames ``respond`` returns for it."""

    def __init__(
        self, respond: Respond, *, handshake_reply: bytes = b"OK 1073741824\n", refuse_first: int = 0
    ):
        self.respond = respond
        self.handshake_reply = handshake_reply
        self.refuse_first = refuse_first
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            if self.connections <= self.refuse_first:
                return  # hang up, as the muxer does while nothing listens on the port
            await reader.readuntil(b"\n")
            writer.write(self.handshake_reply)
            while True:
                length, _ = guest.parse_header(await reader.readexactly(4))
                request = guest.decode_from_host(await reader.readexactly(length))
                for frame in self.respond(request):
                    writer.write(frame)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


ServeFake = Callable[[FakeAgent], Awaitable[Path]]


async def arrived(seen: list[guest.HostToGuest], kind: type) -> None:
    """Wait until the fake agent has received a request of ``kind`` (recorded in ``seen``)."""

    async def there() -> bool:
        return any(isinstance(request, kind) for request in seen)

    await await_for(there, what=f"the fake agent to receive a {kind.__name__}", timeout_s=10)


@pytest.fixture
async def serve_fake() -> AsyncIterator[ServeFake]:
    directory = Path(tempfile.mkdtemp(prefix="dnah-fake-", dir="/tmp"))
    servers: list[asyncio.Server] = []

    async def serve(fake: FakeAgent) -> Path:
        path = directory / f"fake{len(servers)}.sock"
        servers.append(await asyncio.start_unix_server(fake.handle, path))
        return path

    yield serve
    for server in servers:
        server.close()
        await server.wait_closed()
    shutil.rmtree(directory, ignore_errors=True)


async def test_connect_retries_while_the_agent_hangs_up(serve_fake: ServeFake) -> None:
    fake = FakeAgent(lambda request: [pong(request)], refuse_first=3)
    client = await AgentClient.connect(await serve_fake(fake), timeout=2)
    try:
        assert fake.connections == 4
        assert (await client.ping()).agent == "fake"
    finally:
        await client.close()


async def test_a_garbage_handshake_reply_fails_at_once(serve_fake: ServeFake) -> None:
    path = await serve_fake(FakeAgent(lambda request: [], handshake_reply=b"HELLO\n"))
    started = time.monotonic()
    with pytest.raises(AgentUnavailable, match="unexpected handshake reply"):
        await AgentClient.connect(path, timeout=5)
    assert time.monotonic() - started < 1


async def test_an_error_frame_raises_agent_error_and_the_connection_lives(serve_fake: ServeFake) -> None:
    def respond(request: guest.HostToGuest) -> list[bytes]:
        if isinstance(request, guest.Exec):
            return [guest.encode(guest.Error(id=request.id, code="unsupported", message="not here"))]
        return [pong(request)]

    client = await AgentClient.connect(await serve_fake(FakeAgent(respond)))
    try:
        with pytest.raises(AgentError) as caught:
            await client.exec(["true"])
        assert caught.value.agent_code == "unsupported"
        assert not client.closed
        assert (await client.ping()).agent == "fake"
    finally:
        await client.close()


@pytest.mark.parametrize(
    "bad_reply",
    [
        pytest.param(
            lambda request: [(guest.BINARY_FLAG | 3).to_bytes(4, "big") + b"abc"], id="binary-frame"
        ),
        pytest.param(lambda request: [(guest.MAX_JSON_FRAME + 1).to_bytes(4, "big")], id="oversize-header"),
        pytest.param(lambda request: [(5).to_bytes(4, "big") + b"{oops"], id="undecodable"),
        pytest.param(lambda request: [pong(request)], id="wrong-reply-type"),
    ],
)
async def test_a_protocol_violation_fails_everything_pending(
    serve_fake: ServeFake, bad_reply: Respond
) -> None:
    seen: list[guest.HostToGuest] = []

    def respond(request: guest.HostToGuest) -> list[bytes]:
        seen.append(request)
        return bad_reply(request) if isinstance(request, guest.Exec) else []

    client = await AgentClient.connect(await serve_fake(FakeAgent(respond)))
    try:
        unanswered = asyncio.create_task(client.ping(timeout=10))
        await arrived(seen, guest.Ping)  # pending, unanswered, when the violation comes
        with pytest.raises(AgentUnavailable, match="broke the protocol"):
            await client.exec(["true"])
        with pytest.raises(AgentUnavailable):
            await unanswered
        assert client.closed
    finally:
        await client.close()


async def test_a_late_reply_is_dropped_and_the_connection_lives(serve_fake: ServeFake) -> None:
    held: list[guest.HostToGuest] = []

    def respond(request: guest.HostToGuest) -> list[bytes]:
        if not held:
            held.append(request)
            return []
        return [pong(held[0]), pong(request)]

    client = await AgentClient.connect(await serve_fake(FakeAgent(respond)))
    try:
        with pytest.raises(AgentUnavailable, match="did not answer"):
            await client.ping(timeout=0.05)
        second = await client.ping()
        assert second.id == held[0].id + 1
        assert not client.closed
    finally:
        await client.close()


async def test_close_fails_pending_calls(serve_fake: ServeFake) -> None:
    seen: list[guest.HostToGuest] = []

    def never_answer(request: guest.HostToGuest) -> list[bytes]:
        seen.append(request)
        return []

    client = await AgentClient.connect(await serve_fake(FakeAgent(never_answer)))
    pending = asyncio.create_task(client.exec(["sleep", "100"]))
    await arrived(seen, guest.Exec)  # sent and pending when the client closes
    await client.close()
    with pytest.raises(AgentUnavailable, match="closed"):
        await pending
    assert client.closed
    with pytest.raises(AgentUnavailable):
        await client.ping()


async def test_close_right_after_connect_returns(serve_fake: ServeFake) -> None:
    """The reader task has not run a single step yet; close must still tear down."""
    client = await AgentClient.connect(await serve_fake(FakeAgent(lambda request: [])))
    await asyncio.wait_for(client.close(), 2)
    assert client.closed


async def test_call_numbers_the_frame_and_returns_an_error_reply(serve_fake: ServeFake) -> None:
    """The relay's entry point: any request, the connection's own id, an ``error`` reply
    returned (not raised) so the relay can hand it on."""
    seen: list[guest.HostToGuest] = []

    def respond(request: guest.HostToGuest) -> list[bytes]:
        seen.append(request)
        if isinstance(request, guest.Dirs):
            return [guest.encode(guest.DirsResult(id=request.id, home="/h", work="/w", project="/p"))]
        return [guest.encode(guest.Error(id=request.id, code="not_found", message="no such thing"))]

    client = await AgentClient.connect(await serve_fake(FakeAgent(respond)))
    try:
        dirs = await client.call(guest.Dirs(id=777))
        assert dirs == guest.DirsResult(id=seen[0].id, home="/h", work="/w", project="/p")
        assert seen[0].id != 777
        error = await client.call(guest.Metrics(id=0))
        assert error == guest.Error(id=seen[1].id, code="not_found", message="no such thing")
        assert seen[1].id == seen[0].id + 1
        assert not client.closed
    finally:
        await client.close()


async def test_call_checks_the_reply_type_of_each_operation(serve_fake: ServeFake) -> None:
    def respond(request: guest.HostToGuest) -> list[bytes]:
        return [guest.encode(guest.DirsResult(id=request.id, home="/h", work="/w", project="/p"))]

    client = await AgentClient.connect(await serve_fake(FakeAgent(respond)))
    try:
        with pytest.raises(AgentUnavailable, match="DirsResult in reply to a MetricsResult request"):
            await client.call(guest.Metrics(id=0))
        assert client.closed
    finally:
        await client.close()


def test_reply_wait_follows_the_request_timeout() -> None:
    assert reply_wait(guest.Exec(id=0, argv=["true"], timeout_ms=1500)) == 1.5 + EXEC_MARGIN
    code = guest.CodeRun(id=0, language="python", code="", timeout_ms=120_000)
    assert reply_wait(code) == 120 + EXEC_MARGIN
    assert reply_wait(guest.Dirs(id=0)) == reply_wait(guest.Metrics(id=0)) == CALL_TIMEOUT


async def test_a_socket_deeper_than_a_socket_address_holds_is_reached(serve_fake: ServeFake) -> None:
    """A state directory deep in a checkout puts the agent's socket past the 107 bytes a Unix
    socket address holds; the client reaches it through its directory's descriptor."""
    short = await serve_fake(FakeAgent(lambda request: [pong(request)]))
    deep = short.parent / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    (deep / "agent.sock").symlink_to(short)  # connect() follows it, the path stays long
    assert len(str(deep / "agent.sock")) > 107
    client = await AgentClient.connect(deep / "agent.sock", timeout=5)
    try:
        assert (await client.ping()).agent == "fake"
    finally:
        await client.close()


# protocol versions ---------------------------------------------------------------------------


@pytest.fixture
def agent_of_version() -> Iterator[Callable[[int], Path]]:
    """Start a real agent from a copy of ``guest/`` that speaks the given protocol version;
    return its socket. Every agent started is stopped afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="dnah-ver-", dir="/tmp"))
    started: list[subprocess.Popen[bytes]] = []

    def start(version: int) -> Path:
        root = directory / str(version)
        shutil.copytree(REPO / "guest", root / "guest", ignore=shutil.ignore_patterns("__pycache__"))
        framing = root / "guest" / "framing.py"
        text, changed = re.subn(
            r"^PROTOCOL_VERSION = \d+$", f"PROTOCOL_VERSION = {version}", framing.read_text(), flags=re.M
        )
        assert changed == 1
        framing.write_text(text)
        socket_path = root / "agent.sock"
        argv = [sys.executable, "-S", "-m", "guest.agent", "--uds", str(socket_path)]
        started.append(subprocess.Popen(argv, env={"PYTHONPATH": str(root)}, cwd=root))
        return socket_path

    yield start
    for process in started:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize("delta", [-1, 1], ids=["older", "newer"])
async def test_wait_ready_refuses_an_agent_of_another_version(
    agent_of_version: Callable[[int], Path], delta: int
) -> None:
    """Refused at its first pong, not retried until the deadline (which would end in
    ``AgentUnavailable``); the message names both versions and the way out."""
    version = guest.PROTOCOL_VERSION + delta
    socket_path = agent_of_version(version)
    with pytest.raises(AgentIncompatible) as caught:
        await wait_ready(socket_path, timeout=120)
    assert (caught.value.agent_version, caught.value.host_version) == (version, guest.PROTOCOL_VERSION)
    message = str(caught.value)
    assert (
        f"speaks guest protocol {version} and this hostd speaks guest protocol {guest.PROTOCOL_VERSION}"
        in message
    )
    assert ("predates this hostd" if delta < 0 else "comes from a newer hostd") in message
    assert "Restore it on a hostd of its protocol, or recreate the sandbox" in message
    assert "dnah-guest/" in message
    # the agent is unharmed and is the one that answered: an unchecked connection still works
    client = await AgentClient.connect(socket_path, timeout=30)
    try:
        assert (await client.ping(timeout=30)).version == version
    finally:
        await client.close()


async def test_wait_ready_accepts_an_agent_of_this_version(agent_of_version: Callable[[int], Path]) -> None:
    """The same copy with the version unchanged passes: the refusals above are the version's."""
    client = await wait_ready(agent_of_version(guest.PROTOCOL_VERSION), timeout=120)
    try:
        assert (await client.exec(["true"])).exit_code == 0
    finally:
        await client.close()


async def test_open_refuses_another_version_and_closes_the_connection(serve_fake: ServeFake) -> None:
    """The controller's reconnect (``open``) checks like ``wait_ready`` and sends nothing else."""
    seen: list[guest.HostToGuest] = []

    def respond(request: guest.HostToGuest) -> list[bytes]:
        seen.append(request)
        return [guest.encode(guest.Pong(id=request.id, version=guest.PROTOCOL_VERSION - 3, agent="old"))]

    with pytest.raises(AgentIncompatible, match=f"guest protocol {guest.PROTOCOL_VERSION - 3} and"):
        await AgentClient.open(await serve_fake(FakeAgent(respond)), timeout=30)
    assert [type(request) for request in seen] == [guest.Ping]


async def test_a_pong_without_a_version_is_an_agent_older_than_the_check(serve_fake: ServeFake) -> None:
    def respond(request: guest.HostToGuest) -> list[bytes]:
        payload = b'{"t":"pong","agent":"dnah-guest/0.1.0","id":%d}' % request.id
        return [len(payload).to_bytes(4, "big") + payload]

    with pytest.raises(AgentIncompatible, match="speaks no protocol version") as caught:
        await wait_ready(await serve_fake(FakeAgent(respond)), timeout=30)
    assert caught.value.agent_version is None
    assert "(dnah-guest/0.1.0)" in str(caught.value)


async def test_open_accepts_this_version(serve_fake: ServeFake) -> None:
    client = await AgentClient.open(await serve_fake(FakeAgent(lambda request: [pong(request)])), timeout=30)
    try:
        assert not client.closed
        assert (await client.ping()).version == guest.PROTOCOL_VERSION
    finally:
        await client.close()


async def test_an_agent_that_never_answers_the_ping_is_unavailable_not_a_hang(serve_fake: ServeFake) -> None:
    """The handshake succeeds but no pong ever comes: ``AgentUnavailable`` at the deadline,
    by ``wait_ready`` (boot) and by ``open`` (reconnect)."""
    fake = FakeAgent(lambda request: [])
    path = await serve_fake(fake)
    with pytest.raises(AgentUnavailable, match="did not answer"):
        await asyncio.wait_for(wait_ready(path, timeout=0.3), timeout=60)
    with pytest.raises(AgentUnavailable, match="did not answer"):
        await asyncio.wait_for(AgentClient.open(path, timeout=0.3), timeout=60)
    assert fake.connections >= 2
