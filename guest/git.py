"""The agent's git handlers (``git.*`` in ``contracts/guest.py``): each runs the sandbox's own
``git`` CLI as the sandbox user, through ``runner.run`` like any command.

Credentials. ``username``/``password`` reach only the one git process that needs them: they
go into its environment (``DNAH_GIT_USERNAME``/``DNAH_GIT_PASSWORD``), and a credential helper
given on its command line (``git -c credential.helper=...``, which lasts for that invocation
only, unlike ``git clone -c``) prints them when git asks. The helper's text holds no secret,
so the secret is never on a command line, in a file, in ``.git/config`` or in a remote URL.
An empty ``credential.helper`` first clears any helper the user configured, so no
``store`` helper can write them down either. ``GIT_TERMINAL_PROMPT=0`` makes a missing or
wrong credential a quick failure instead of a prompt that would wait for the timeout.

Failures. A git command that exits non-zero becomes an ``error`` reply ``bad_request`` with
git's own message; a ``path`` that does not exist is ``not_found``.

Stdlib only, like the rest of the agent.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import TypeVar

from guest import framing, runner

LOCAL_TIMEOUT_MS = 25_000
"""How long a git command that does not reach the network may run: less than the 30 s hostd
waits for the reply to a request without a ``timeout_ms``, so a slow one ends in git's own
timeout error rather than a lost reply."""
_CREDENTIAL_HELPER = (
    '!f() { test "$1" = get || exit 0; '
    'echo "username=${DNAH_GIT_USERNAME}"; echo "password=${DNAH_GIT_PASSWORD}"; }; f'
)
_FIELD_SEP = "\x1f"
_RECORD_SEP = "\x1e"


class GitError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


_Req = TypeVar("_Req", bound=framing.GitRequest)


def _handler(
    func: Callable[[_Req, dict[str, str]], dict[str, object]],
) -> Callable[[_Req, dict[str, str]], dict[str, object]]:
    """Turn a ``GitError`` into the ``error`` reply it names."""

    @functools.wraps(func)
    def wrapper(request: _Req, base_env: dict[str, str]) -> dict[str, object]:
        try:
            return func(request, base_env)
        except GitError as exc:
            return framing.error(request.id, exc.code, str(exc))

    return wrapper


def _git(
    args: list[str],
    base_env: dict[str, str],
    *,
    cwd: str | None,
    timeout_ms: int = LOCAL_TIMEOUT_MS,
    username: str | None = None,
    password: str | None = None,
) -> str:
    """Run ``git args`` and return its stdout; raise ``GitError`` if it fails."""
    env = base_env | {"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    argv = ["git"]
    if username is not None or password is not None:
        env |= {"DNAH_GIT_USERNAME": username or "", "DNAH_GIT_PASSWORD": password or ""}
        argv += ["-c", "credential.helper=", "-c", f"credential.helper={_CREDENTIAL_HELPER}"]
    outcome = runner.run([*argv, *args], env=env, cwd=cwd, timeout_ms=timeout_ms)
    if outcome.timed_out:
        raise GitError("bad_request", f"git {args[0]} timed out after {timeout_ms / 1000:g} s")
    if outcome.exit_code != 0:
        message = (outcome.stderr.strip() or outcome.stdout.strip()) or f"git exited with {outcome.exit_code}"
        raise GitError("bad_request", message)
    return outcome.stdout


def _repo(path: str) -> str:
    """The repository directory, absolute (relative paths start at the agent's directory)."""
    full = os.path.abspath(path)
    if not os.path.isdir(full):
        raise GitError("not_found", f"{path}: no such directory")
    return full


def _name(value: str, what: str) -> str:
    """A branch, ref or remote name; one starting with ``-`` would be read as an option."""
    if not value or value.startswith("-"):
        raise GitError("bad_request", f"invalid {what} {value!r}")
    return value


@_handler
def clone(request: framing.GitCloneRequest, base_env: dict[str, str]) -> dict[str, object]:
    if not request.url or request.url.startswith("-"):
        raise GitError("bad_request", f"invalid url {request.url!r}")
    if not request.path:
        raise GitError("bad_request", "'path' must not be empty")
    target = os.path.abspath(request.path)
    args = ["clone", "--quiet"]
    if request.branch:
        args += ["--branch", _name(request.branch, "branch")]
    if request.depth is not None:
        if request.depth < 1:
            raise GitError("bad_request", "'depth' must be at least 1")
        args += ["--depth", str(request.depth)]
    args += ["--", request.url, target]
    _git(
        args,
        base_env,
        cwd=None,
        timeout_ms=request.timeout_ms,
        username=request.username,
        password=request.password,
    )
    if request.commit_id:
        _git(
            ["checkout", "--quiet", "--detach", _name(request.commit_id, "commit"), "--"],
            base_env,
            cwd=target,
        )
    return framing.git_done(request.id)


@_handler
def status(request: framing.GitStatusRequest, base_env: dict[str, str]) -> dict[str, object]:
    out = _git(["status", "--porcelain=v2", "--branch", "-z"], base_env, cwd=_repo(request.path))
    branch, upstream, ahead, behind = "", "", 0, 0
    files: list[dict[str, object]] = []
    fields = iter(out.split("\0"))
    for entry in fields:
        if entry.startswith("# branch.head "):
            branch = entry.removeprefix("# branch.head ")
        elif entry.startswith("# branch.upstream "):
            upstream = entry.removeprefix("# branch.upstream ")
        elif entry.startswith("# branch.ab "):
            plus, minus = entry.removeprefix("# branch.ab ").split()
            ahead, behind = int(plus), -int(minus)
        elif entry.startswith("1 "):
            parts = entry.split(" ", 8)
            files.append(framing.git_file_status(parts[8], parts[1][0], parts[1][1]))
        elif entry.startswith("2 "):
            parts = entry.split(" ", 9)
            files.append(framing.git_file_status(parts[9], parts[1][0], parts[1][1], next(fields, "")))
        elif entry.startswith("u "):
            parts = entry.split(" ", 10)
            files.append(framing.git_file_status(parts[10], parts[1][0], parts[1][1]))
        elif entry.startswith("? "):
            files.append(framing.git_file_status(entry[2:], "?", "?"))
    detached = branch == "(detached)"
    return framing.git_status_result(
        request.id,
        branch="" if detached else branch,
        detached=detached,
        upstream=upstream,
        ahead=ahead,
        behind=behind,
        files=files,
    )


@_handler
def add(request: framing.GitAddRequest, base_env: dict[str, str]) -> dict[str, object]:
    if not request.files:
        raise GitError("bad_request", "'files' must name at least one path")
    _git(["add", "--", *request.files], base_env, cwd=_repo(request.path))
    return framing.git_done(request.id)


@_handler
def commit(request: framing.GitCommitRequest, base_env: dict[str, str]) -> dict[str, object]:
    repo = _repo(request.path)
    identity: list[str] = []
    if request.author_name is not None:
        identity += ["-c", f"user.name={request.author_name}"]
    if request.author_email is not None:
        identity += ["-c", f"user.email={request.author_email}"]
    args = [*identity, "commit", "--quiet", "--message", request.message]
    if request.allow_empty:
        args.append("--allow-empty")
    _git(args, base_env, cwd=repo)
    sha = _git(["rev-parse", "HEAD"], base_env, cwd=repo).strip()
    return framing.git_commit_result(request.id, sha)


@_handler
def push(request: framing.GitPushRequest, base_env: dict[str, str]) -> dict[str, object]:
    args = ["push", "--quiet"]
    if request.set_upstream:
        args.append("--set-upstream")
    remote = _name(request.remote, "remote") if request.remote else "origin"
    args += [remote, _name(request.branch, "branch") if request.branch else "HEAD"]
    _git(
        args,
        base_env,
        cwd=_repo(request.path),
        timeout_ms=request.timeout_ms,
        username=request.username,
        password=request.password,
    )
    return framing.git_done(request.id)


@_handler
def pull(request: framing.GitPullRequest, base_env: dict[str, str]) -> dict[str, object]:
    args = ["pull", "--quiet", "--no-rebase"]
    if request.remote or request.branch:
        args.append(_name(request.remote, "remote") if request.remote else "origin")
    if request.branch:
        args.append(_name(request.branch, "branch"))
    _git(
        args,
        base_env,
        cwd=_repo(request.path),
        timeout_ms=request.timeout_ms,
        username=request.username,
        password=request.password,
    )
    return framing.git_done(request.id)


@_handler
def branches(request: framing.GitBranchesRequest, base_env: dict[str, str]) -> dict[str, object]:
    repo = _repo(request.path)
    names = _git(["for-each-ref", "--format=%(refname:short)", "refs/heads"], base_env, cwd=repo)
    try:
        current = _git(["symbolic-ref", "--quiet", "--short", "HEAD"], base_env, cwd=repo).strip()
    except GitError:  # detached HEAD
        current = ""
    found = names.splitlines()
    if current and current not in found:  # a branch with no commits yet
        found.insert(0, current)
    return framing.git_branches_result(request.id, branches=found, current=current)


@_handler
def branch_create(request: framing.GitBranchCreateRequest, base_env: dict[str, str]) -> dict[str, object]:
    _git(["branch", "--", _name(request.name, "branch")], base_env, cwd=_repo(request.path))
    return framing.git_done(request.id)


@_handler
def branch_delete(request: framing.GitBranchDeleteRequest, base_env: dict[str, str]) -> dict[str, object]:
    _git(["branch", "-D", "--", _name(request.name, "branch")], base_env, cwd=_repo(request.path))
    return framing.git_done(request.id)


@_handler
def checkout(request: framing.GitCheckoutRequest, base_env: dict[str, str]) -> dict[str, object]:
    _git(["checkout", "--quiet", _name(request.ref, "ref")], base_env, cwd=_repo(request.path))
    return framing.git_done(request.id)


@_handler
def log(request: framing.GitLogRequest, base_env: dict[str, str]) -> dict[str, object]:
    if request.limit < 1:
        raise GitError("bad_request", "'limit' must be at least 1")
    repo = _repo(request.path)
    fmt = _FIELD_SEP.join(("%H", "%an", "%ae", "%aI", "%B")) + _RECORD_SEP
    try:
        out = _git(["log", f"--max-count={request.limit}", f"--format={fmt}"], base_env, cwd=repo)
    except GitError as exc:
        if "does not have any commits yet" in str(exc):
            return framing.git_log_result(request.id, [])
        raise
    commits: list[dict[str, object]] = []
    for record in out.split(_RECORD_SEP):
        record = record.lstrip("\n")
        if not record:
            continue
        sha, name, email, stamp, message = record.split(_FIELD_SEP, 4)
        commits.append(
            framing.git_commit_info(
                sha=sha, author_name=name, author_email=email, timestamp=stamp, message=message.strip()
            )
        )
    return framing.git_log_result(request.id, commits)
