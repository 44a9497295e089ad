"""Git inside a sandbox, in both API shapes: the native ``/v1/sandboxes/{id}/git/...`` routes
(seed 000) and Daytona's ``/toolbox/{id}/git/...`` (the official SDK's paths and models).

Both call ``SandboxService.git`` with a ``contracts.guest`` ``Git*`` request; the agent runs the
sandbox's own git CLI (``guest/git.py``), which is where credentials are handled so that they
are never stored in the sandbox. Git's failures are 400s carrying git's message.
"""

from __future__ import annotations

from litestar import delete, get, post
from litestar.di import Provide
from litestar.params import Parameter

from contracts import guest
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
from core.http.deps import provide_principal, provide_sandboxes
from core.http.inputs import DaytonaController, NativeController
from core.services.auth import Principal
from core.services.sandboxes import SandboxService

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
    "sandboxes": Provide(provide_sandboxes, sync_to_thread=False),
}


# The native and Daytona bodies name these fields alike; one builder each serves both shapes.


def _clone(data: GitClone | DaytonaGitClone) -> guest.GitClone:
    return guest.GitClone(
        id=0,
        url=data.url,
        path=data.path,
        branch=data.branch,
        depth=data.depth,
        commit_id=data.commit_id,
        username=data.username,
        password=data.password,
    )


def _push(data: GitSync | DaytonaGitSync) -> guest.GitPush:
    return guest.GitPush(
        id=0,
        path=data.path,
        remote=data.remote,
        branch=data.branch,
        username=data.username,
        password=data.password,
        set_upstream=bool(data.set_upstream),
    )


def _pull(data: GitSync | DaytonaGitSync) -> guest.GitPull:
    return guest.GitPull(
        id=0,
        path=data.path,
        remote=data.remote,
        branch=data.branch,
        username=data.username,
        password=data.password,
    )


class NativeGit(NativeController):
    path = "/v1/sandboxes/{sandbox_id:str}/git"
    dependencies = _DEPS

    @post("/clone", status_code=200)
    async def clone(
        self, sandbox_id: str, data: GitClone, principal: Principal, sandboxes: SandboxService
    ) -> GitOk:
        msg = _clone(data)
        await sandboxes.git(principal.org_id, sandbox_id, msg, guest.GitDone)
        return GitOk()

    @get("/status")
    async def status(
        self, sandbox_id: str, principal: Principal, sandboxes: SandboxService, path: str
    ) -> GitStatus:
        found = await sandboxes.git(
            principal.org_id, sandbox_id, guest.GitStatus(id=0, path=path), guest.GitStatusResult
        )
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
    async def add(
        self, sandbox_id: str, data: GitAdd, principal: Principal, sandboxes: SandboxService
    ) -> GitOk:
        msg = guest.GitAdd(id=0, path=data.path, files=data.files)
        await sandboxes.git(principal.org_id, sandbox_id, msg, guest.GitDone)
        return GitOk()

    @post("/commit", status_code=200)
    async def commit(
        self, sandbox_id: str, data: GitCommit, principal: Principal, sandboxes: SandboxService
    ) -> GitCommitted:
        msg = guest.GitCommit(
            id=0,
            path=data.path,
            message=data.message,
            author_name=data.author_name,
            author_email=data.author_email,
            allow_empty=data.allow_empty,
        )
        done = await sandboxes.git(principal.org_id, sandbox_id, msg, guest.GitCommitResult)
        return GitCommitted(sha=done.sha)

    @post("/push", status_code=200)
    async def push(
        self, sandbox_id: str, data: GitSync, principal: Principal, sandboxes: SandboxService
    ) -> GitOk:
        msg = _push(data)
        await sandboxes.git(principal.org_id, sandbox_id, msg, guest.GitDone)
        return GitOk()

    @post("/pull", status_code=200)
    async def pull(
        self, sandbox_id: str, data: GitSync, principal: Principal, sandboxes: SandboxService
    ) -> GitOk:
        msg = _pull(data)
        await sandboxes.git(principal.org_id, sandbox_id, msg, guest.GitDone)
        return GitOk()

    @get("/branches")
    async def branches(
        self, sandbox_id: str, principal: Principal, sandboxes: SandboxService, path: str
    ) -> GitBranches:
        found = await sandboxes.git(
            principal.org_id, sandbox_id, guest.GitBranches(id=0, path=path), guest.GitBranchesResult
        )
        return GitBranches(branches=found.branches, current=found.current)

    @post("/branches", status_code=201)
    async def create_branch(
        self, sandbox_id: str, data: GitBranch, principal: Principal, sandboxes: SandboxService
    ) -> GitOk:
        msg = guest.GitBranchCreate(id=0, path=data.path, name=data.name)
        await sandboxes.git(principal.org_id, sandbox_id, msg, guest.GitDone)
        return GitOk()

    @delete("/branches/{name:str}", status_code=200)
    async def delete_branch(
        self, sandbox_id: str, name: str, principal: Principal, sandboxes: SandboxService, path: str
    ) -> GitOk:
        msg = guest.GitBranchDelete(id=0, path=path, name=name)
        await sandboxes.git(principal.org_id, sandbox_id, msg, guest.GitDone)
        return GitOk()

    @post("/checkout", status_code=200)
    async def checkout(
        self, sandbox_id: str, data: GitCheckout, principal: Principal, sandboxes: SandboxService
    ) -> GitOk:
        msg = guest.GitCheckout(id=0, path=data.path, ref=data.ref)
        await sandboxes.git(principal.org_id, sandbox_id, msg, guest.GitDone)
        return GitOk()

    @get("/log")
    async def log(
        self,
        sandbox_id: str,
        principal: Principal,
        sandboxes: SandboxService,
        path: str,
        limit: int = Parameter(default=100, ge=1, le=10_000),
    ) -> GitLog:
        found = await sandboxes.git(
            principal.org_id, sandbox_id, guest.GitLog(id=0, path=path, limit=limit), guest.GitLogResult
        )
        return GitLog(
            commits=[
                GitCommitInfo(
                    sha=c.sha,
                    author_name=c.author_name,
                    author_email=c.author_email,
                    timestamp=c.timestamp,
                    message=c.message,
                )
                for c in found.commits
            ]
        )


