"""A client for QEMU's machine protocol (QMP), over the Unix socket of ``-qmp unix:…``.

QMP is JSON lines: QEMU greets with ``{"QMP": {"version": …}}``, the client must send
``qmp_capabilities`` before anything else, and then every ``{"execute": …, "id": n}`` is
answered by one ``{"return": …, "id": n}`` or ``{"error": {"class", "desc"}, "id": n}``, while
asynchronous ``{"event": …}`` lines (``STOP``, ``RESUME``, ``SHUTDOWN``, ``MIGRATION`` …) may
arrive at any time between them. One reader task owns the socket's input: it matches answers
to their waiting commands by id and hands events to whoever listens. When the socket closes
(QEMU exited) every waiter fails with ``QmpClosed``, so nobody waits for an answer that
cannot come.

QEMU serves one QMP client per socket at a time; a client that disconnects (a hostd that
died) frees it for the next, which is how a restarted hostd adopts a running VM.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from hosts.errors import RuntimeFailure

_LIMIT = 1 << 24
"""Longest QMP line accepted (``query-*`` answers are a few KB; this is far above)."""
_RETRY = 0.02


class QmpError(RuntimeFailure):
    """QEMU refused a command: ``error_class`` is QMP's (``GenericError``, ``CommandNotFound`` …)."""

    def __init__(self, command: str, error_class: str, desc: str) -> None:
        super().__init__(f"QMP {command}: {desc} ({error_class})")
        self.error_class = error_class
        self.desc = desc


class QmpClosed(RuntimeFailure):
    """The QMP connection ended (QEMU exited, or ``close`` was called)."""


class Events:
    """The events that arrive while it is open (``Qmp.events``), in order."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    def _put(self, event: dict[str, Any] | None) -> None:
        self._queue.put_nowait(event)

    async def wait(self, *names: str, timeout: float) -> dict[str, Any]:  # noqa: ASYNC109 — one deadline for the loop
        """The next event named one of ``names`` (the others are skipped).

        Raises:
            QmpClosed: the connection ended first.
            TimeoutError: none came within ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout):
            while True:
                event = await self._queue.get()
                if event is None:
                    self._queue.put_nowait(None)  # every later wait fails too
                    raise QmpClosed(f"QMP connection closed while waiting for {'/'.join(names)}")
                if event.get("event") in names:
                    return event


class Qmp:
    """One QMP session. Build it with ``await Qmp.connect(path)``; ``close`` when done."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, greeting: dict[str, Any]):
        self.greeting = greeting
        """QEMU's greeting: ``{"version": {"qemu": {"major", "minor", "micro"}, …}, …}``."""
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._listeners: set[Events] = set()
        self._write_lock = asyncio.Lock()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        """Done once the connection has ended, for whatever reason."""
        self._task = asyncio.ensure_future(self._read())

    @classmethod
    async def connect(cls, path: Path, *, timeout: float = 10.0) -> Qmp:  # noqa: ASYNC109 — spans retries
        """Connect to QEMU's QMP socket, retrying while it does not exist or refuses (QEMU is
        still starting), read the greeting and negotiate capabilities.

        Raises:
            RuntimeFailure: nothing accepted within ``timeout``, or the peer is not QMP.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(str(path), limit=_LIMIT)
                break
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                if loop.time() >= deadline:
                    message = f"QMP socket {path} did not accept within {timeout}s: {exc}"
                    raise RuntimeFailure(message) from None
                await asyncio.sleep(_RETRY)
        try:
            async with asyncio.timeout(max(0.1, deadline - loop.time())):
                line = await reader.readline()
            greeting = json.loads(line)["QMP"]
        except (TimeoutError, ValueError, KeyError, TypeError, OSError) as exc:
            writer.close()
            raise RuntimeFailure(f"no QMP greeting on {path}: {exc!r}") from None
        qmp = cls(reader, writer, greeting)
        try:
            await qmp.execute("qmp_capabilities", timeout=max(0.1, deadline - loop.time()))
        except BaseException:
            await qmp.close()
            raise
        return qmp

    @property
    def version(self) -> str:
        """QEMU's version as ``major.minor.micro`` (plus the distribution's ``package``)."""
        qemu = self.greeting["version"]["qemu"]
        package = self.greeting["version"].get("package", "").strip()
        number = f"{qemu['major']}.{qemu['minor']}.{qemu['micro']}"
        return f"{number} {package}" if package else number

    async def execute(
        self,
        command: str,
        arguments: Mapping[str, object] | None = None,
        *,
        timeout: float = 30.0,  # noqa: ASYNC109 — the answer's deadline, not the caller's
    ) -> Any:
        """Run ``command`` and return its ``return`` value. Arguments are a mapping, since most
        QMP argument names (``max-bandwidth``) are not Python identifiers.

        Raises:
            QmpError: QEMU answered with an error.
            QmpClosed: the connection ended before the answer.
            TimeoutError: no answer within ``timeout`` seconds.
        """
        if self.closed.done():
            raise QmpClosed(f"QMP connection closed; cannot run {command}")
        ident = next(self._ids)
        message: dict[str, object] = {"execute": command, "id": ident}
        if arguments:
            message["arguments"] = dict(arguments)
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[ident] = answer
        try:
            async with self._write_lock:
                self._writer.write(json.dumps(message).encode() + b"\n")
                await self._writer.drain()
            async with asyncio.timeout(timeout):
                reply = await answer
        except (ConnectionError, BrokenPipeError) as exc:
            raise QmpClosed(f"QMP connection lost while running {command}: {exc}") from None
        finally:
            self._pending.pop(ident, None)
        if "error" in reply:
            error = reply["error"]
            raise QmpError(command, error.get("class", "?"), error.get("desc", "?"))
        return reply.get("return")

    @contextlib.contextmanager
    def events(self) -> Iterator[Events]:
        """Listen to events from now on (open it *before* the command that causes them)."""
        listener = Events()
        if self.closed.done():
            listener._put(None)
        self._listeners.add(listener)
        try:
            yield listener
        finally:
            self._listeners.discard(listener)

    async def close(self) -> None:
        """End the session (QEMU keeps running); idempotent."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

    async def _read(self) -> None:
        try:
            while line := await self._reader.readline():
                try:
                    message = json.loads(line)
                except ValueError:
                    continue  # not JSON: nothing QMP would send; skip rather than die
                if "event" in message:
                    for listener in self._listeners:
                        listener._put(message)
                elif (waiter := self._pending.get(message.get("id"))) is not None and not waiter.done():
                    waiter.set_result(message)
        except (OSError, ValueError):
            pass  # the connection broke: same as its end
        finally:
            closed = QmpClosed("QMP connection closed")
            for waiter in self._pending.values():
                if not waiter.done():
                    waiter.set_exception(closed)
            for listener in self._listeners:
                listener._put(None)
            if not self.closed.done():
                self.closed.set_result(None)
