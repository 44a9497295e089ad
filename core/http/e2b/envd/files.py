"""envd's ``/files``: ``GET ?path=`` answers the file's bytes, ``POST`` writes files.

``POST`` takes what E2B's SDK sends: ``multipart/form-data`` with one ``file`` part per file,
each part's filename its path (``?path=`` names the first one's, as the SDK sends for a single
file), or any other type as one file's raw bytes at ``?path=``, gzip-compressed with
``Content-Encoding: gzip``. Parents are created; the answer is the written files,
``[{"name", "type": "file", "path"}]``. ``username`` is accepted and ignored: every file
operation runs as the sandbox's user. ``X-Metadata-*`` (envd 0.6.2, above the version the
core advertises) is refused rather than dropped.

Nothing is held whole: a body goes on chunk by chunk (multipart parts parsed as they arrive,
gzip inflated as it arrives) into ``FileService.upload``, whose limit (``max_upload_bytes``,
counted after inflating) bounds each file; a download is relayed as hostd sends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
import zlib
from collections.abc import AsyncIterator

import msgspec
from multipart import MultipartError, MultipartSegment, PushMultipartParser, parse_options_header

from contracts.host import FileWritten
from core.errors import BadRequest, CoreError, PayloadTooLarge
from core.http.e2b.envd.connect import body_chunks
from core.http.e2b.envd.context import Envd, rest_error
from guard.reply import Receive, Scope, Send

DRAIN_MAX = 64 * 1024 * 1024
"""How much of a refused upload's body is still read (and dropped) so the client reads the
answer instead of a reset connection."""
_PART_QUEUE = 4
"""Chunks of a part buffered ahead of its upload; the parser waits beyond that."""
_MAX_PARTS = 10_000


class WrittenEntry(msgspec.Struct):
    """One written file, as envd answers it."""

    name: str
    type: str
    path: str


async def serve(envd: Envd, scope: Scope, receive: Receive, send: Send) -> None:
    query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
    path = (query.get("path") or [None])[0]
    try:
        if scope["method"] == "GET":
            await _download(envd, send, path)
        elif scope["method"] == "POST":
            written = await _upload(envd, receive, path)
            body = msgspec.json.encode([_entry(w) for w in written])
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body, "more_body": False})
        else:
            await rest_error(send, 405, "GET or POST /files")
    except CoreError as exc:
        await rest_error(send, exc.status_code, exc.message)
    except ConnectionError:
        return  # the client left


def _entry(written: FileWritten) -> WrittenEntry:
    return WrittenEntry(name=written.path.rstrip("/").rsplit("/", 1)[-1], type="file", path=written.path)


async def _download(envd: Envd, send: Send, path: str | None) -> None:
    if not path:
        raise BadRequest("the query must name the file: ?path=")
    file = await envd.files.download(envd.org_id, envd.sandbox_id, path)
    try:
        headers = [
            (b"content-type", b"application/octet-stream"),
            (b"content-length", str(file.size).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        async for chunk in file:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        await file.aclose()


async def _upload(envd: Envd, receive: Receive, path: str | None) -> list[FileWritten]:
    if any(name.startswith(b"x-metadata-") for name in envd.headers):
        await _drain(body_chunks(receive))
        raise BadRequest("file metadata (X-Metadata-*) is not supported")
    content_type = envd.headers.get(b"content-type", b"").decode("latin-1")
    media, options = parse_options_header(content_type)
    body = body_chunks(receive)
    if media == "multipart/form-data":
        boundary = options.get("boundary")
        if not boundary:
            await _drain(body)
            raise BadRequest("a multipart body needs a boundary")
        return await _multipart(envd, body, boundary, path)
    if not path:
        await _drain(body)
        raise BadRequest("an upload that is not multipart must name its file: ?path=")
    length = envd.headers.get(b"content-length")
    envd.sandboxes.check_upload_size(int(length) if length and length.isdigit() else None)
    encoding = envd.headers.get(b"content-encoding", b"identity").strip().lower()
    if encoding not in (b"identity", b"gzip"):
        await _drain(body)
        raise BadRequest("Content-Encoding may be gzip or identity")
    content = _gunzip(body) if encoding == b"gzip" else body
    try:
        return [await envd.files.upload(envd.org_id, envd.sandbox_id, path, content)]
    except (PayloadTooLarge, BadRequest):
        await _drain(body)
        raise


async def _gunzip(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``body`` inflated as it arrives (one gzip member or several, as ``gzip`` writes them)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        async for chunk in body:
            while chunk:
                out = inflater.decompress(chunk)
                if out:
                    yield out
                chunk = inflater.unused_data
                if inflater.eof:
                    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
                else:
                    chunk = b""
        tail = inflater.flush()
        if tail:
            yield tail
    except zlib.error as exc:
        raise BadRequest(f"the gzip body is malformed: {exc}") from None


class _Part:
    """One file part on its way into the sandbox: the parser feeds it, a task uploads."""

    def __init__(self, envd: Envd, path: str) -> None:
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(_PART_QUEUE)
        self._task = asyncio.create_task(
            envd.files.upload(envd.org_id, envd.sandbox_id, path, self._chunks())
        )

    async def _chunks(self) -> AsyncIterator[bytes]:
        while (chunk := await self._queue.get()) is not None:
            yield chunk

    async def feed(self, chunk: bytes | None) -> None:
        """Queue ``chunk`` (None: the part's end) unless the upload has already ended."""
        if self._task.done():
            return
        put = asyncio.ensure_future(self._queue.put(chunk))
        await asyncio.wait({put, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if not put.done():
            put.cancel()

    async def finish(self) -> FileWritten:
        await self.feed(None)
        return await self._task

    async def abort(self) -> None:
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task


async def _multipart(
    envd: Envd, body: AsyncIterator[bytes], boundary: str, path: str | None
) -> list[FileWritten]:
    """Every ``file`` part into its path, in order; the first failure is the answer (the body
    is still read to its end, the files before it stay written)."""
    written: list[FileWritten] = []
    part: _Part | None = None
    failure: CoreError | None = None
    first_path = path
    try:
        with PushMultipartParser(boundary.encode(), max_segment_count=_MAX_PARTS) as parser:
            async for chunk in body:
                for event in parser.parse(chunk):
                    if isinstance(event, MultipartSegment):
                        target = _part_path(event, first_path)
                        first_path = None
                        if failure is None and target is not None:
                            part = _Part(envd, target)
                    elif event is None:
                        if part is not None:
                            try:
                                written.append(await part.finish())
                            except CoreError as exc:
                                failure = failure or exc
                        part = None
                    elif part is not None:
                        await part.feed(bytes(event))
            parser.close()
    except MultipartError as exc:
        raise BadRequest(f"malformed multipart body: {exc}") from None
    finally:
        if part is not None:
            await part.abort()  # a body cut short: this file is not stored
    if failure is not None:
        raise failure
    if not written:
        raise BadRequest("the multipart body carries no file part")
    return written


def _part_path(segment: MultipartSegment, query_path: str | None) -> str | None:
    """Where a part goes: the query's path for the first, else its filename; parts that are
    not named ``file`` are ignored."""
    if segment.name != "file":
        return None
    target = query_path or segment.filename
    if not target:
        raise BadRequest("a file part must name its path as its filename")
    return target


async def _drain(body: AsyncIterator[bytes]) -> None:
    drained = 0
    with contextlib.suppress(ConnectionError, CoreError):
        async for chunk in body:
            drained += len(chunk)
            if drained > DRAIN_MAX:
                return
