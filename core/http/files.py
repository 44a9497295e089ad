"""Files inside a sandbox, metadata and text (not byte streams), in both API shapes: the
native ``/v1/sandboxes/{id}/files/...`` routes (seed 000) and Daytona's
``/toolbox/{id}/files...`` (the official SDK's paths and models).

Both call ``SandboxService.files`` with a ``contracts.guest`` ``Fs*`` request; the agent
(``guest/files.py``) resolves every path inside the sandbox as the sandbox user, so nothing
outside the sandbox can be named. Mind the naming swap: native ``find`` matches names and
``grep`` contents, Daytona's ``search`` matches names and its ``find`` contents. Daytona's
text operations take ``pattern`` literally.

The byte streams are in ``core/http/transfers.py``; only native ``GET``/``PUT
/v1/sandboxes/{id}/files`` are declared here, on top of its helpers, because Litestar refuses
two controllers registering the same path (their automatic ``OPTIONS`` handlers collide).
"""

from __future__ import annotations

from datetime import UTC, datetime

from litestar import Request, Response, delete, get, post, put
from litestar.di import Provide
from litestar.params import Parameter
from litestar.response import Stream

from contracts import guest
from contracts.public import (
    DaytonaFileInfo,
    DaytonaReplace,
    DaytonaReplaceResult,
    DaytonaSearchFiles,
    FileChmod,
    FileInfo,
    FileList,
    FileMatch,
    FileMatches,
    FileMove,
    FileOk,
    FilePaths,
    FileReplace,
    FileReplaced,
    FileReplaceResults,
    FileUploaded,
)
from core.http.deps import provide_principal, provide_sandboxes
from core.http.inputs import DaytonaController, NativeController
from core.http.transfers import file_response, upload_body
from core.services.auth import Principal
from core.services.sandboxes import SandboxService

_DEPS = {
    "principal": Provide(provide_principal),
    "sandboxes": Provide(provide_sandboxes, sync_to_thread=False),
}
_MAX = Parameter(query="max", default=1000, ge=1, le=guest.FS_MAX_RESULTS)


