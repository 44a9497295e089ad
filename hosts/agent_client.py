"""hostd's client for the in-sandbox agent (the protocol is in ``contracts/guest.py``).

One ``AgentClient`` is one connection to one sandbox's agent socket, shared by every
concurrent request to that sandbox: each request gets the next id, its future waits in
``_pending``, and a single reader task hands each reply to the future with the same id.

Failure model:

* The connection dropping, or the agent breaking the protocol (a frame that does not decode,
  a binary frame, an oversize header, a reply of the wrong type), closes the connection and
  fails every pending request with ``AgentUnavailable``; the caller reconnects. A
  connection lost while an ``exec`` was in flight does not say whether the command ran.
* A request the agent rejects comes back as an ``error`` frame: ``call`` returns it (the
  relay hands it on), the typed helpers (``ping``, ``exec``) raise ``AgentError``; either way
  the connection stays usable.
* A request with no answer in time raises ``AgentUnavailable``; a late reply is dropped.
  Requests with a ``timeout_ms`` (``exec``, ``code.run``) wait that long plus
  ``EXEC_MARGIN``; the others ``CALL_TIMEOUT``.

The connect handshake retries while the socket is missing, refused or reset, because that is
what an agent that has not started listening yet looks like, under Cloud Hypervisor (the
muxer resets connections to an unbound port) as well as under the namespace runtime.

Versions. A connection hostd uses for requests is made by ``open`` (or ``wait_ready``, at
boot): after the ``CONNECT`` handshake it pings the agent and compares the pong's protocol
version with ``contracts.guest.PROTOCOL_VERSION``. Another version, or none, raises
``AgentIncompatible`` before any request is sent: a memory snapshot carries the agent of the
day it was taken, so a sandbox may outlive the hostd release it was made with. An agent that
does not answer the ping in time is ``AgentUnavailable``, as for any request; never a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import structlog

from contracts import guest
from hosts.errors import AgentError, AgentIncompatible, AgentUnavailable

log = structlog.get_logger("hosts.agent_client")

EXEC_MARGIN = 5.0
"""Seconds an ``exec`` reply may lag its ``timeout_ms``: the agent's kill, reap and reply."""
CALL_TIMEOUT = 30.0
"""Seconds to wait for the reply to a request that has no ``timeout_ms`` of its own."""
RETRY_FIRST = 0.001
RETRY_MAX = 0.002
"""Backoff between handshake attempts, doubling from RETRY_FIRST up to RETRY_MAX seconds.
Tight, because a boot waits here for the agent to start listening and every millisecond of
the last sleep is boot time; an attempt on a missing socket costs tens of microseconds."""

_NOT_LISTENING_YET = (
    FileNotFoundError,
    ConnectionRefusedError,
    ConnectionResetError,
    BrokenPipeError,
    asyncio.IncompleteReadError,
)

_Reply = TypeVar("_Reply", guest.Pong, guest.ExecResult)


def reply_wait(message: guest.HostToGuest) -> float:
    """Seconds to wait for the reply to ``message``: its own ``timeout_ms`` plus the margin
    for the agent's kill and reply, or ``CALL_TIMEOUT`` for requests without one."""
    timeout_ms = getattr(message, "timeout_ms", None)
    return CALL_TIMEOUT if timeout_ms is None else timeout_ms / 1000 + EXEC_MARGIN


