"""hostd's side of a stream connection to a sandbox's agent (see "Streams" in
``contracts/guest.py``): one connection per stream, opened with the stream's opener.

Unlike ``AgentClient`` (one shared, multiplexed connection per sandbox), an ``AgentStream``
belongs to one HTTP request or WebSocket. Writes wait for the socket to drain, so a slow
agent slows the sender instead of filling hostd's memory, and reads are pulled by the
caller, so a slow HTTP client slows the agent the same way. Closing the stream is how it is
aborted: the agent then discards whatever the stream had not finished.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import msgspec

from contracts import guest
from hosts.agent_client import open_channel
from hosts.errors import AgentUnavailable

OPEN_TIMEOUT = 5.0
"""Seconds to connect and get the opener's first reply."""


class AgentStream:
    """A connection dedicated to one stream. Open it with ``open``; close it with ``close``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str) -> None:
        self._reader = reader
        self._writer = writer
        self._name = name

    @classmethod
    async def open(
        cls, socket_path: str | Path, opener: guest.StreamOpener
    ) -> tuple[AgentStream, guest.StreamReply]:
        """Connect, send ``opener`` and return the stream with the agent's first reply (an
        ``error`` reply included: the caller decides; the stream is then closed by the agent)."""
        name = str(socket_path)
        try:
            async with asyncio.timeout(OPEN_TIMEOUT):
                reader, writer = await open_channel(name, guest.AGENT_PORT)
                stream = cls(reader, writer, name)
                writer.write(guest.encode(opener))
                first = await stream.read()
        except TimeoutError:
            raise AgentUnavailable(f"the agent on {name} did not open the stream in time") from None
        except OSError as exc:
            raise AgentUnavailable(f"cannot reach the agent on {name}: {exc}") from exc
        if isinstance(first, bytes):
            await stream.close()
            raise AgentUnavailable(f"the agent on {name} sent data before accepting the stream")
        return stream, first

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` as binary frames of at most ``MAX_BINARY_FRAME`` bytes; an empty
        ``data`` sends nothing (``end`` marks the end)."""
        view = memoryview(data)
        try:
            for start in range(0, len(view), guest.MAX_BINARY_FRAME):
                chunk = view[start : start + guest.MAX_BINARY_FRAME]
                self._writer.write(guest.encode_binary(chunk))
                self._writer.write(chunk)
                await self._writer.drain()
        except OSError as exc:
            raise AgentUnavailable(f"the agent on {self._name} closed the stream: {exc}") from exc

    async def send_message(self, message: msgspec.Struct) -> None:
        """Send one JSON frame on the stream (for streams that take control messages)."""
        try:
            self._writer.write(guest.encode(message))
            await self._writer.drain()
        except OSError as exc:
            raise AgentUnavailable(f"the agent on {self._name} closed the stream: {exc}") from exc

    async def end(self) -> None:
        """Send the empty binary frame that ends the host's direction."""
        try:
            self._writer.write(guest.encode_binary(b""))
            await self._writer.drain()
        except OSError as exc:
            raise AgentUnavailable(f"the agent on {self._name} closed the stream: {exc}") from exc

    async def read(self) -> bytes | guest.StreamReply:
        """The next frame: ``bytes`` for a binary frame (empty at the end of the agent's
        direction), else the decoded JSON message. Raises ``AgentUnavailable`` when the
        connection ends or the agent breaks the protocol."""
        try:
            length, binary = guest.parse_header(await self._reader.readexactly(4))
            limit = guest.MAX_BINARY_FRAME if binary else guest.MAX_JSON_FRAME
            if length > limit:
                raise AgentUnavailable(f"the agent on {self._name} sent a {length}-byte frame")
            payload = await self._reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise AgentUnavailable(f"the agent on {self._name} closed the stream") from exc
        if binary:
            return payload
        try:
            return guest.decode_stream_reply(payload)
        except msgspec.DecodeError as exc:
            raise AgentUnavailable(f"the agent on {self._name} sent an undecodable frame ({exc})") from None

    async def close(self) -> None:
        """Close the connection (aborting the stream if it is not finished). Idempotent."""
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()