def _mtime(ns: int) -> datetime:
    return datetime.fromtimestamp(ns // 1_000_000_000, UTC).replace(microsecond=(ns // 1000) % 1_000_000)


def go_time(ns: int) -> str:
    """Go's ``time.Time.String()`` in UTC: ``2006-01-02 15:04:05.999999999 +0000 UTC``, the
    fraction without trailing zeros (none when whole), as Daytona's daemon sends ``modTime``."""
    base = datetime.fromtimestamp(ns // 1_000_000_000, UTC).strftime("%Y-%m-%d %H:%M:%S")
    fraction = f"{ns % 1_000_000_000:09d}".rstrip("0")
    return f"{base}{'.' + fraction if fraction else ''} +0000 UTC"


def native_info(entry: guest.FsEntry) -> FileInfo:
    return FileInfo(
        name=entry.name,
        path=entry.path,
        is_dir=entry.is_dir,
        size=entry.size,
        mode=entry.mode,
        permissions=entry.permissions,
        owner=entry.owner,
        group=entry.group,
        mod_time=_mtime(entry.mtime_ns).isoformat(),
        link_target=entry.link_target,
    )


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
        modified_at=_mtime(entry.mtime_ns).isoformat().replace("+00:00", "Z"),
    )


class NativeFiles(NativeController):
    path = "/v1/sandboxes/{sandbox_id:str}/files"
    dependencies = _DEPS

    @put("/", status_code=200, request_max_body_size=None)
    async def upload(
        self,
        request: Request,
        sandbox_id: str,
        principal: Principal,
        sandboxes: SandboxService,
        path: str,
        mode: str | None = None,
    ) -> FileUploaded:
        """The body is the file's content, streamed (up to ``DNAH_MAX_UPLOAD_MB``); all or
        nothing."""
        return await upload_body(request, sandboxes, principal.org_id, sandbox_id, path, mode)

    @get("/")
    async def download(
        self, sandbox_id: str, principal: Principal, sandboxes: SandboxService, path: str
    ) -> Stream:
        return file_response(await sandboxes.download(principal.org_id, sandbox_id, path), path)

    @get("/list")
    async def list_files(
        self,
        sandbox_id: str,
        principal: Principal,
        sandboxes: SandboxService,
        path: str,
        depth: int = Parameter(default=1, ge=1, le=100),
    ) -> FileList:
        found = await sandboxes.files(
            principal.org_id, sandbox_id, guest.FsList(id=0, path=path, depth=depth), guest.FsListResult
        )
        return FileList(items=[native_info(e) for e in found.entries], truncated=found.truncated)

    @get("/stat")
    async def stat(
        self, sandbox_id: str, principal: Principal, sandboxes: SandboxService, path: str
    ) -> FileInfo:
        found = await sandboxes.files(
            principal.org_id, sandbox_id, guest.FsStat(id=0, path=path), guest.FsStatResult
        )
        return native_info(found.entry)

    @post("/mkdir", status_code=200)
    async def mkdir(
        self, sandbox_id: str, principal: Principal, sandboxes: SandboxService, path: str, mode: str = "755"
    ) -> FileOk:
        msg = guest.FsMkdir(id=0, path=path, mode=mode)
        await sandboxes.files(principal.org_id, sandbox_id, msg, guest.FsDone)
        return FileOk()

    @delete("/", status_code=200)
    async def remove(
        self,
        sandbox_id: str,
        principal: Principal,
        sandboxes: SandboxService,
        path: str,
        recurse: bool = False,
    ) -> FileOk:
        msg = guest.FsRemove(id=0, path=path, recursive=recurse)
        await sandboxes.files(principal.org_id, sandbox_id, msg, guest.FsDone)
        return FileOk()

    @post("/move", status_code=200)
    async def move(
        self, sandbox_id: str, data: FileMove, principal: Principal, sandboxes: SandboxService
    ) -> FileOk:
        msg = guest.FsMove(id=0, source=data.source, destination=data.destination)
        await sandboxes.files(principal.org_id, sandbox_id, msg, guest.FsDone)
        return FileOk()

    @post("/chmod", status_code=200)
    async def chmod(
        self, sandbox_id: str, data: FileChmod, principal: Principal, sandboxes: SandboxService
    ) -> FileOk:
        msg = guest.FsChmod(id=0, path=data.path, mode=data.mode, owner=data.owner, group=data.group)
        await sandboxes.files(principal.org_id, sandbox_id, msg, guest.FsDone)
        return FileOk()

    @get("/find")
    async def find(
        self,
        sandbox_id: str,
        principal: Principal,
        sandboxes: SandboxService,
        path: str,
        pattern: str,
        limit: int = _MAX,
    ) -> FilePaths:
        msg = guest.FsFindNames(id=0, path=path, pattern=pattern, max=limit)
        found = await sandboxes.files(principal.org_id, sandbox_id, msg, guest.FsPathsResult)
        return FilePaths(paths=found.paths, truncated=found.truncated)

    @get("/grep")
    async def grep(
        self,
        sandbox_id: str,
        principal: Principal,
        sandboxes: SandboxService,
        path: str,
        pattern: str,
        limit: int = _MAX,
        regex: bool = False,
    ) -> FileMatches:
        msg = guest.FsGrep(id=0, path=path, pattern=pattern, max=limit, regex=regex)
        found = await sandboxes.files(principal.org_id, sandbox_id, msg, guest.FsGrepResult)
        return FileMatches(
            matches=[FileMatch(file=m.file, line=m.line, content=m.content) for m in found.matches],
            truncated=found.truncated,
        )

    @post("/replace", status_code=200)
    async def replace(
        self, sandbox_id: str, data: FileReplace, principal: Principal, sandboxes: SandboxService
    ) -> FileReplaceResults:
        msg = guest.FsReplace(
            id=0,
            find=data.find,
            replace=data.replace,
            files=data.files,
            path=data.path,
            glob=data.glob,
            regex=data.regex,
        )
        done = await sandboxes.files(principal.org_id, sandbox_id, msg, guest.FsReplaceResult)
        return FileReplaceResults(
            results=[
                FileReplaced(file=r.file, success=r.success, replacements=r.replacements, error=r.error)
                for r in done.results
            ]
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
        sandboxes: SandboxService,
        path: str,
        depth: int = Parameter(default=1, ge=1, le=100),
    ) -> list[DaytonaFileInfo]:
        found = await sandboxes.files(
            principal.org_id, sandbox_id, guest.FsList(id=0, path=path, depth=depth), guest.FsListResult
        )
        return [daytona_info(e) for e in found.entries]

    @get("/info")
    async def info(
        self, sandbox_id: str, principal: Principal, sandboxes: SandboxService, path: str
    ) -> DaytonaFileInfo:
        found = await sandboxes.files(
            principal.org_id, sandbox_id, guest.FsStat(id=0, path=path), guest.FsStatResult
        )
        return daytona_info(found.entry)

    @post("/folder", status_code=201)
    async def create_folder(
        self, sandbox_id: str, principal: Principal, sandboxes: SandboxService, path: str, mode: str = "755"
    ) -> None:
        msg = guest.FsMkdir(id=0, path=path, mode=mode)
        await sandboxes.files(principal.org_id, sandbox_id, msg, guest.FsDone)

    @delete("/", status_code=204)
    async def delete_file(
        self,
        sandbox_id: str,
        principal: Principal,
        sandboxes: SandboxService,
        path: str,
        recursive: bool = False,
    ) -> None:
        msg = guest.FsRemove(id=0, path=path, recursive=recursive)
        await sandboxes.files(principal.org_id, sandbox_id, msg, guest.FsDone)

    @post("/move", status_code=200)
    async def move(
        self, sandbox_id: str, principal: Principal, sandboxes: SandboxService, source: str, destination: str
    ) -> None:
        msg = guest.FsMove(id=0, source=source, destination=destination)
        await sandboxes.files(principal.org_id, sandbox_id, msg, guest.FsDone)

    @post("/permissions", status_code=200)
    async def permissions(
        self,
        sandbox_id: str,
        principal: Principal,
        sandboxes: SandboxService,
        path: str,
        mode: str | None = None,
        owner: str | None = None,
        group: str | None = None,
    ) -> None:
        msg = guest.FsChmod(id=0, path=path, mode=mode or None, owner=owner or None, group=group or None)
        await sandboxes.files(principal.org_id, sandbox_id, msg, guest.FsDone)

    @get("/search")
    async def search(
        self, sandbox_id: str, principal: Principal, sandboxes: SandboxService, path: str, pattern: str
    ) -> DaytonaSearchFiles:
        msg = guest.FsFindNames(id=0, path=path, pattern=pattern, max=guest.FS_MAX_RESULTS)
        found = await sandboxes.files(principal.org_id, sandbox_id, msg, guest.FsPathsResult)
        return DaytonaSearchFiles(files=found.paths)

    @get("/find")
    async def find(
        self, sandbox_id: str, principal: Principal, sandboxes: SandboxService, path: str, pattern: str
    ) -> list[FileMatch]:
        msg = guest.FsGrep(id=0, path=path, pattern=pattern, max=guest.FS_MAX_RESULTS)
        found = await sandboxes.files(principal.org_id, sandbox_id, msg, guest.FsGrepResult)
        return [FileMatch(file=m.file, line=m.line, content=m.content) for m in found.matches]

    @post("/replace", status_code=200)
    async def replace(
        self, sandbox_id: str, data: DaytonaReplace, principal: Principal, sandboxes: SandboxService
    ) -> Response[list[DaytonaReplaceResult]]:
        msg = guest.FsReplace(id=0, find=data.pattern, replace=data.new_value, files=data.files)
        done = await sandboxes.files(principal.org_id, sandbox_id, msg, guest.FsReplaceResult)
        return Response(
            [DaytonaReplaceResult(file=r.file, success=r.success, error=r.error) for r in done.results]
        )
