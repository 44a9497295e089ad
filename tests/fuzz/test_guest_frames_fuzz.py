"""Fuzz the agent channel's framing from both ends (the protocol is ``contracts/guest.py``).

Agent side: the real ``guest.agent.Connection`` (handshake, frame loop, request parsing in
``guest.framing``/``guest.requests``) serves one end of a socketpair in a thread; the test
writes hostile frames on the other end. Requests that parse are answered by stand-in
handlers, except ``dirs``, ``metrics`` and ``env.set``, which run for real: a fuzzer must not
run random commands or write random paths on the machine, and the handlers are not what is
fuzzed here. The agent must answer every frame (an ``error`` when it is not a valid
request), keep serving (a ``ping`` sent last is answered), and close the connection without
reading further when a header declares more than the protocol allows.

hostd side: the real ``AgentClient`` and ``AgentStream`` talk to a fake agent (a Unix socket
server) that answers the handshake and then sends hostile bytes. Each call must end with a
reply or ``AgentUnavailable``, never another exception and never a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import tempfile
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from contracts import guest
from guest import agent, framing
from hosts.agent_client import AgentClient
from hosts.agent_stream import AgentStream
from hosts.errors import AgentUnavailable
from tests.fuzz.profiles import fuzz
from tests.fuzz.shapes import to_json, values

IO_TIMEOUT = 20.0
"""Seconds any one read may block before the example counts as a hang."""
SENTINEL_ID = 987_654_321
REAL_HANDLERS = frozenset({"DirsRequest", "MetricsRequest", "EnvSetRequest"})
INT64 = range(-(2**63), 2**63)
DEEP_JSON = b"[" * 5000 + b"]" * 5000
"""Found by the long run: json's decoder raised RecursionError, which ended the agent's
connection instead of answering an ``error``."""


# frames -------------------------------------------------------------------------------------


def json_frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


def binary_frame(payload: bytes) -> bytes:
    return (len(payload) | guest.BINARY_FLAG).to_bytes(4, "big") + payload


request_payloads = st.one_of(
    values(guest.HostToGuest).map(to_json),
    values(guest.StreamOpener).map(to_json),
    values(guest.HostToGuest, valid=True).map(to_json),
    st.binary(max_size=64),
    st.sampled_from(
        [
            b"",
            b"{",
            b"[]",
            b"null",
            b'"x"',
            b'{"t":"ping"}',
            b'{"t":"ping","id":true}',
            b'{"t":"ping","id":1.0}',
            b'{"t":"ping","id":"1"}',
            b'{"t":"nope","id":1}',
            b'{"t":7,"id":1}',
            b'{"id":1}',
            b'{"t":"exec","id":1,"argv":"ls"}',
            b'{"t":"exec","id":1,"argv":[1]}',
            b'{"t":"dirs","id":1,"t":"dirs"}',
            b'{"t":"ping","id":1,"x":"\xff\xfe"}',
            b'{"t":"ping","id":1,"x":"\\ud800"}',
            b'{"t":"ping","id":' + b"9" * 400 + b"}",
            b'{"t":"ping","id":1}' + b" " * 100 + b"trailing",
            DEEP_JSON,
        ]
    ),
)
Frame = tuple[str, bytes]
frames = st.one_of(
    request_payloads.map(lambda p: ("json", p)),
    st.binary(max_size=300).map(lambda p: ("binary", p)),
)
violations = st.one_of(
    st.integers(guest.MAX_JSON_FRAME + 1, guest.LENGTH_MASK).map(
        lambda n: ("oversize", n.to_bytes(4, "big"))
    ),
    st.integers(framing.MAX_BINARY_FRAME + 1, guest.LENGTH_MASK).map(
        lambda n: ("oversize", (n | guest.BINARY_FLAG).to_bytes(4, "big"))
    ),
    st.tuples(st.integers(1, 5000), st.binary(max_size=100)).map(
        lambda t: ("truncated", t[0].to_bytes(4, "big") + t[1][: t[0] - 1])
    ),
    st.binary(min_size=1, max_size=3).map(lambda b: ("truncated", b)),
)


# the agent end --------------------------------------------------------------------------------


@pytest.fixture
def stand_in_handlers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Handlers that answer without acting, but for the harmless ``REAL_HANDLERS``."""
    real = agent._handler

    def handler(table: dict[str, tuple[str, str]], request: Any) -> Any:
        if type(request).__name__ in REAL_HANDLERS:
            return real(table, request)
        if table is agent._STREAMS:

            def refuse_stream(request: Any, conn: agent.Connection, _env: dict[str, str]) -> None:
                conn.send(framing.error(request.id, "unsupported", "not run by the fuzzer"))
                conn.close()

            return refuse_stream
        return lambda request, _env: framing.error(request.id, "unsupported", "not run by the fuzzer")

    monkeypatch.setattr(agent, "_handler", handler)


