"""hostd's file-transfer routes: a file's bytes to and from a sandbox, streamed.

``PUT``/``GET /sandboxes/{id}/files?path=`` (``contracts/host.py``). Each request gets a
stream connection of its own to the sandbox's agent (``AgentStream``), so memory stays at
one frame whatever the file's size: an upload is forwarded chunk by chunk as the HTTP body
arrives, each chunk only once the agent took the previous one; a download is pulled from the
agent only as fast as the HTTP client reads it.

An agent refusal is a 422 carrying the agent's ``guest.Error`` (the core maps its code). For
an upload refused before its bytes were sent, the body is drained first: answering early and
closing would make the client's TCP stack reset the connection and lose the answer, so the
core would see a broken connection instead of, say, "is a directory".
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeVar

import msgspec
from litestar import MediaType, Request, Response, get, put
from litestar.datastructures import State
from litestar.response import Stream

from contracts import guest
from contracts.host import AGENT_REFUSED, FileWritten
from hosts.agent_stream import AgentStream
from hosts.commands import OpenStream
from hosts.controller import HostController
from hosts.errors import AgentUnavailable

_T = TypeVar("_T")


@put("/sandboxes/{sandbox_id:str}/files", status_code=200, request_max_body_size=None)
async def write_file(
    sandbox_id: str, path: str, request: Request, state: State, mode: str | None = None
) -> Response[bytes]:
    controller: HostController = state.controller
    opener = guest.FsWrite(id=1, path=path, mode=mode)
    stream, first = await controller.handle(OpenStream(sandbox_id=sandbox_id, opener=opener))
    try:
        if isinstance(first, guest.Error):
            async for _ in request.stream():
                pass
            return _refused(first)
        _expect(first, guest.FsReady)
        async for chunk in request.stream():
            if chunk:
                await stream.send(chunk)
        await stream.end()
        reply = await stream.read()
        if isinstance(reply, guest.Error):
            return _refused(reply)
        written = _expect(reply, guest.FsWritten)
        body = FileWritten(path=written.path, size=written.size)
        return Response(msgspec.json.encode(body), media_type=MediaType.JSON)
    finally:
        await stream.close()


@get("/sandboxes/{sandbox_id:str}/files")
async def read_file(sandbox_id: str, path: str, state: State) -> Response[bytes] | Stream:
    controller: HostController = state.controller
    opener = guest.FsRead(id=1, path=path)
    stream, first = await controller.handle(OpenStream(sandbox_id=sandbox_id, opener=opener))
    if isinstance(first, guest.Error):
        await stream.close()
        return _refused(first)
    try:
        reading = _expect(first, guest.FsReading)
    except AgentUnavailable:
        await stream.close()
        raise
    return Stream(
        _content(stream, reading.size),
        media_type="application/octet-stream",
        headers={"content-length": str(reading.size)},
    )


async def _content(stream: AgentStream, size: int) -> AsyncIterator[bytes]:
    """Exactly ``size`` bytes from the stream, or an exception after fewer (the server then
    cuts the response short, which the client sees as an incomplete body)."""
    sent = 0
    try:
        while sent < size:
            frame = await stream.read()
            if not isinstance(frame, bytes):  # an error frame: the read failed midway
                raise AgentUnavailable(f"reading the file failed after {sent} bytes: {frame}")
            if not frame:
                raise AgentUnavailable(f"the file shrank to {sent} bytes while it was read")
            piece = frame[: size - sent]
            sent += len(piece)
            yield piece
    finally:
        await stream.close()


def _expect(reply: object, kind: type[_T]) -> _T:
    if not isinstance(reply, kind):
        raise AgentUnavailable(f"the agent answered {type(reply).__name__}, expected {kind.__name__}")
    return reply


def _refused(error: guest.Error) -> Response[bytes]:
    return Response(msgspec.json.encode(error), status_code=AGENT_REFUSED, media_type=MediaType.JSON)
