"""Git inside a sandbox: one typed method per ``git.*`` request, which the agent answers by
running the sandbox's own git CLI as the sandbox user (``guest/git.py``).

Remote credentials (``username``/``password``) go to that one git process only, never to a
file, a config or a URL in the sandbox. Git's own failures are 400s carrying its message, a
missing repository directory a 404. Every call is activity.
"""

from __future__ import annotations

from contracts import guest
from core.services.sandboxes import SandboxService


class GitService:
    def __init__(self, sandboxes: SandboxService) -> None:
        self._sandboxes = sandboxes

    async def clone(
        self,
        org_id: str,
        ref: str,
        url: str,
        path: str,
        *,
        branch: str | None = None,
        depth: int | None = None,
        commit_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        """``git clone url path``; ``commit_id`` then detaches HEAD at that commit."""
        msg = guest.GitClone(
            id=0,
            url=url,
            path=path,
            branch=branch,
            depth=depth,
            commit_id=commit_id,
            username=username,
            password=password,
        )
        await self._sandboxes.ask(org_id, ref, msg, guest.GitDone)

    async def status(self, org_id: str, ref: str, path: str) -> guest.GitStatusResult:
        return await self._sandboxes.ask(org_id, ref, guest.GitStatus(id=0, path=path), guest.GitStatusResult)

    async def add(self, org_id: str, ref: str, path: str, files: list[str]) -> None:
        """Stage ``files`` (relative to the repository's root)."""
        await self._sandboxes.ask(org_id, ref, guest.GitAdd(id=0, path=path, files=files), guest.GitDone)

    async def commit(
        self,
        org_id: str,
        ref: str,
        path: str,
        message: str,
        *,
        author_name: str | None = None,
        author_email: str | None = None,
        allow_empty: bool = False,
    ) -> str:
        """Commit what is staged; the new commit's sha."""
        msg = guest.GitCommit(
            id=0,
            path=path,
            message=message,
            author_name=author_name,
            author_email=author_email,
            allow_empty=allow_empty,
        )
        return (await self._sandboxes.ask(org_id, ref, msg, guest.GitCommitResult)).sha

    async def push(
        self,
        org_id: str,
        ref: str,
        path: str,
        *,
        remote: str | None = None,
        branch: str | None = None,
        username: str | None = None,
        password: str | None = None,
        set_upstream: bool = False,
    ) -> None:
        """Push ``branch`` (default: the current one) to ``remote`` (default ``origin``)."""
        msg = guest.GitPush(
            id=0,
            path=path,
            remote=remote,
            branch=branch,
            username=username,
            password=password,
            set_upstream=set_upstream,
        )
        await self._sandboxes.ask(org_id, ref, msg, guest.GitDone)

    async def pull(
        self,
        org_id: str,
        ref: str,
        path: str,
        *,
        remote: str | None = None,
        branch: str | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        """Pull ``branch`` from ``remote`` (default: the current branch's upstream)."""
        msg = guest.GitPull(
            id=0, path=path, remote=remote, branch=branch, username=username, password=password
        )
        await self._sandboxes.ask(org_id, ref, msg, guest.GitDone)

    async def branches(self, org_id: str, ref: str, path: str) -> guest.GitBranchesResult:
        """The local branches and the current one (empty when HEAD is detached)."""
        msg = guest.GitBranches(id=0, path=path)
        return await self._sandboxes.ask(org_id, ref, msg, guest.GitBranchesResult)

    async def create_branch(self, org_id: str, ref: str, path: str, name: str) -> None:
        """A new branch at HEAD, without switching to it."""
        msg = guest.GitBranchCreate(id=0, path=path, name=name)
        await self._sandboxes.ask(org_id, ref, msg, guest.GitDone)

    async def delete_branch(self, org_id: str, ref: str, path: str, name: str) -> None:
        """Delete a local branch, merged or not."""
        msg = guest.GitBranchDelete(id=0, path=path, name=name)
        await self._sandboxes.ask(org_id, ref, msg, guest.GitDone)

    async def checkout(self, org_id: str, ref: str, path: str, target: str) -> None:
        """Switch to ``target``: a branch (also one only a remote has) or a commit."""
        msg = guest.GitCheckout(id=0, path=path, ref=target)
        await self._sandboxes.ask(org_id, ref, msg, guest.GitDone)

    async def log(self, org_id: str, ref: str, path: str, *, limit: int = 100) -> list[guest.GitCommitInfo]:
        """The newest ``limit`` commits reachable from HEAD."""
        msg = guest.GitLog(id=0, path=path, limit=limit)
        return (await self._sandboxes.ask(org_id, ref, msg, guest.GitLogResult)).commits