@contextlib.contextmanager
def agent_connection() -> Iterator[tuple[socket.socket, threading.Thread]]:
    """One end of a socketpair served by a real ``Connection`` in a thread, after the handshake."""
    ours, theirs = socket.socketpair()
    ours.settimeout(IO_TIMEOUT)
    thread = threading.Thread(target=agent.Connection(theirs, {"PATH": "/usr/bin"}).serve, daemon=True)
    thread.start()
    try:
        ours.sendall(b"CONNECT 52\n")
        assert _read_line(ours) == b"OK 52\n"
        yield ours, thread
    finally:
        ours.close()
        thread.join(IO_TIMEOUT)
        assert not thread.is_alive(), "the agent's connection thread hung"


def _read_line(sock: socket.socket) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        byte = sock.recv(1)
        if not byte:
            return line
        line += byte
    return line


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


def read_reply(sock: socket.socket) -> dict[str, Any] | None:
    """The agent's next JSON reply, or None at EOF. Every reply must be a valid frame that
    hostd can decode (when its id is one hostd could have sent)."""
    header = _recv_exact(sock, 4)
    if header is None:
        return None
    length, binary = guest.parse_header(header)
    assert not binary, "the agent sent a binary frame outside a stream"
    assert length <= guest.MAX_JSON_FRAME
    payload = _recv_exact(sock, length)
    assert payload is not None, "a reply cut short"
    reply: dict[str, Any] = msgspec.json.decode(payload)
    if reply["id"] in INT64:
        guest.decode_from_guest(payload)
    return reply


def expected_id(payload: bytes) -> int:
    try:
        return framing.parse_request(payload).id
    except framing.BadRequest as exc:
        return exc.request_id


def opens_stream(payload: bytes) -> bool:
    try:
        return type(framing.parse_request(payload)).__name__ in agent._STREAMS
    except framing.BadRequest:
        return False


@fuzz(120)
@given(st.lists(frames, max_size=8))
@example([("json", DEEP_JSON), ("json", b'{"t":"dirs","id":3}')])
def test_the_agent_answers_every_frame_and_keeps_serving(stand_in_handlers: None, sent: list[Frame]) -> None:
    with agent_connection() as (sock, _):
        expected: list[int] = []
        for i, (kind, payload) in enumerate(sent):
            if kind == "binary":
                sock.sendall(binary_frame(payload))
                expected.append(0)
                continue
            sock.sendall(json_frame(payload))
            expected.append(expected_id(payload))
            if i == 0 and opens_stream(payload):
                event("a stream opener first")
                assert read_reply(sock) is not None
                assert read_reply(sock) is None, "a refused stream must end its connection"
                return
        sock.sendall(json_frame(to_json({"t": "ping", "id": SENTINEL_ID})))
        replies = [read_reply(sock) for _ in range(len(expected) + 1)]
        assert None not in replies, "the agent hung up on a well-framed frame"
        pong = [r for r in replies if r is not None and r["t"] == "pong" and r["id"] == SENTINEL_ID]
        assert pong, "the agent stopped serving"
        got = sorted(r["id"] for r in replies if r is not None)
        assert got == sorted([*expected, SENTINEL_ID]), (got, expected)
        event(f"{sum(r['t'] == 'error' for r in replies if r)} errors")


