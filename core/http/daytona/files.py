"""Files inside a sandbox, metadata and text, in Daytona's shape: ``/toolbox/{id}/files...``
(the official SDK's paths and models). Mind the naming swap: Daytona's ``search`` matches
names and its ``find`` contents; its text operations take ``pattern`` literally. Uploads and
downloads are ``core/http/daytona/transfers.py``."""

from __future__ import annotations

from datetime import UTC, datetime

from litestar import Response, delete, get, post
from litestar.di import Provide
from litestar.params import Parameter

from contracts import guest
from contracts.public import (
    DaytonaFileInfo,
    DaytonaReplace,
    DaytonaReplaceResult,
    DaytonaSearchFiles,
    FileMatch,
)
from core.http.common.deps import provide_files
from core.http.common.formats import mtime
from core.http.common.inputs import DaytonaController
from core.http.daytona.auth import provide_principal
from core.services.auth import Principal
from core.services.toolbox.files import FileService

_DEPS = {
    "principal": Provide(provide_principal),
    "file_ops": Provide(provide_files, sync_to_thread=False),
}


def go_time(ns: int) -> str:
    """Go's ``time.Time.String()`` in UTC: ``2006-01-02 15:04:05.999999999 +0000 UTC``, the
    fraction without trailing zeros (none when whole), as Daytona's daemon sends ``modTime``."""
    base = datetime.fromtimestamp(ns // 1_000_000_000, UTC).strftime("%Y-%m-%d %H:%M:%S")
    fraction = f"{ns % 1_000_000_000:09d}".rstrip("0")
    return f"{base}{'.' + fraction if fraction else ''} +0000 UTC"


def daytona_info(entry: guest.FsEntry) -> DaytonaFileInfo:
    return DaytonaFileInfo(
        name=entry.name,
        path=entry.path,
        is_dir=entry.is_dir,
        size=entry.size,
        mode=entry.mode,
        permissions=entry.permissions,
        owner=entry.owner,
        group=entry.group,
        mod_time=go_time(entry.mtime_ns),
        modified_at=mtime(entry.mtime_ns).isoformat().replace("+00:00", "Z"),
    )


class DaytonaFiles(DaytonaController):
    """The SDK's ``sandbox.fs`` (metadata and text part): its exact paths, statuses and
    models."""

    path = "/toolbox/{sandbox_id:str}/files"
    dependencies = _DEPS

    @get("/")
    async def list_files(
        self,
        sandbox_id: str,
        principal: Principal,
        file_ops: FileService,
        path: str,
        depth: int = Parameter(default=1, ge=1, le=100),
    ) -> list[DaytonaFileInfo]:
        found = await file_ops.list_dir(principal.org_id, sandbox_id, path, depth=depth)
        return [daytona_info(e) for e in found.entries]

    @get("/info")
    async def info(
        self, sandbox_id: str, principal: Principal, file_ops: FileService, path: str
    ) -> DaytonaFileInfo:
        return daytona_info(await file_ops.stat(principal.org_id, sandbox_id, path))

    @post("/folder", status_code=201)
    async def create_folder(
        self, sandbox_id: str, principal: Principal, file_ops: FileService, path: str, mode: str = "755"
    ) -> None:
        await file_ops.make_dir(principal.org_id, sandbox_id, path, mode=mode)

    @delete("/", status_code=204)
    async def delete_file(
        self,
        sandbox_id: str,
        principal: Principal,
        file_ops: FileService,
        path: str,
        recursive: bool = False,
    ) -> None:
        await file_ops.remove(principal.org_id, sandbox_id, path, recursive=recursive)

    @post("/move", status_code=200)
    async def move(
        self, sandbox_id: str, principal: Principal, file_ops: FileService, source: str, destination: str
    ) -> None:
        await file_ops.move(principal.org_id, sandbox_id, source, destination)

    @post("/permissions", status_code=200)
    async def permissions(
        self,
        sandbox_id: str,
        principal: Principal,
        file_ops: FileService,
        path: str,
        mode: str | None = None,
        owner: str | None = None,
        group: str | None = None,
    ) -> None:
        await file_ops.chmod(
            principal.org_id, sandbox_id, path, mode=mode or None, owner=owner or None, group=group or None
        )

    @get("/search")
    async def search(
        self, sandbox_id: str, principal: Principal, file_ops: FileService, path: str, pattern: str
    ) -> DaytonaSearchFiles:
        found = await file_ops.find_names(
            principal.org_id, sandbox_id, path, pattern, limit=guest.FS_MAX_RESULTS
        )
        return DaytonaSearchFiles(files=found.paths)

    @get("/find")
    async def find(
        self, sandbox_id: str, principal: Principal, file_ops: FileService, path: str, pattern: str
    ) -> list[FileMatch]:
        found = await file_ops.grep(principal.org_id, sandbox_id, path, pattern, limit=guest.FS_MAX_RESULTS)
        return [FileMatch(file=m.file, line=m.line, content=m.content) for m in found.matches]

    @post("/replace", status_code=200)
    async def replace(
        self, sandbox_id: str, data: DaytonaReplace, principal: Principal, file_ops: FileService
    ) -> Response[list[DaytonaReplaceResult]]:
        outcomes = await file_ops.replace(
            principal.org_id, sandbox_id, data.pattern, data.new_value, files=data.files
        )
        return Response(
            [DaytonaReplaceResult(file=r.file, success=r.success, error=r.error) for r in outcomes]
        )
