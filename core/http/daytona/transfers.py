"""File byte streams, Daytona's shape: ``/toolbox/{id}/files/{upload,download,bulk-upload,
bulk-download}`` (``DaytonaTransfers``), on top of ``core/http/common/transfers.py``.

A multipart body is parsed as it arrives (``multipart``'s push parser) and each file part is
streamed into its own upload while the parser goes on. Bulk uploads are per file all or
nothing: a file that fails (a directory in the way, a refusal, over the size limit) is not
stored and is reported in ``errors``; the body is still read to its end, so the client gets
that answer instead of a reset connection, and the other files are stored."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import secrets
from collections.abc import AsyncIterator

import msgspec
from litestar import MediaType, Request, Response, get, post
from litestar.di import Provide
from litestar.response import Stream
from multipart import MultipartError, MultipartSegment, PushMultipartParser, parse_options_header

from contracts.public import (
    BulkUploadFailed,
    DaytonaBulkDownload,
    DaytonaUploadJson,
    FilesUploaded,
    FileTransferError,
    FileUploaded,
)
from core.errors import BadRequest, CoreError, PayloadTooLarge
from core.http.common.deps import provide_files
from core.http.common.inputs import DaytonaController
from core.http.common.transfers import drain, file_response, filename_param
from core.http.daytona.auth import provide_principal
from core.services.auth import Principal
from core.services.toolbox.files import FileService

JSON_UPLOAD_MAX = 32 * 1024 * 1024
"""Largest file seed 004's base64 JSON upload takes (it is decoded in memory)."""
_PART_QUEUE = 4
"""Chunks of a multipart file part buffered ahead of its upload: the parser waits beyond that."""
_FIELD_MAX = 4096
"""Largest text field (a ``files[i].path``) of a multipart upload."""
_SEGMENTS_MAX = 20_000
"""Most parts one multipart upload may have (10,000 files with their paths): the paths and
the per-file answers are held until the end of the body, so their number must be bounded."""
_PATH_FIELD = re.compile(r"files\[(\d+)\]\.path")
_FILE_FIELD = re.compile(r"files\[(\d+)\]\.file")


class DaytonaTransfers(DaytonaController):
    """The SDK's ``fs.upload_file(s)``/``download_file(s)`` and the toolbox's single-file
    routes; multipart exactly as the SDK writes and parses it (see
    ``../shared/research/sdk-compat.md`` §1.4)."""

    path = "/toolbox/{sandbox_id:str}/files"
    dependencies = {
        "principal": Provide(provide_principal),
        "file_ops": Provide(provide_files, sync_to_thread=False),
    }

    @get("/download")
    async def download(
        self, sandbox_id: str, principal: Principal, file_ops: FileService, path: str
    ) -> Stream:
        return file_response(await file_ops.download(principal.org_id, sandbox_id, path), path)

    @post("/upload", status_code=200, request_max_body_size=None)
    async def upload(
        self,
        request: Request,
        sandbox_id: str,
        principal: Principal,
        file_ops: FileService,
        path: str | None = None,
    ) -> Response[bytes]:
        """One file: multipart (field ``file``, destination ``path`` from the query or the
        part's filename), or seed 004's JSON ``{path, content}`` with base64 content."""
        if request.content_type[0] == "application/json":
            written = await _upload_json(request, file_ops, principal.org_id, sandbox_id)
            return _json(written)
        outcome = await _upload_multipart(request, file_ops, principal.org_id, sandbox_id, single=path)
        if outcome.errors:
            return _bulk_failed(outcome)
        if len(outcome.files) != 1:
            raise BadRequest("an upload takes exactly one 'file' part")
        return _json(outcome.files[0])

    @post("/bulk-upload", status_code=200, request_max_body_size=None)
    async def bulk_upload(
        self, request: Request, sandbox_id: str, principal: Principal, file_ops: FileService
    ) -> Response[bytes]:
        """``files[i].path`` text fields and ``files[i].file`` parts (httpx, as the SDK uses
        it, sends every path first); a file part without its path goes to its filename."""
        outcome = await _upload_multipart(request, file_ops, principal.org_id, sandbox_id, single=None)
        if outcome.errors:
            return _bulk_failed(outcome)
        if not outcome.files:
            raise BadRequest("no 'files[i].file' part in the upload")
        return _json(FilesUploaded(files=outcome.files))

    @post("/bulk-download", status_code=200)
    async def bulk_download(
        self, sandbox_id: str, principal: Principal, file_ops: FileService, data: DaytonaBulkDownload
    ) -> Stream:
        """A multipart body, one part per requested path in order: ``name="file"`` with the
        bytes, or ``name="error"`` with the JSON error of that path; ``filename`` echoes the
        requested path exactly. The sandbox is checked first, so an unknown or stopped one is
        a plain 404/409 rather than a multipart of errors."""
        await file_ops.require_started(principal.org_id, sandbox_id)
        boundary = f"dnah-{secrets.token_hex(16)}"
        return Stream(
            _multipart_files(file_ops, principal.org_id, sandbox_id, data.paths, boundary),
            media_type=f"multipart/form-data; boundary={boundary}",
        )


