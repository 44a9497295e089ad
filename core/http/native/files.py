"""Files inside a sandbox, metadata and text, in the native shape: ``/v1/sandboxes/{id}/files/...``
(seed 000), over ``FileService``. Native ``find`` matches names, ``grep`` contents.

The byte streams' helpers are in ``core/http/common/transfers.py``; native ``GET``/``PUT
/v1/sandboxes/{id}/files`` are declared here, on top of them, because Litestar refuses two
controllers registering the same path (their automatic ``OPTIONS`` handlers collide)."""

from __future__ import annotations

from litestar import Request, delete, get, post, put
from litestar.di import Provide
from litestar.params import Parameter
from litestar.response import Stream

from contracts import guest
from contracts.public import (
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
from core.http.common.deps import provide_files
from core.http.common.formats import mtime
from core.http.common.inputs import NativeController
from core.http.common.transfers import file_response, upload_body
from core.http.native.auth import provide_principal
from core.services.auth import Principal
from core.services.toolbox.files import FileService

_DEPS = {
    "principal": Provide(provide_principal),
    "file_ops": Provide(provide_files, sync_to_thread=False),
}
_MAX = Parameter(query="max", default=1000, ge=1, le=guest.FS_MAX_RESULTS)


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
        mod_time=mtime(entry.mtime_ns).isoformat(),
        link_target=entry.link_target,
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
        file_ops: FileService,
        path: str,
        mode: str | None = None,
    ) -> FileUploaded:
        """The body is the file's content, streamed (up to ``DNAH_MAX_UPLOAD_MB``); all or
        nothing."""
        return await upload_body(request, file_ops, principal.org_id, sandbox_id, path, mode)

    @get("/")
    async def download(
        self, sandbox_id: str, principal: Principal, file_ops: FileService, path: str
    ) -> Stream:
        return file_response(await file_ops.download(principal.org_id, sandbox_id, path), path)

    @get("/list")
    async def list_files(
        self,
        sandbox_id: str,
        principal: Principal,
        file_ops: FileService,
        path: str,
        depth: int = Parameter(default=1, ge=1, le=100),
    ) -> FileList:
        found = await file_ops.list_dir(principal.org_id, sandbox_id, path, depth=depth)
        return FileList(items=[native_info(e) for e in found.entries], truncated=found.truncated)

    @get("/stat")
    async def stat(self, sandbox_id: str, principal: Principal, file_ops: FileService, path: str) -> FileInfo:
        return native_info(await file_ops.stat(principal.org_id, sandbox_id, path))

    @post("/mkdir", status_code=200)
    async def mkdir(
        self, sandbox_id: str, principal: Principal, file_ops: FileService, path: str, mode: str = "755"
    ) -> FileOk:
        await file_ops.make_dir(principal.org_id, sandbox_id, path, mode=mode)
        return FileOk()

    @delete("/", status_code=200)
    async def remove(
        self,
        sandbox_id: str,
        principal: Principal,
        file_ops: FileService,
        path: str,
        recurse: bool = False,
    ) -> FileOk:
        await file_ops.remove(principal.org_id, sandbox_id, path, recursive=recurse)
        return FileOk()

    @post("/move", status_code=200)
    async def move(
        self, sandbox_id: str, data: FileMove, principal: Principal, file_ops: FileService
    ) -> FileOk:
        await file_ops.move(principal.org_id, sandbox_id, data.source, data.destination)
        return FileOk()

    @post("/chmod", status_code=200)
    async def chmod(
        self, sandbox_id: str, data: FileChmod, principal: Principal, file_ops: FileService
    ) -> FileOk:
        await file_ops.chmod(
            principal.org_id, sandbox_id, data.path, mode=data.mode, owner=data.owner, group=data.group
        )
        return FileOk()

    @get("/find")
    async def find(
        self,
        sandbox_id: str,
        principal: Principal,
        file_ops: FileService,
        path: str,
        pattern: str,
        limit: int = _MAX,
    ) -> FilePaths:
        found = await file_ops.find_names(principal.org_id, sandbox_id, path, pattern, limit=limit)
        return FilePaths(paths=found.paths, truncated=found.truncated)

    @get("/grep")
    async def grep(
        self,
        sandbox_id: str,
        principal: Principal,
        file_ops: FileService,
        path: str,
        pattern: str,
        limit: int = _MAX,
        regex: bool = False,
    ) -> FileMatches:
        found = await file_ops.grep(principal.org_id, sandbox_id, path, pattern, limit=limit, regex=regex)
        return FileMatches(
            matches=[FileMatch(file=m.file, line=m.line, content=m.content) for m in found.matches],
            truncated=found.truncated,
        )

    @post("/replace", status_code=200)
    async def replace(
        self, sandbox_id: str, data: FileReplace, principal: Principal, file_ops: FileService
    ) -> FileReplaceResults:
        outcomes = await file_ops.replace(
            principal.org_id,
            sandbox_id,
            data.find,
            data.replace,
            files=data.files,
            path=data.path,
            glob=data.glob,
            regex=data.regex,
        )
        return FileReplaceResults(
            results=[
                FileReplaced(file=r.file, success=r.success, replacements=r.replacements, error=r.error)
                for r in outcomes
            ]
        )