class AgentClient:
    """A multiplexed connection to one agent. Create it with ``open`` or, at boot, ``wait_ready``
    (both check the agent's protocol version), or ``connect`` (unchecked)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str) -> None:
        self._reader = reader
        self._writer = writer
        self._name = name
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[asyncio.Future[Any], type[guest.GuestToHost]]] = {}
        self._closed = False
        self._reader_task = asyncio.create_task(self._read_replies(), name=f"agent-reader {name}")

    @classmethod
    async def connect(
        cls,
        socket_path: str | Path,
        *,
        port: int = guest.AGENT_PORT,
        timeout: float = 5.0,  # noqa: ASYNC109 — a bound on the retry loop, not just one await
    ) -> AgentClient:
        """Open the socket, do the ``CONNECT``/``OK`` handshake and start the reader task.

        Retries with a 1–2 ms backoff while the socket is missing, refused or reset, until
        ``timeout`` seconds have passed; then raises ``AgentUnavailable``.
        """
        name = f"{socket_path}:{port}"
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await open_channel(str(socket_path), port)
        except TimeoutError:
            raise AgentUnavailable(f"no agent answered on {name} within {timeout}s") from None
        except OSError as exc:
            raise AgentUnavailable(f"cannot reach the agent on {name}: {exc}") from exc
        return cls(reader, writer, name)

    @classmethod
    async def open(
        cls,
        socket_path: str | Path,
        *,
        timeout: float = 5.0,  # noqa: ASYNC109 — spans the handshake and the ping
    ) -> AgentClient:
        """``connect``, then ``handshake``: a connection checked to speak this hostd's protocol,
        within ``timeout`` seconds in all. Raises ``AgentUnavailable`` or ``AgentIncompatible``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        client = await cls.connect(socket_path, timeout=timeout)
        await client.handshake(timeout=max(0.0, deadline - loop.time()))
        return client

    async def handshake(self, *, timeout: float) -> guest.Pong:  # noqa: ASYNC109 — one ping's bound
        """Ping the agent and check its protocol version; return its pong. On any failure the
        connection is closed: ``AgentIncompatible`` for another version (or none),
        ``AgentUnavailable`` when no pong comes within ``timeout`` seconds."""
        try:
            pong = await self.ping(timeout=timeout)
            if pong.version != guest.PROTOCOL_VERSION:
                log.warning("agent speaks another protocol", agent=self._name, version=pong.version)
                raise AgentIncompatible(pong.version, guest.PROTOCOL_VERSION, pong.agent)
        except BaseException:
            await self.close()
            raise
        return pong

    @property
    def closed(self) -> bool:
        return self._closed

    async def call(
        self,
        message: guest.HostToGuest,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 — overrides the rule in reply_wait
    ) -> guest.GuestToHost:
        """Send any request and return the agent's reply: the request's reply type
        (``guest.REPLIES``) or an ``error``. The request's ``id`` is replaced by the next id of
        this connection. ``timeout`` defaults to ``reply_wait(message)``."""
        wait = reply_wait(message) if timeout is None else timeout
        return await self._call(
            lambda request_id: msgspec.structs.replace(message, id=request_id),
            guest.REPLIES[type(message)],
            wait,
        )

    async def ping(self, *, timeout: float = 2.0) -> guest.Pong:  # noqa: ASYNC109 — callers' one knob
        """Check that the agent is alive and learn its protocol version."""
        return _unwrap(await self.call(guest.Ping(id=0), timeout=timeout), guest.Pong)

    async def exec(
        self,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        timeout_ms: int = 60_000,
    ) -> guest.ExecResult:
        """Run ``argv`` in the sandbox to completion.

        The agent enforces ``timeout_ms`` itself (``timed_out=True`` in the result); this side
        waits ``EXEC_MARGIN`` seconds longer before giving up on the reply.
        """
        message = guest.Exec(id=0, argv=argv, env=env or {}, cwd=cwd, timeout_ms=timeout_ms)
        return _unwrap(await self.call(message), guest.ExecResult)

    async def close(self) -> None:
        """Close the connection and fail whatever is still pending. Idempotent."""
        self._reader_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader_task
        # a reader cancelled before its first step never runs its own cleanup
        self._shut(f"the connection to {self._name} was closed")
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

    async def _call(
        self, make: Callable[[int], msgspec.Struct], reply_type: type[guest.GuestToHost], wait: float
    ) -> guest.GuestToHost:
        """Send one request and wait for the reply with its id (``reply_type`` or an error).

        There is no ``drain``: requests are small and each caller waits for its reply anyway,
        and a write to a dead connection needs no handling here because the reader task sees
        the loss and fails every pending future, this one included.
        """
        if self._closed:
            raise AgentUnavailable(f"the connection to {self._name} is closed")
        request_id = next(self._ids)
        future: asyncio.Future[guest.GuestToHost] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (future, reply_type)
        try:
            self._writer.write(guest.encode(make(request_id)))
            async with asyncio.timeout(wait):
                return await future
        except TimeoutError:
            raise AgentUnavailable(f"the agent on {self._name} did not answer within {wait}s") from None
        finally:
            self._pending.pop(request_id, None)

    async def _read_replies(self) -> None:
        """The reader task: deliver replies until the connection ends, breaks the protocol or
        is closed; however it stops, every request still pending fails."""
        reason = f"the connection to {self._name} was closed"
        try:
            while True:
                self._deliver(await self._read_frame())
        except (asyncio.IncompleteReadError, ConnectionError):
            reason = f"the agent on {self._name} closed the connection"
        except _ProtocolViolation as exc:
            log.warning("agent broke the protocol", agent=self._name, reason=str(exc))
            reason = f"the agent on {self._name} broke the protocol: {exc}"
        finally:
            self._shut(reason)

    async def _read_frame(self) -> guest.GuestToHost:
        length, binary = guest.parse_header(await self._reader.readexactly(4))
        if binary:
            raise _ProtocolViolation("a binary frame, which no reply carries")
        if length > guest.MAX_JSON_FRAME:
            raise _ProtocolViolation(f"a {length}-byte JSON frame")
        payload = await self._reader.readexactly(length)
        try:
            return guest.decode_from_guest(payload)
        except msgspec.DecodeError as exc:
            raise _ProtocolViolation(f"an undecodable frame ({exc})") from None

    def _deliver(self, reply: guest.GuestToHost) -> None:
        """Resolve the future waiting for ``reply.id``; drop replies nobody waits for."""
        entry = self._pending.get(reply.id)
        if entry is None:
            log.info("dropped agent reply", agent=self._name, id=reply.id, type=type(reply).__name__)
            return
        future, expected = entry
        if not isinstance(reply, guest.Error | expected):
            raise _ProtocolViolation(f"{type(reply).__name__} in reply to a {expected.__name__} request")
        del self._pending[reply.id]
        if not future.done():  # else the caller was cancelled and has not unregistered yet
            future.set_result(reply)

    def _shut(self, reason: str) -> None:
        """Mark the connection closed, fail every pending request with ``AgentUnavailable(reason)``
        (one instance each, so their tracebacks stay apart) and drop the socket."""
        self._closed = True
        for future, _ in self._pending.values():
            if not future.done():
                future.set_exception(AgentUnavailable(reason))
        self._pending.clear()
        self._writer.close()


