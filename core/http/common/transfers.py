"""File byte streams over HTTP, what both shapes share: a request body streamed into a file
(``upload_body``) and a file streamed out (``file_response``). Native ``PUT``/``GET
/v1/sandboxes/{id}/files?path=`` are handlers of ``NativeFiles`` (``core/http/native/files.py``:
Litestar allows one controller per path); Daytona's transfers are
``core/http/daytona/transfers.py``. All of them are thin: ``FileService.upload``/``download``
do the work.

Nothing here holds a file whole. An upload's body is passed on chunk by chunk as it arrives
(``request.stream()``); a download is relayed as hostd sends it. Backpressure is end to end: a
slow sandbox disk slows the client's upload, a slow client slows the read in the sandbox."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import AsyncIterator

from litestar import Request
from litestar.response import Stream

from contracts.public import (
    FileUploaded,
)
from core.errors import PayloadTooLarge
from core.hostclient import HostFile
from core.services.toolbox.files import FileService

DRAIN_MAX = 64 * 1024 * 1024
"""How much of a refused upload's remaining body is read (and dropped) before answering."""
_SAFE_FILENAME = re.compile(r"[\x20-\x7e]*")


async def upload_body(
    request: Request, files: FileService, org_id: str, sandbox_id: str, path: str, mode: str | None
) -> FileUploaded:
    """Stream the request body into ``path``; an announced length over the limit is refused
    before a byte is read."""
    files.check_upload_size(request.content_length)
    body = request.stream()
    try:
        written = await files.upload(org_id, sandbox_id, path, body, mode=mode)
    except PayloadTooLarge:
        await drain(body)
        raise
    return FileUploaded(path=written.path, size=written.size)


async def drain(body: AsyncIterator[bytes]) -> None:
    """Read and drop up to ``DRAIN_MAX`` more bytes of a body refused midway, so that the
    client, still sending, reads the answer instead of a connection reset (closing a socket
    with unread data resets it, and a reset can overtake the answer). A client that sends
    even more gets the reset."""
    drained = 0
    async for chunk in body:
        drained += len(chunk)
        if drained > DRAIN_MAX:
            return


def file_response(file: HostFile, path: str) -> Stream:
    """The file's bytes as they come, with its length and a download name."""
    name = path.rstrip("/").rsplit("/", 1)[-1] or "file"
    return Stream(
        _relay(file),
        media_type="application/octet-stream",
        headers={
            "content-length": str(file.size),
            "content-disposition": f"attachment; {filename_param(name)}",
        },
    )


async def _relay(file: HostFile) -> AsyncIterator[bytes]:
    try:
        async for chunk in file:
            yield chunk
    finally:
        await file.aclose()


def filename_param(name: str) -> str:
    """``filename="…"`` where that is exact (printable ASCII without ``"`` or ``\\``), else
    RFC 5987's ``filename*=utf-8''…``, which clients decode back byte for byte."""
    if _SAFE_FILENAME.fullmatch(name) and '"' not in name and "\\" not in name:
        return f'filename="{name}"'
    return f"filename*=utf-8''{urllib.parse.quote(name, safe='')}"
