"""Git inside a sandbox, Daytona's shape: ``/toolbox/{id}/git/...`` (the official SDK's paths
and models). Git's failures are 400s carrying git's message."""

from __future__ import annotations

from litestar import delete, get, post
from litestar.di import Provide

from contracts.public import (
    DaytonaGitAdd,
    DaytonaGitBranch,
    DaytonaGitBranches,
    DaytonaGitCheckout,
    DaytonaGitClone,
    DaytonaGitCommit,
    DaytonaGitCommitInfo,
    DaytonaGitCommitted,
    DaytonaGitFileStatus,
    DaytonaGitStatus,
    DaytonaGitSync,
)
from core.http.common.deps import provide_git
from core.http.common.inputs import DaytonaController
from core.http.daytona.auth import provide_principal
from core.services.auth import Principal
from core.services.toolbox.git import GitService

_DAYTONA_STATES = {
    ".": "Unmodified",
    "M": "Modified",
    "T": "Modified",
    "A": "Added",
    "D": "Deleted",
    "R": "Renamed",
    "C": "Copied",
    "U": "Updated but unmerged",
    "?": "Untracked",
}
_DEPS = {
    "principal": Provide(provide_principal),
    "git": Provide(provide_git, sync_to_thread=False),
}


class DaytonaGit(DaytonaController):
    """The SDK's ``sandbox.git``: snake_case bodies, 200 with no body where it expects none."""

    path = "/toolbox/{sandbox_id:str}/git"
    dependencies = _DEPS

    @post("/clone", status_code=200)
    async def clone(
        self, sandbox_id: str, data: DaytonaGitClone, principal: Principal, git: GitService
    ) -> None:
        await git.clone(
            principal.org_id,
            sandbox_id,
            data.url,
            data.path,
            branch=data.branch,
            depth=data.depth,
            commit_id=data.commit_id,
            username=data.username,
            password=data.password,
        )

    @get("/status")
    async def status(
        self, sandbox_id: str, principal: Principal, git: GitService, path: str
    ) -> DaytonaGitStatus:
        found = await git.status(principal.org_id, sandbox_id, path)
        return DaytonaGitStatus(
            current_branch=found.branch,
            file_status=[
                DaytonaGitFileStatus(
                    name=f.path,
                    staging=_DAYTONA_STATES.get(f.staging, "Unmodified"),
                    worktree=_DAYTONA_STATES.get(f.worktree, "Unmodified"),
                    extra=f.orig_path or "",
                )
                for f in found.files
            ],
            ahead=found.ahead,
            behind=found.behind,
            branch_published=bool(found.upstream),
            detached=found.detached,
            upstream=found.upstream,
        )

    @post("/add", status_code=200)
    async def add(self, sandbox_id: str, data: DaytonaGitAdd, principal: Principal, git: GitService) -> None:
        await git.add(principal.org_id, sandbox_id, data.path, data.files)

    @post("/commit", status_code=200)
    async def commit(
        self, sandbox_id: str, data: DaytonaGitCommit, principal: Principal, git: GitService
    ) -> DaytonaGitCommitted:
        sha = await git.commit(
            principal.org_id,
            sandbox_id,
            data.path,
            data.message,
            author_name=data.author,
            author_email=data.email,
            allow_empty=bool(data.allow_empty),
        )
        return DaytonaGitCommitted(hash=sha)

    @post("/push", status_code=200)
    async def push(
        self, sandbox_id: str, data: DaytonaGitSync, principal: Principal, git: GitService
    ) -> None:
        await git.push(
            principal.org_id,
            sandbox_id,
            data.path,
            remote=data.remote,
            branch=data.branch,
            username=data.username,
            password=data.password,
            set_upstream=bool(data.set_upstream),
        )

    @post("/pull", status_code=200)
    async def pull(
        self, sandbox_id: str, data: DaytonaGitSync, principal: Principal, git: GitService
    ) -> None:
        await git.pull(
            principal.org_id,
            sandbox_id,
            data.path,
            remote=data.remote,
            branch=data.branch,
            username=data.username,
            password=data.password,
        )

    @get("/branches")
    async def branches(
        self, sandbox_id: str, principal: Principal, git: GitService, path: str
    ) -> DaytonaGitBranches:
        found = await git.branches(principal.org_id, sandbox_id, path)
        return DaytonaGitBranches(branches=found.branches, current=found.current)

    @post("/branches", status_code=200)
    async def create_branch(
        self, sandbox_id: str, data: DaytonaGitBranch, principal: Principal, git: GitService
    ) -> None:
        await git.create_branch(principal.org_id, sandbox_id, data.path, data.name)

    @delete("/branches", status_code=200)
    async def delete_branch(
        self, sandbox_id: str, data: DaytonaGitBranch, principal: Principal, git: GitService
    ) -> None:
        await git.delete_branch(principal.org_id, sandbox_id, data.path, data.name)

    @post("/checkout", status_code=200)
    async def checkout(
        self, sandbox_id: str, data: DaytonaGitCheckout, principal: Principal, git: GitService
    ) -> None:
        await git.checkout(principal.org_id, sandbox_id, data.path, data.branch)

    @get("/history")
    async def history(
        self, sandbox_id: str, principal: Principal, git: GitService, path: str
    ) -> list[DaytonaGitCommitInfo]:
        commits = await git.log(principal.org_id, sandbox_id, path, limit=1000)
        return [
            DaytonaGitCommitInfo(
                hash=c.sha,
                author=c.author_name,
                email=c.author_email,
                message=c.message,
                timestamp=c.timestamp,
            )
            for c in commits
        ]