async def wait_ready(socket_path: str | Path, *, timeout: float) -> AgentClient:  # noqa: ASYNC109 — spans retries
    """Connect and ping until the agent answers; the runtime calls this after spawning a sandbox.

    A handshake that succeeds is not enough: the agent must also answer a request. Raises
    ``AgentUnavailable`` once ``timeout`` seconds have passed without a ``pong``, and
    ``AgentIncompatible`` at the first pong of another protocol version (retrying cannot
    change the agent's version).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        client = await AgentClient.connect(socket_path, timeout=max(0.0, deadline - loop.time()))
        try:
            await client.handshake(timeout=max(0.0, deadline - loop.time()))
        except AgentUnavailable:
            if loop.time() >= deadline:
                raise
            continue
        return client


def _unwrap(reply: guest.GuestToHost, expected: type[_Reply]) -> _Reply:
    """``reply`` as the expected type; an ``error`` reply raises ``AgentError``."""
    if isinstance(reply, guest.Error):
        raise AgentError(reply.code, reply.message)
    assert isinstance(reply, expected), "_deliver admits only the expected type or an error"
    return reply


class _ProtocolViolation(Exception):
    """The agent sent something the protocol does not allow; the connection is unusable."""


async def open_channel(socket_path: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the agent, after the handshake (retried until it succeeds; the
    caller's timeout bounds the loop). ``AgentStream`` opens its connections here too."""
    delay = RETRY_FIRST
    while True:
        try:
            return await _handshake(socket_path, port)
        except _NOT_LISTENING_YET:
            await asyncio.sleep(delay)
            delay = min(2 * delay, RETRY_MAX)


async def _handshake(socket_path: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Write ``CONNECT <port>`` and expect ``OK <n>``; the stream then carries frames."""
    with _short_path(socket_path) as path:
        reader, writer = await asyncio.open_unix_connection(path)
    try:
        writer.write(f"CONNECT {port}\n".encode())
        line = await reader.readuntil(b"\n")
        words = line.split()
        if len(words) != 2 or words[0] != b"OK" or not words[1].isdigit():
            raise AgentUnavailable(f"unexpected handshake reply {line[:64]!r} on {socket_path}")
    except BaseException:
        writer.close()
        raise
    return reader, writer


_SUN_PATH_MAX = 107
"""A Unix socket's address holds at most 107 bytes of path (108 with the final NUL)."""


@contextlib.contextmanager
def _short_path(socket_path: str) -> Iterator[str]:
    """``socket_path``, or the same socket reached through ``/proc/self/fd/<its directory>``
    when the path is longer than a socket address can hold: a state directory deep in a
    checkout (or a test's temporary directory) must not make sandboxes unreachable."""
    if len(os.fsencode(socket_path)) <= _SUN_PATH_MAX:
        yield socket_path
        return
    directory, name = os.path.split(socket_path)
    fd = os.open(directory or ".", os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{name}"
    finally:
        os.close(fd)