@fuzz(60)
@given(st.lists(frames, max_size=3), violations)
def test_the_agent_closes_on_a_broken_frame(
    stand_in_handlers: None, sent: list[Frame], violation: tuple[str, bytes]
) -> None:
    kind, data = violation
    with agent_connection() as (sock, _):
        for i, (frame_kind, payload) in enumerate(sent):
            if frame_kind == "json" and i == 0 and opens_stream(payload):
                return  # covered above: the stream owns the connection
            sock.sendall(binary_frame(payload) if frame_kind == "binary" else json_frame(payload))
        sock.sendall(data)
        if kind == "truncated":
            sock.shutdown(socket.SHUT_WR)  # the frame never completes
        for _ in range(len(sent) + 1):
            if read_reply(sock) is None:
                return
        raise AssertionError("the agent answered past a broken frame")


@fuzz(100)
@given(
    st.one_of(st.binary(max_size=80), st.sampled_from([b"CONNECT 52", b"connect 52\n", b" CONNECT  52 \n"]))
)
def test_the_handshake_accepts_only_connect_52(first: bytes) -> None:
    ours, theirs = socket.socketpair()
    ours.settimeout(IO_TIMEOUT)
    thread = threading.Thread(target=agent.Connection(theirs, {}).serve, daemon=True)
    thread.start()
    try:
        ours.sendall(first)
        ours.shutdown(socket.SHUT_WR)
        answer = _read_line(ours)
        line = first.split(b"\n", 1)[0]
        words = line.split()
        ok = first.count(b"\n") >= 1 and len(line) < agent.HANDSHAKE_MAX
        ok = ok and len(words) == 2 and words[0].upper() == b"CONNECT"
        ok = ok and words[1].isdigit() and int(words[1]) == guest.AGENT_PORT
        assert answer == (b"OK 52\n" if ok else b""), (first, answer)
    finally:
        ours.close()
        thread.join(IO_TIMEOUT)
        assert not thread.is_alive()


@pytest.mark.parametrize(
    "header",
    [
        guest.LENGTH_MASK.to_bytes(4, "big"),
        (guest.MAX_JSON_FRAME + 1).to_bytes(4, "big"),
        (guest.LENGTH_MASK | guest.BINARY_FLAG).to_bytes(4, "big"),
        (framing.MAX_BINARY_FRAME + 1 | guest.BINARY_FLAG).to_bytes(4, "big"),
    ],
    ids=["2GiB-json", "16MiB+1-json", "2GiB-binary", "1MiB+1-binary"],
)
def test_a_huge_declared_length_is_refused_before_allocation(header: bytes) -> None:
    tracemalloc.start()
    try:
        with agent_connection() as (sock, _):
            sock.sendall(header)
            assert read_reply(sock) is None  # closed without waiting for the payload
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024, f"{peak} bytes allocated for a refused frame"


def _agrees(payload: bytes) -> bool:
    """Whether the agent accepts ``payload`` whenever hostd's own decoder does, as the same
    request (hostd only ever sends what ``contracts.guest`` encodes)."""
    try:
        decoded = msgspec.json.decode(payload, type=guest.HostToGuest | guest.StreamOpener)
    except msgspec.DecodeError:
        event("hostd refuses too")
        return True
    event("valid request")
    try:
        parsed = framing.parse_request(payload)
    except framing.BadRequest:
        return False
    return parsed.id == decoded.id


@fuzz(300)
@given(
    st.one_of(values(guest.HostToGuest), values(guest.StreamOpener), values(guest.HostToGuest, valid=True))
)
def test_the_agent_accepts_every_request_hostd_can_send(message: object) -> None:
    """The agent restates ``contracts.guest`` by hand (stdlib only): whatever hostd can send,
    the agent must parse."""
    payload = to_json(message)
    assert _agrees(payload), f"the agent refuses what hostd sends: {payload!r}"


