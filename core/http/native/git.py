"""Git inside a sandbox, native shape: ``/v1/sandboxes/{id}/git/...`` (seed 000).

The agent runs the sandbox's own git CLI (``guest/git.py``), which is where credentials are
handled so that they are never stored in the sandbox. Git's failures are 400s carrying git's
message."""

from __future__ import annotations

from litestar import delete, get, post
from litestar.di import Provide
from litestar.params import Parameter

from contracts.public import (
    GitAdd,
    GitBranch,
    GitBranches,
    GitCheckout,
    GitClone,
    GitCommit,
    GitCommitInfo,
    GitCommitted,
    GitFile,
    GitLog,
    GitOk,
    GitStatus,
    GitSync,
)
from core.http.common.deps import provide_git
from core.http.common.inputs import NativeController
from core.http.native.auth import provide_principal
from core.services.auth import Principal
from core.services.toolbox.git import GitService

_NATIVE_STATES = {
    ".": "unmodified",
    "M": "modified",
    "T": "type_changed",
    "A": "added",
    "D": "deleted",
    "R": "renamed",
    "C": "copied",
    "U": "unmerged",
    "?": "untracked",
}
_DEPS = {
    "principal": Provide(provide_principal),
    "git": Provide(provide_git, sync_to_thread=False),
}


class NativeGit(NativeController):
    path = "/v1/sandboxes/{sandbox_id:str}/git"
    dependencies = _DEPS

    @post("/clone", status_code=200)
    async def clone(self, sandbox_id: str, data: GitClone, principal: Principal, git: GitService) -> GitOk:
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
        return GitOk()

    @get("/status")
    async def status(self, sandbox_id: str, principal: Principal, git: GitService, path: str) -> GitStatus:
        found = await git.status(principal.org_id, sandbox_id, path)
        return GitStatus(
            branch=found.branch,
            detached=found.detached,
            upstream=found.upstream,
            ahead=found.ahead,
            behind=found.behind,
            files=[
                GitFile(
                    path=f.path,
                    staging=_NATIVE_STATES.get(f.staging, f.staging),
                    worktree=_NATIVE_STATES.get(f.worktree, f.worktree),
                    orig_path=f.orig_path,
                )
                for f in found.files
            ],
        )

    @post("/add", status_code=200)
    async def add(self, sandbox_id: str, data: GitAdd, principal: Principal, git: GitService) -> GitOk:
        await git.add(principal.org_id, sandbox_id, data.path, data.files)
        return GitOk()

    @post("/commit", status_code=200)
    async def commit(
        self, sandbox_id: str, data: GitCommit, principal: Principal, git: GitService
    ) -> GitCommitted:
        sha = await git.commit(
            principal.org_id,
            sandbox_id,
            data.path,
            data.message,
            author_name=data.author_name,
            author_email=data.author_email,
            allow_empty=data.allow_empty,
        )
        return GitCommitted(sha=sha)

    @post("/push", status_code=200)
    async def push(self, sandbox_id: str, data: GitSync, principal: Principal, git: GitService) -> GitOk:
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
        return GitOk()

    @post("/pull", status_code=200)
    async def pull(self, sandbox_id: str, data: GitSync, principal: Principal, git: GitService) -> GitOk:
        await git.pull(
            principal.org_id,
            sandbox_id,
            data.path,
            remote=data.remote,
            branch=data.branch,
            username=data.username,
            password=data.password,
        )
        return GitOk()

    @get("/branches")
    async def branches(
        self, sandbox_id: str, principal: Principal, git: GitService, path: str
    ) -> GitBranches:
        found = await git.branches(principal.org_id, sandbox_id, path)
        return GitBranches(branches=found.branches, current=found.current)

    @post("/branches", status_code=201)
    async def create_branch(
        self, sandbox_id: str, data: GitBranch, principal: Principal, git: GitService
    ) -> GitOk:
        await git.create_branch(principal.org_id, sandbox_id, data.path, data.name)
        return GitOk()

    @delete("/branches/{name:str}", status_code=200)
    async def delete_branch(
        self, sandbox_id: str, name: str, principal: Principal, git: GitService, path: str
    ) -> GitOk:
        await git.delete_branch(principal.org_id, sandbox_id, path, name)
        return GitOk()

    @post("/checkout", status_code=200)
    async def checkout(
        self, sandbox_id: str, data: GitCheckout, principal: Principal, git: GitService
    ) -> GitOk:
        await git.checkout(principal.org_id, sandbox_id, data.path, data.ref)
        return GitOk()

    @get("/log")
    async def log(
        self,
        sandbox_id: str,
        principal: Principal,
        git: GitService,
        path: str,
        limit: int = Parameter(default=100, ge=1, le=10_000),
    ) -> GitLog:
        commits = await git.log(principal.org_id, sandbox_id, path, limit=limit)
        return GitLog(
            commits=[
                GitCommitInfo(
                    sha=c.sha,
                    author_name=c.author_name,
                    author_email=c.author_email,
                    timestamp=c.timestamp,
                    message=c.message,
                )
                for c in commits
            ]
        )