async def _upload_json(request: Request, files: FileService, org_id: str, sandbox_id: str) -> FileUploaded:
    limit = JSON_UPLOAD_MAX * 4 // 3 + 4096  # base64 of the largest file, and the JSON around it
    too_large = PayloadTooLarge(f"a JSON upload carries at most {JSON_UPLOAD_MAX // (1024 * 1024)} MiB")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    try:
        upload = msgspec.json.decode(body, type=DaytonaUploadJson)
        content = base64.b64decode(upload.content, validate=True)
    except (msgspec.DecodeError, ValueError) as exc:  # binascii.Error, and non-ASCII content
        raise BadRequest(f"invalid upload: {exc}") from None

    async def once() -> AsyncIterator[bytes]:
        yield content

    written = await files.upload(org_id, sandbox_id, upload.path, once())
    return FileUploaded(path=written.path, size=written.size)


class _Outcome:
    def __init__(self) -> None:
        self.files: list[FileUploaded] = []
        self.errors: list[FileTransferError] = []


class _PartUpload:
    """One multipart file part on its way into the sandbox: the parser feeds it chunks, a
    task streams them into ``FileService.upload``. When the upload fails early, the rest
    of the part is dropped (and reported at ``finish``)."""

    def __init__(self, files: FileService, org_id: str, sandbox_id: str, path: str) -> None:
        self.path = path
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(_PART_QUEUE)
        self._task = asyncio.create_task(files.upload(org_id, sandbox_id, path, self._chunks()))

    async def _chunks(self) -> AsyncIterator[bytes]:
        while (chunk := await self._queue.get()) is not None:
            yield chunk

    async def feed(self, chunk: bytes | None) -> None:
        """Queue ``chunk`` (None ends the part), waiting while the queue is full unless the
        upload has already ended."""
        if self._task.done():
            return
        put = asyncio.ensure_future(self._queue.put(chunk))
        await asyncio.wait({put, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if not put.done():
            put.cancel()

    async def finish(self) -> FileUploaded:
        await self.feed(None)
        written = await self._task
        return FileUploaded(path=written.path, size=written.size)

    async def abort(self) -> None:
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task


async def _upload_multipart(
    request: Request, files: FileService, org_id: str, sandbox_id: str, *, single: str | None
) -> _Outcome:
    """Parse the multipart body as it arrives, streaming each file part into the sandbox.

    With ``single`` (the toolbox's one-file route) the part named ``file`` goes to that path;
    otherwise parts are ``files[i].path``/``files[i].file`` pairs.
    """
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get("boundary")
    body = request.stream()
    if content_type != "multipart/form-data" or not boundary:
        await drain(body)
        raise BadRequest("expected a multipart/form-data body with a boundary")
    outcome = _Outcome()
    try:
        await _parse_parts(body, boundary, single, outcome, files, org_id, sandbox_id)
    except BadRequest:
        # Read what is left (up to DRAIN_MAX): a connection closed with the body unread
        # can be reset before the client reads this answer, or reused by its pool.
        await drain(body)
        raise
    return outcome


async def _parse_parts(
    body: AsyncIterator[bytes],
    boundary: str,
    single: str | None,
    outcome: _Outcome,
    files: FileService,
    org_id: str,
    sandbox_id: str,
) -> None:
    paths: dict[str, str] = {}
    field: tuple[str, bytearray] | None = None
    part: _PartUpload | None = None
    skipping = False
    try:
        with PushMultipartParser(boundary.encode(), max_segment_count=_SEGMENTS_MAX) as parser:
            async for chunk in body:
                for event in parser.parse(chunk):
                    if isinstance(event, MultipartSegment):
                        field, part, skipping = _begin(
                            event, paths, single, outcome, files, org_id, sandbox_id
                        )
                    elif event is None:  # the end of a segment
                        if field is not None:
                            if field[0] in paths:  # which one was meant? refuse rather than guess
                                raise BadRequest(f"the multipart field {field[0]} is given twice")
                            paths[field[0]] = field[1].decode("utf-8", "replace")
                        elif part is not None:
                            await _finish(part, outcome)
                        field, part, skipping = None, None, False
                    elif field is not None:
                        field[1].extend(event)
                        if len(field[1]) > _FIELD_MAX:
                            raise BadRequest(f"the multipart field {field[0]!r} is too long")
                    elif part is not None:
                        await part.feed(bytes(event))
                    elif not skipping:
                        raise BadRequest("multipart data outside a part")
            parser.close()
    except MultipartError as exc:  # ParserError, and ParserLimitReached (headers, parts)
        raise BadRequest(f"malformed multipart body: {exc}") from None
    finally:
        if part is not None:
            await part.abort()  # a body cut short: this file is not stored


def _begin(
    segment: MultipartSegment,
    paths: dict[str, str],
    single: str | None,
    outcome: _Outcome,
    files: FileService,
    org_id: str,
    sandbox_id: str,
) -> tuple[tuple[str, bytearray] | None, _PartUpload | None, bool]:
    """What to do with a new segment: (text field, file upload, skip it)."""
    name = segment.name
    if single is None and _PATH_FIELD.fullmatch(name):
        return (name, bytearray()), None, False
    file_index = _FILE_FIELD.fullmatch(name)
    if single is None and file_index:
        path = paths.get(f"files[{file_index.group(1)}].path") or segment.filename
    elif single is not None or name == "file":
        path = single or segment.filename
    else:
        return None, None, True  # a field we do not know: ignored, like Daytona's daemon does
    if not path:
        outcome.errors.append(
            FileTransferError(
                path="", status_code=400, message=f"part {name!r} names no path", code="bad_request"
            )
        )
        return None, None, True
    return None, _PartUpload(files, org_id, sandbox_id, path), False


async def _finish(part: _PartUpload, outcome: _Outcome) -> None:
    try:
        outcome.files.append(await part.finish())
    except CoreError as exc:
        outcome.errors.append(
            FileTransferError(path=part.path, status_code=exc.status_code, message=exc.message, code=exc.code)
        )


def _bulk_failed(outcome: _Outcome) -> Response[bytes]:
    first = outcome.errors[0]
    body = BulkUploadFailed(
        status_code=first.status_code,
        message=f"{len(outcome.errors)} of {len(outcome.errors) + len(outcome.files)} files failed: "
        f"{first.path}: {first.message}",
        code=first.code,
        errors=outcome.errors,
        files=outcome.files,
    )
    return Response(msgspec.json.encode(body), status_code=first.status_code, media_type=MediaType.JSON)


def _json(body: msgspec.Struct) -> Response[bytes]:
    return Response(msgspec.json.encode(body), media_type=MediaType.JSON)


async def _multipart_files(
    files: FileService, org_id: str, sandbox_id: str, paths: list[str], boundary: str
) -> AsyncIterator[bytes]:
    delimiter = f"--{boundary}\r\n".encode()
    for path in paths:
        filename = filename_param(path)
        try:
            file = await files.download(org_id, sandbox_id, path)
        except CoreError as exc:
            error = {"message": exc.message, "statusCode": exc.status_code, "code": exc.code}
            yield delimiter
            yield _part_head(f'form-data; name="error"; {filename}', "application/json")
            yield msgspec.json.encode(error) + b"\r\n"
            continue
        try:
            yield delimiter
            yield _part_head(f'form-data; name="file"; {filename}', "application/octet-stream", file.size)
            async for chunk in file:
                yield chunk
            yield b"\r\n"
        finally:
            await file.aclose()
    yield f"--{boundary}--\r\n".encode()


def _part_head(disposition: str, content_type: str, length: int | None = None) -> bytes:
    lines = [f"Content-Disposition: {disposition}", f"Content-Type: {content_type}"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
