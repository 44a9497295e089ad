"""Files inside a sandbox (``guest/files.py`` answers): metadata and text operations as
typed methods, and the byte streams (``upload``/``download``) passed through to
``SandboxService``, which streams them over a connection of their own.

The agent resolves every path inside the sandbox as its user: a missing path is a 404, a
wrong kind of file a 400, a refusal of the kernel a 403; relative paths start at the home.
Walks (``find_names``, ``grep``, ``replace`` over a directory) stop at ``limit`` results or
after ``guest.FS_WALK_BUDGET_MS`` and say ``truncated``. Every call is activity.
"""

from __future__ import annotations

from collections.abc import AsyncIterable

from contracts import guest
from contracts.host import FileWritten
from core.hostclient import HostFile
from core.services.sandboxes import SandboxService


class FileService:
    def __init__(self, sandboxes: SandboxService) -> None:
        self._sandboxes = sandboxes

    async def list_dir(self, org_id: str, ref: str, path: str, *, depth: int = 1) -> guest.FsListResult:
        """The entries of directory ``path``, sorted by name; ``depth`` > 1 lists children
        right after their directory (at most ``guest.FS_MAX_RESULTS`` entries)."""
        msg = guest.FsList(id=0, path=path, depth=depth)
        return await self._sandboxes.ask(org_id, ref, msg, guest.FsListResult)

    async def stat(self, org_id: str, ref: str, path: str) -> guest.FsEntry:
        """``path``'s entry; a symlink is followed (a dangling one describes itself)."""
        msg = guest.FsStat(id=0, path=path)
        return (await self._sandboxes.ask(org_id, ref, msg, guest.FsStatResult)).entry

    async def make_dir(self, org_id: str, ref: str, path: str, *, mode: str = "755") -> None:
        """``mkdir -p``: the directories it creates get ``mode`` (octal); an existing
        directory is fine."""
        msg = guest.FsMkdir(id=0, path=path, mode=mode)
        await self._sandboxes.ask(org_id, ref, msg, guest.FsDone)

    async def remove(self, org_id: str, ref: str, path: str, *, recursive: bool = False) -> None:
        """A file or symlink; a directory only with ``recursive``."""
        msg = guest.FsRemove(id=0, path=path, recursive=recursive)
        await self._sandboxes.ask(org_id, ref, msg, guest.FsDone)

    async def move(self, org_id: str, ref: str, source: str, destination: str) -> None:
        """Rename; an existing destination is a 409, a missing parent of it a 404."""
        msg = guest.FsMove(id=0, source=source, destination=destination)
        await self._sandboxes.ask(org_id, ref, msg, guest.FsDone)

    async def chmod(
        self,
        org_id: str,
        ref: str,
        path: str,
        *,
        mode: str | None = None,
        owner: str | None = None,
        group: str | None = None,
    ) -> None:
        """Set the mode (octal) and/or owner and group (names or ids); None leaves one as it is."""
        msg = guest.FsChmod(id=0, path=path, mode=mode, owner=owner, group=group)
        await self._sandboxes.ask(org_id, ref, msg, guest.FsDone)

    async def find_names(
        self, org_id: str, ref: str, path: str, pattern: str, *, limit: int = 1000
    ) -> guest.FsPathsResult:
        """Paths under ``path`` whose name matches the glob ``pattern`` (with a ``/``: the
        path relative to ``path``)."""
        msg = guest.FsFindNames(id=0, path=path, pattern=pattern, max=limit)
        return await self._sandboxes.ask(org_id, ref, msg, guest.FsPathsResult)

    async def grep(
        self, org_id: str, ref: str, path: str, pattern: str, *, limit: int = 1000, regex: bool = False
    ) -> guest.FsGrepResult:
        """Lines containing ``pattern`` (a regular expression with ``regex``) in ``path`` or
        the text files under it."""
        msg = guest.FsGrep(id=0, path=path, pattern=pattern, max=limit, regex=regex)
        return await self._sandboxes.ask(org_id, ref, msg, guest.FsGrepResult)

    async def replace(
        self,
        org_id: str,
        ref: str,
        find: str,
        replace: str,
        *,
        files: list[str] | None = None,
        path: str | None = None,
        glob: str | None = None,
        regex: bool = False,
    ) -> list[guest.FsReplaceOutcome]:
        """Replace ``find`` with ``replace`` in ``files``, or in the text files under ``path``
        whose name matches ``glob``; one outcome per file, failures included."""
        msg = guest.FsReplace(
            id=0, find=find, replace=replace, files=files or [], path=path, glob=glob, regex=regex
        )
        return (await self._sandboxes.ask(org_id, ref, msg, guest.FsReplaceResult)).results

    # byte streams (docs/architecture.md, "File transfers")

    async def upload(
        self, org_id: str, ref: str, path: str, content: AsyncIterable[bytes], *, mode: str | None = None
    ) -> FileWritten:
        """Stream ``content`` into ``path``, all or nothing (``SandboxService.upload``)."""
        return await self._sandboxes.upload(org_id, ref, path, content, mode=mode)

    async def download(self, org_id: str, ref: str, path: str) -> HostFile:
        """Open a regular file for download; the caller iterates the result and must
        ``aclose`` it (``SandboxService.download``)."""
        return await self._sandboxes.download(org_id, ref, path)

    def check_upload_size(self, announced: int | None) -> None:
        """Refuse (413) an upload whose announced length is over the limit, before reading it."""
        self._sandboxes.check_upload_size(announced)

    async def require_started(self, org_id: str, ref: str) -> None:
        """Fail as any file call would (404, 409) unless the sandbox is started; activity. For
        a call about several files at once (a bulk download), whose sandbox-level failure is
        the answer rather than one error per file."""
        await self._sandboxes.require_started(org_id, ref)