class DaytonaGit(DaytonaController):
    """The SDK's ``sandbox.git``: snake_case bodies, 200 with no body where it expects none."""

    path = "/toolbox/{sandbox_id:str}/git"
    dependencies = _DEPS

    @post("/clone", status_code=200)
    async def clone(
        self, sandbox_id: str, data: DaytonaGitClone, principal: Principal, sandboxes: SandboxService
    ) -> None:
        msg = _clone(data)
        await sandboxes.git(principal.org_id, sandbox_id, msg, guest.GitDone)

    @get("/status")
    async def status(
        self, sandbox_id: str, principal: Principal, sandboxes: SandboxService, path: str
    ) -> DaytonaGitStatus:
        found = await sandboxes.git(
            principal.org_id, sandbox_id, guest.GitStatus(id=0, path=path), guest.GitStatusResult
        )
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
    async def add(
        self, sandbox_id: str, data: DaytonaGitAdd, principal: Principal, sandboxes: SandboxService
    ) -> None:
        msg = guest.GitAdd(id=0, path=data.path, files=data.files)
        await sandboxes.git(principal.org_id, sandbox_id, msg, guest.GitDone)

    @post("/commit", status_code=200)
    async def commit(
        self, sandbox_id: str, data: DaytonaGitCommit, principal: Principal, sandboxes: SandboxService
    ) -> DaytonaGitCommitted:
        msg = guest.GitCommit(
            id=0,
            path=data.path,
            message=data.message,
            author_name=data.author,
            author_email=data.email,
            allow_empty=bool(data.allow_empty),
        )
        done = await sandboxes.git(principal.org_id, sandbox_id, msg, guest.GitCommitResult)
        return DaytonaGitCommitted(hash=done.sha)

    @post("/push", status_code=200)
    async def push(
        self, sandbox_id: str, data: DaytonaGitSync, principal: Principal, sandboxes: SandboxService
    ) -> None:
        msg = _push(data)
        await sandboxes.git(principal.org_id, sandbox_id, msg, guest.GitDone)

    @post("/pull", status_code=200)
    async def pull(
        self, sandbox_id: str, data: DaytonaGitSync, principal: Principal, sandboxes: SandboxService
    ) -> None:
        msg = _pull(data)
        await sandboxes.git(principal.org_id, sandbox_id, msg, guest.GitDone)

    @get("/branches")
    async def branches(
        self, sandbox_id: str, principal: Principal, sandboxes: SandboxService, path: str
    ) -> DaytonaGitBranches:
        found = await sandboxes.git(
            principal.org_id, sandbox_id, guest.GitBranches(id=0, path=path), guest.GitBranchesResult
        )
        return DaytonaGitBranches(branches=found.branches, current=found.current)

    @post("/branches", status_code=200)
    async def create_branch(
        self, sandbox_id: str, data: DaytonaGitBranch, principal: Principal, sandboxes: SandboxService
    ) -> None:
        msg = guest.GitBranchCreate(id=0, path=data.path, name=data.name)
        await sandboxes.git(principal.org_id, sandbox_id, msg, guest.GitDone)

    @delete("/branches", status_code=200)
    async def delete_branch(
        self, sandbox_id: str, data: DaytonaGitBranch, principal: Principal, sandboxes: SandboxService
    ) -> None:
        msg = guest.GitBranchDelete(id=0, path=data.path, name=data.name)
        await sandboxes.git(principal.org_id, sandbox_id, msg, guest.GitDone)

    @post("/checkout", status_code=200)
    async def checkout(
        self, sandbox_id: str, data: DaytonaGitCheckout, principal: Principal, sandboxes: SandboxService
    ) -> None:
        msg = guest.GitCheckout(id=0, path=data.path, ref=data.branch)
        await sandboxes.git(principal.org_id, sandbox_id, msg, guest.GitDone)

    @get("/history")
    async def history(
        self, sandbox_id: str, principal: Principal, sandboxes: SandboxService, path: str
    ) -> list[DaytonaGitCommitInfo]:
        found = await sandboxes.git(
            principal.org_id, sandbox_id, guest.GitLog(id=0, path=path, limit=1000), guest.GitLogResult
        )
        return [
            DaytonaGitCommitInfo(
                hash=c.sha,
                author=c.author_name,
                email=c.author_email,
                message=c.message,
                timestamp=c.timestamp,
            )
            for c in found.commits
        ]