@pytest.mark.parametrize(
    "payload",
    [
        b'{"t":"exec","id":1,"argv":[]}',
        b'{"t":"exec","id":1,"argv":["true"],"timeout_ms":0}',
        b'{"t":"code.run","id":1,"language":"python","code":"1","timeout_ms":0}',
        b'{"t":"code.run","id":1,"language":"python","code":"1","timeout_ms":-1}',
        b'{"t":"session.exec","id":1,"session_id":"s","command":"true","timeout_ms":-1}',
    ],
)
def test_what_the_agent_refuses_hostd_refuses_too(payload: bytes) -> None:
    """Found by the fuzzer above: the contract once accepted these and the agent did not."""
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(payload, type=guest.HostToGuest | guest.StreamOpener)
    with pytest.raises(framing.BadRequest):
        framing.parse_request(payload)


# the hostd end --------------------------------------------------------------------------------


replies_from_agent = st.one_of(
    values(guest.GuestToHost, valid=True).map(lambda reply: to_json({**reply, "id": 1})),
    values(guest.StreamReply, valid=True).map(lambda reply: to_json({**reply, "id": 1})),
    values(guest.GuestToHost).map(to_json),
    values(guest.StreamReply).map(to_json),
    st.binary(max_size=64),
    st.sampled_from([b"{", b"[]", b'{"t":"pong","id":1,"version":"8","agent":1}', b'{"t":"what","id":1}']),
)
hostile_streams = st.lists(
    st.one_of(
        replies_from_agent.map(json_frame),
        st.binary(max_size=200).map(binary_frame),
        st.integers(guest.MAX_JSON_FRAME + 1, guest.LENGTH_MASK).map(lambda n: n.to_bytes(4, "big")),
        st.binary(min_size=1, max_size=7),
    ),
    max_size=5,
).map(b"".join)


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="dnah-fz-", dir="/tmp"))  # short: a socket path is 108 bytes at most
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def _fake_agent(path: Path, answer: bytes, *, after_request: bool) -> asyncio.Server:
    """A socket that does the handshake, then (after the first request frame, if asked) sends
    ``answer`` and hangs up."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\n")
            writer.write(b"OK 52\n")
            if after_request:
                length, _ = guest.parse_header(await reader.readexactly(4))
                await reader.readexactly(length)
            writer.write(answer)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    return await asyncio.start_unix_server(serve, path=str(path))


@fuzz(150)
@given(hostile_streams)
def test_hostd_fails_one_call_cleanly_on_hostile_agent_bytes(socket_dir: Path, answer: bytes) -> None:
    async def run() -> None:
        path = socket_dir / "agent.sock"
        path.unlink(missing_ok=True)
        server = await _fake_agent(path, answer, after_request=True)
        try:
            async with asyncio.timeout(IO_TIMEOUT):
                client = await AgentClient.connect(path, timeout=IO_TIMEOUT)
                try:
                    reply = await client.call(guest.Ping(id=0), timeout=IO_TIMEOUT)
                    assert isinstance(reply, guest.Pong | guest.Error)
                    event("a reply")
                except AgentUnavailable as exc:
                    assert "did not answer within" not in str(exc), (
                        "the agent hung up; the client must see it"
                    )
                    assert client.closed
                    with pytest.raises(AgentUnavailable):
                        await client.call(guest.Ping(id=0))
                    event("unavailable")
                finally:
                    await client.close()
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(run())


@fuzz(100)
@given(hostile_streams)
def test_hostd_streams_end_cleanly_on_hostile_agent_bytes(socket_dir: Path, answer: bytes) -> None:
    async def run() -> None:
        path = socket_dir / "agent.sock"
        path.unlink(missing_ok=True)
        server = await _fake_agent(path, answer, after_request=True)
        try:
            async with asyncio.timeout(IO_TIMEOUT):
                try:
                    stream, first = await AgentStream.open(path, guest.FsRead(id=1, path="/f"))
                except AgentUnavailable:
                    event("refused at open")
                    return
                # any reply type: the caller checks it (hosts/transfers.py ``_expect``)
                assert isinstance(first, guest.StreamReply)
                try:
                    for _ in range(10):
                        frame = await stream.read()
                        assert isinstance(frame, bytes | guest.StreamReply)
                except AgentUnavailable:
                    event("ended with AgentUnavailable")
                finally:
                    await stream.close()
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(run())
