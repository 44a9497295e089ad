"""Byte pipes the egress proxy splices: a plain asyncio stream, and the sandbox's side of a TLS
connection the proxy terminates (``ssl.SSLObject`` over memory BIOs, so the ClientHello bytes
already read to find the SNI are handed to the handshake instead of being lost)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from typing import Protocol, TypeVar

CHUNK = 64 * 1024
_T = TypeVar("_T")


class Pipe(Protocol):
    async def read(self) -> bytes: ...
    async def write(self, data: bytes) -> None: ...
    async def write_eof(self) -> None: ...
    async def close(self) -> None: ...


class StreamPipe:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def read(self) -> bytes:
        return await self.reader.read(CHUNK)

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def write_eof(self) -> None:
        if self.writer.can_write_eof() and not self.writer.is_closing():
            with contextlib.suppress(OSError):
                self.writer.write_eof()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await self.writer.wait_closed()


class TlsServerPipe:
    """The server end of TLS over an accepted stream; ``received`` is what was read already."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        context: ssl.SSLContext,
        received: bytes,
    ) -> None:
        self._reader, self._writer = reader, writer
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._in, self._out, server_side=True)
        self._in.write(received)

    async def handshake(self) -> None:
        await self._call(self._tls.do_handshake)

    async def read(self) -> bytes:
        try:
            return await self._call(self._tls.read, CHUNK)
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return b""

    async def write(self, data: bytes) -> None:
        await self._call(self._tls.write, data)

    async def write_eof(self) -> None:
        """Send close_notify without waiting for the peer's (the other direction may still be
        reading: only one coroutine may wait on the stream)."""
        with contextlib.suppress(ssl.SSLWantReadError, ssl.SSLError):
            self._tls.unwrap()
        with contextlib.suppress(OSError):
            await self._flush()

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

    async def _call(self, step: Callable[..., _T], *args: object) -> _T:
        while True:
            try:
                result = step(*args)
            except ssl.SSLWantReadError:
                await self._flush()
                if self._in.eof:
                    raise ssl.SSLEOFError("the peer closed mid-record") from None
                data = await self._reader.read(CHUNK)
                if data:
                    self._in.write(data)
                else:
                    self._in.write_eof()
                continue
            await self._flush()
            return result

    async def _flush(self) -> None:
        if pending := self._out.read():
            self._writer.write(pending)
            await self._writer.drain()


async def splice(a: Pipe, b: Pipe) -> None:
    """Copy both ways until both directions end (EOF passed on as a half-close), or either
    fails; then close both."""
    pumps = [asyncio.ensure_future(_pump(a, b)), asyncio.ensure_future(_pump(b, a))]
    try:
        pending: set[asyncio.Future[None]] = set(pumps)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if any(not t.cancelled() and t.exception() is not None for t in done):
                break
    finally:
        for pump in pumps:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        await asyncio.gather(a.close(), b.close(), return_exceptions=True)


async def _pump(source: Pipe, sink: Pipe) -> None:
    while data := await source.read():
        await sink.write(data)
    await sink.write_eof()
