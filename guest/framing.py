"""The agent's half of the hostd ↔ guest wire protocol, written with the stdlib only.

``contracts/guest.py`` is the source of truth. The agent cannot import it (the template's
python3 has no msgspec), so this module restates the constants, the frame header and the
message shapes by hand. ``tests/contracts/test_guest_wire.py`` proves both ends agree byte for
byte, which is why the reply builders below fix the key order msgspec uses: the ``t`` tag first,
then the message's own fields in the order ``contracts.guest`` declares them, then ``id``
(msgspec puts the keyword-only fields inherited from ``_Msg`` after the subclass's fields).

Binary frames belong to streams (``FsWrite``/``FsRead`` in ``contracts.guest``), which get a
connection of their own; ``binary_header`` frames their bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeGuard

AGENT_PORT = 52
PROTOCOL_VERSION = 8
BINARY_FLAG = 0x8000_0000
LENGTH_MASK = 0x7FFF_FFFF
MAX_JSON_FRAME = 16 * 1024 * 1024
HEADER_SIZE = 4
MAX_BINARY_FRAME = 1024 * 1024

DEFAULT_TIMEOUT_MS = 60_000
LANGUAGES = ("python", "bash", "javascript", "typescript")
GIT_TIMEOUT_MS = 300_000
FS_MAX_RESULTS = 10_000
FS_WALK_BUDGET_MS = 20_000
FS_LINE_MAX = 1000
PTY_MAX_SESSIONS = 32
PTY_SCROLLBACK = 64 * 1024
PTY_MAX_SIZE = 1000
PTY_KILL_GRACE_MS = 1000


class BadRequest(Exception):
    """A JSON frame that is not a valid request. ``request_id`` is 0 when no id could be read,
    so the host still gets an ``error`` frame it can log."""

    def __init__(self, request_id: int, message: str) -> None:
        super().__init__(message)
        self.request_id = request_id


@dataclass(frozen=True)
class PingRequest:
    id: int


@dataclass(frozen=True)
class ExecRequest:
    id: int
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    timeout_ms: int = DEFAULT_TIMEOUT_MS


@dataclass(frozen=True)
class CodeRunRequest:
    id: int
    language: str
    code: str
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    timeout_ms: int = DEFAULT_TIMEOUT_MS


@dataclass(frozen=True)
class DirsRequest:
    id: int


@dataclass(frozen=True)
class EnvSetRequest:
    id: int
    env: dict[str, str]


@dataclass(frozen=True)
class MetricsRequest:
    id: int


@dataclass(frozen=True)
class GitCloneRequest:
    id: int
    url: str
    path: str
    branch: str | None = None
    depth: int | None = None
    commit_id: str | None = None
    username: str | None = None
    password: str | None = None
    timeout_ms: int = GIT_TIMEOUT_MS


@dataclass(frozen=True)
class GitStatusRequest:
    id: int
    path: str


@dataclass(frozen=True)
class GitAddRequest:
    id: int
    path: str
    files: list[str]


@dataclass(frozen=True)
class GitCommitRequest:
    id: int
    path: str
    message: str
    author_name: str | None = None
    author_email: str | None = None
    allow_empty: bool = False


@dataclass(frozen=True)
class GitPushRequest:
    id: int
    path: str
    remote: str | None = None
    branch: str | None = None
    username: str | None = None
    password: str | None = None
    set_upstream: bool = False
    timeout_ms: int = GIT_TIMEOUT_MS


@dataclass(frozen=True)
class GitPullRequest:
    id: int
    path: str
    remote: str | None = None
    branch: str | None = None
    username: str | None = None
    password: str | None = None
    timeout_ms: int = GIT_TIMEOUT_MS


@dataclass(frozen=True)
class GitBranchesRequest:
    id: int
    path: str


@dataclass(frozen=True)
class GitBranchCreateRequest:
    id: int
    path: str
    name: str


@dataclass(frozen=True)
class GitBranchDeleteRequest:
    id: int
    path: str
    name: str


@dataclass(frozen=True)
class GitCheckoutRequest:
    id: int
    path: str
    ref: str


@dataclass(frozen=True)
class GitLogRequest:
    id: int
    path: str
    limit: int = 100


GitRequest = (
    GitCloneRequest
    | GitStatusRequest
    | GitAddRequest
    | GitCommitRequest
    | GitPushRequest
    | GitPullRequest
    | GitBranchesRequest
    | GitBranchCreateRequest
    | GitBranchDeleteRequest
    | GitCheckoutRequest
    | GitLogRequest
)


@dataclass(frozen=True)
class SessionRequest:
    """Any ``session.*`` request: ``kind`` is its ``t``; the fields it does not take keep their
    defaults (``contracts.guest`` has one class per request, the agent one handler)."""

    id: int
    kind: str
    session_id: str | None = None
    cwd: str | None = None
    command: str = ""
    command_id: str = ""
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    run_async: bool = False
    output: bool = False


@dataclass(frozen=True)
class FsRequest:
    """Any ``fs.*`` request: ``kind`` is its ``t``; the fields it does not take keep their
    defaults (``contracts.guest`` has one class per request, the agent one module)."""

    id: int
    kind: str
    path: str | None = None
    depth: int = 1
    mode: str | None = None
    recursive: bool = False
    source: str = ""
    destination: str = ""
    owner: str | None = None
    group: str | None = None
    pattern: str = ""
    max: int = 1000
    regex: bool = False
    files: list[str] = field(default_factory=list)
    glob: str | None = None
    find: str = ""
    replace: str = ""


@dataclass(frozen=True)
class FsWriteRequest:
    """``fs.write``: the opener of an upload stream."""

    id: int
    path: str
    mode: str | None = None


@dataclass(frozen=True)
class FsReadRequest:
    """``fs.read``: the opener of a download stream."""

    id: int
    path: str


@dataclass(frozen=True)
class PtyRequest:
    """Any ``pty.*`` relay request: ``kind`` is its ``t``; the fields it does not take keep
    their defaults (``contracts.guest`` has one class per request, the agent one module)."""

    id: int
    kind: str
    session_id: str | None = None
    cols: int = 80
    rows: int = 24
    cwd: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    lazy_start: bool = False


@dataclass(frozen=True)
class PtyAttachRequest:
    """``pty.attach``: the opener of a terminal stream."""

    id: int
    session_id: str
    create: bool = False
    cols: int = 80
    rows: int = 24
    cwd: str | None = None
    env: dict[str, str] = field(default_factory=dict)


StreamRequest = FsWriteRequest | FsReadRequest | PtyAttachRequest
"""The requests that open a stream: each must be the first frame of its own connection."""

Request = (
    PingRequest
    | ExecRequest
    | CodeRunRequest
    | DirsRequest
    | EnvSetRequest
    | MetricsRequest
    | GitRequest
    | SessionRequest
    | FsRequest
    | PtyRequest
)


def parse_header(header: bytes) -> tuple[int, bool]:
    """Split a 4-byte frame header into ``(length, is_binary)``."""
    value = int.from_bytes(header, "big")
    return value & LENGTH_MASK, bool(value & BINARY_FLAG)


def encode(message: Mapping[str, object]) -> bytes:
    """Return ``message`` as one JSON frame, header included.

    Compact separators and raw UTF-8 (no ``\\u`` escapes for non-ASCII) are what msgspec emits.
    Floats must be finite and written in fixed notation to match msgspec, which is why
    ``exec_result`` rounds ``duration_ms`` to whole microseconds.
    """
    payload = json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    return len(payload).to_bytes(HEADER_SIZE, "big") + payload


def binary_header(size: int) -> bytes:
    """The header of a binary frame of ``size`` bytes (at most ``MAX_BINARY_FRAME``)."""
    return (size | BINARY_FLAG).to_bytes(HEADER_SIZE, "big")


def fs_ready(request_id: int) -> dict[str, object]:
    return {"t": "fs.ready", "id": request_id}


def fs_written(request_id: int, path: str, size: int) -> dict[str, object]:
    return {"t": "fs.written", "path": path, "size": size, "id": request_id}


def fs_reading(request_id: int, path: str, size: int) -> dict[str, object]:
    return {"t": "fs.reading", "path": path, "size": size, "id": request_id}


def pong(request_id: int, agent: str) -> dict[str, object]:
    return {"t": "pong", "version": PROTOCOL_VERSION, "agent": agent, "id": request_id}


def exec_result(
    request_id: int,
    *,
    stdout: str,
    stderr: str,
    exit_code: int,
    duration_ms: float,
    timed_out: bool,
    truncated: bool = False,
) -> dict[str, object]:
    return {
        "t": "exec.result",
        "stdout": stdout,
        "stderr": stderr,
        "exit_code": exit_code,
        "duration_ms": round(duration_ms, 3),
        "timed_out": timed_out,
        "truncated": truncated,
        "id": request_id,
    }


def env_done(request_id: int) -> dict[str, object]:
    return {"t": "env.done", "id": request_id}


def dirs_result(request_id: int, *, home: str, work: str, project: str) -> dict[str, object]:
    return {"t": "dirs.result", "home": home, "work": work, "project": project, "id": request_id}


def metrics_result(
    request_id: int, *, cpus: float, mem_limit_bytes: int, mem_used_bytes: int, load_1m: float
) -> dict[str, object]:
    """Floats are rounded to 3 decimals for the same reason as ``exec_result``'s duration."""
    return {
        "t": "metrics.result",
        "cpus": round(cpus, 3),
        "mem_limit_bytes": mem_limit_bytes,
        "mem_used_bytes": mem_used_bytes,
        "load_1m": round(load_1m, 3),
        "id": request_id,
    }


def git_done(request_id: int) -> dict[str, object]:
    return {"t": "git.done", "id": request_id}


def git_status_result(
    request_id: int,
    *,
    branch: str,
    detached: bool,
    upstream: str,
    ahead: int,
    behind: int,
    files: list[dict[str, object]],
) -> dict[str, object]:
    """``files``: ``git_file_status`` dicts."""
    return {
        "t": "git.status.result",
        "branch": branch,
        "detached": detached,
        "upstream": upstream,
        "ahead": ahead,
        "behind": behind,
        "files": files,
        "id": request_id,
    }


def git_file_status(
    path: str, staging: str, worktree: str, orig_path: str | None = None
) -> dict[str, object]:
    return {"path": path, "staging": staging, "worktree": worktree, "orig_path": orig_path}


def git_commit_result(request_id: int, sha: str) -> dict[str, object]:
    return {"t": "git.commit.result", "sha": sha, "id": request_id}


def git_branches_result(request_id: int, *, branches: list[str], current: str) -> dict[str, object]:
    return {"t": "git.branches.result", "branches": branches, "current": current, "id": request_id}


def git_commit_info(
    *, sha: str, author_name: str, author_email: str, timestamp: str, message: str
) -> dict[str, object]:
    return {
        "sha": sha,
        "author_name": author_name,
        "author_email": author_email,
        "timestamp": timestamp,
        "message": message,
    }


def git_log_result(request_id: int, commits: list[dict[str, object]]) -> dict[str, object]:
    return {"t": "git.log.result", "commits": commits, "id": request_id}


def session_command_info(
    *,
    command_id: str,
    command: str,
    exit_code: int | None,
    timed_out: bool,
    cwd: str | None,
    stdout: str = "",
    stderr: str = "",
) -> dict[str, object]:
    """A ``SessionCommandInfo`` (nested, so no ``t`` and no ``id``)."""
    return {
        "command_id": command_id,
        "command": command,
        "exit_code": exit_code,
        "timed_out": timed_out,
        "cwd": cwd,
        "stdout": stdout,
        "stderr": stderr,
    }


def session_info(
    *, session_id: str, cwd: str, alive: bool, commands: list[dict[str, object]]
) -> dict[str, object]:
    return {"session_id": session_id, "cwd": cwd, "alive": alive, "commands": commands}


def session_result(request_id: int, session: dict[str, object]) -> dict[str, object]:
    return {"t": "session.result", "session": session, "id": request_id}


def session_list_result(request_id: int, sessions: list[dict[str, object]]) -> dict[str, object]:
    return {"t": "session.list.result", "sessions": sessions, "id": request_id}


def session_command_result(request_id: int, command: dict[str, object]) -> dict[str, object]:
    return {"t": "session.command.result", "command": command, "id": request_id}


def fs_entry(
    *,
    name: str,
    path: str,
    is_dir: bool,
    size: int,
    mode: str,
    permissions: str,
    owner: str,
    group: str,
    mtime_ns: int,
    link_target: str | None,
) -> dict[str, object]:
    """An ``FsEntry`` (nested, so no ``t`` and no ``id``)."""
    return {
        "name": name,
        "path": path,
        "is_dir": is_dir,
        "size": size,
        "mode": mode,
        "permissions": permissions,
        "owner": owner,
        "group": group,
        "mtime_ns": mtime_ns,
        "link_target": link_target,
    }


def fs_done(request_id: int) -> dict[str, object]:
    return {"t": "fs.done", "id": request_id}


def fs_list_result(request_id: int, entries: list[dict[str, object]], truncated: bool) -> dict[str, object]:
    return {"t": "fs.list.result", "entries": entries, "truncated": truncated, "id": request_id}


def fs_stat_result(request_id: int, entry: dict[str, object]) -> dict[str, object]:
    return {"t": "fs.stat.result", "entry": entry, "id": request_id}


def fs_paths_result(request_id: int, paths: list[str], truncated: bool) -> dict[str, object]:
    return {"t": "fs.paths.result", "paths": paths, "truncated": truncated, "id": request_id}


def fs_match(file: str, line: int, content: str) -> dict[str, object]:
    return {"file": file, "line": line, "content": content}


def fs_grep_result(request_id: int, matches: list[dict[str, object]], truncated: bool) -> dict[str, object]:
    return {"t": "fs.grep.result", "matches": matches, "truncated": truncated, "id": request_id}


def fs_replace_outcome(
    file: str, success: bool, replacements: int = 0, error: str | None = None
) -> dict[str, object]:
    return {"file": file, "success": success, "replacements": replacements, "error": error}


def fs_replace_result(request_id: int, results: list[dict[str, object]]) -> dict[str, object]:
    return {"t": "fs.replace.result", "results": results, "id": request_id}


def pty_info(
    *,
    session_id: str,
    cols: int,
    rows: int,
    cwd: str,
    env: dict[str, str],
    created_at: str,
    active: bool,
    exit_code: int | None,
    clients: int,
    ephemeral: bool,
    lazy_start: bool,
    pid: int | None,
) -> dict[str, object]:
    """A ``PtyInfo`` (nested, so no ``t`` and no ``id``)."""
    return {
        "session_id": session_id,
        "cols": cols,
        "rows": rows,
        "cwd": cwd,
        "env": env,
        "created_at": created_at,
        "active": active,
        "exit_code": exit_code,
        "clients": clients,
        "ephemeral": ephemeral,
        "lazy_start": lazy_start,
        "pid": pid,
    }


def pty_result(request_id: int, session: dict[str, object]) -> dict[str, object]:
    return {"t": "pty.result", "session": session, "id": request_id}


def pty_list_result(request_id: int, sessions: list[dict[str, object]]) -> dict[str, object]:
    return {"t": "pty.list.result", "sessions": sessions, "id": request_id}


def pty_attached(request_id: int, session: dict[str, object]) -> dict[str, object]:
    return {"t": "pty.attached", "session": session, "id": request_id}


def pty_exited(request_id: int, exit_code: int) -> dict[str, object]:
    return {"t": "pty.exited", "exit_code": exit_code, "id": request_id}


def error(request_id: int, code: str, message: str) -> dict[str, object]:
    return {"t": "error", "code": code, "message": message, "id": request_id}


def parse_request(payload: bytes) -> Request | StreamRequest:
    """Decode and validate one JSON frame from the host.

    Unknown fields are ignored, as msgspec does, so a newer host can add optional fields
    without breaking an older agent. Anything else that ``contracts.guest`` would reject
    raises ``BadRequest``.
    """
    try:
        message = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(0, f"malformed JSON: {exc}") from None
    if not isinstance(message, dict):
        raise BadRequest(0, "a frame must be a JSON object")
    request_id = message.get("id")
    if not _is_int(request_id):
        raise BadRequest(0, "'id' must be an integer")
    kind = message.get("t")
    if kind == "ping":
        return PingRequest(request_id)
    if kind == "exec":
        return _parse_exec(request_id, message)
    if kind == "code.run":
        return _parse_code_run(request_id, message)
    if kind == "env.set":
        env = message.get("env")
        if not isinstance(env, dict) or not all(
            isinstance(k, str) and isinstance(x, str) for k, x in env.items()
        ):
            raise BadRequest(request_id, "'env' must be an object of strings")
        return EnvSetRequest(request_id, env)
    if kind == "dirs":
        return DirsRequest(request_id)
    if kind == "metrics":
        return MetricsRequest(request_id)
    if isinstance(kind, str) and kind in _GIT_FIELDS:
        return _parse_git(request_id, kind, message)
    if isinstance(kind, str) and kind in _SESSION_FIELDS:
        return _parse_session(request_id, kind, message)
    if isinstance(kind, str) and kind in _FS_FIELDS:
        return _parse_fs(request_id, kind, message)
    if kind in ("fs.write", "fs.read"):
        return _parse_transfer(request_id, kind, message)
    if isinstance(kind, str) and kind in _PTY_FIELDS:
        return _parse_pty(request_id, kind, message)
    raise BadRequest(request_id, f"unknown message type {kind!r}")


_GIT_FIELDS: dict[str, tuple[type, tuple[str, ...], tuple[str, ...]]] = {
    # tag: (request class, required str fields, optional str fields)
    "git.clone": (GitCloneRequest, ("url", "path"), ("branch", "commit_id", "username", "password")),
    "git.status": (GitStatusRequest, ("path",), ()),
    "git.add": (GitAddRequest, ("path",), ()),
    "git.commit": (GitCommitRequest, ("path", "message"), ("author_name", "author_email")),
    "git.push": (GitPushRequest, ("path",), ("remote", "branch", "username", "password")),
    "git.pull": (GitPullRequest, ("path",), ("remote", "branch", "username", "password")),
    "git.branches": (GitBranchesRequest, ("path",), ()),
    "git.branch.create": (GitBranchCreateRequest, ("path", "name"), ()),
    "git.branch.delete": (GitBranchDeleteRequest, ("path", "name"), ()),
    "git.checkout": (GitCheckoutRequest, ("path", "ref"), ()),
    "git.log": (GitLogRequest, ("path",), ()),
}


def _parse_git(request_id: int, kind: str, message: dict[str, object]) -> GitRequest:
    """The git requests: string fields, plus ``files``, ``depth``, ``limit``, ``timeout_ms``
    and the two flags where the request has them."""
    cls, required, optional = _GIT_FIELDS[kind]
    fields: dict[str, object] = {}
    for name in required:
        value = message.get(name)
        if not isinstance(value, str):
            raise BadRequest(request_id, f"{name!r} must be a string")
        fields[name] = value
    for name in optional:
        value = message.get(name)
        if value is not None and not isinstance(value, str):
            raise BadRequest(request_id, f"{name!r} must be a string or null")
        fields[name] = value
    if kind == "git.add":
        files = message.get("files")
        if not _is_str_list(files):
            raise BadRequest(request_id, "'files' must be a list of strings")
        fields["files"] = files
    if kind == "git.clone":
        depth = message.get("depth")
        if depth is not None and not _is_int(depth):
            raise BadRequest(request_id, "'depth' must be an integer or null")
        fields["depth"] = depth
    if kind == "git.log":
        limit = message.get("limit", 100)
        if not _is_int(limit):
            raise BadRequest(request_id, "'limit' must be an integer")
        fields["limit"] = limit
    for flag, owner in (("allow_empty", "git.commit"), ("set_upstream", "git.push")):
        if kind == owner:
            value = message.get(flag, False)
            if not isinstance(value, bool):
                raise BadRequest(request_id, f"{flag!r} must be a boolean")
            fields[flag] = value
    if kind in ("git.clone", "git.push", "git.pull"):
        timeout_ms = message.get("timeout_ms", GIT_TIMEOUT_MS)
        if not _is_int(timeout_ms):
            raise BadRequest(request_id, "'timeout_ms' must be an integer")
        fields["timeout_ms"] = timeout_ms
    request: GitRequest = cls(request_id, **fields)
    return request


def _parse_exec(request_id: int, message: dict[str, object]) -> ExecRequest:
    argv = message.get("argv")
    if not _is_str_list(argv) or not argv:
        raise BadRequest(request_id, "'argv' must be a non-empty list of strings")
    env, cwd, timeout_ms = _parse_run_options(request_id, message)
    return ExecRequest(request_id, argv=argv, env=env, cwd=cwd, timeout_ms=timeout_ms)


def _parse_code_run(request_id: int, message: dict[str, object]) -> CodeRunRequest:
    language = message.get("language")
    if language not in LANGUAGES:
        raise BadRequest(request_id, f"'language' must be one of {', '.join(LANGUAGES)}")
    assert isinstance(language, str)
    code = message.get("code")
    if not isinstance(code, str):
        raise BadRequest(request_id, "'code' must be a string")
    argv = message.get("argv", [])
    if not _is_str_list(argv):
        raise BadRequest(request_id, "'argv' must be a list of strings")
    env, cwd, timeout_ms = _parse_run_options(request_id, message)
    return CodeRunRequest(
        request_id, language=language, code=code, argv=argv, env=env, cwd=cwd, timeout_ms=timeout_ms
    )


def _parse_run_options(request_id: int, message: dict[str, object]) -> tuple[dict[str, str], str | None, int]:
    """The ``env``, ``cwd`` and ``timeout_ms`` that ``exec`` and ``code.run`` share."""
    env = message.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(value, str) for value in env.values()):
        raise BadRequest(request_id, "'env' must map strings to strings")
    cwd = message.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        raise BadRequest(request_id, "'cwd' must be a string or null")
    timeout_ms = message.get("timeout_ms", DEFAULT_TIMEOUT_MS)
    if not _is_int(timeout_ms) or timeout_ms <= 0:
        raise BadRequest(request_id, "'timeout_ms' must be a positive integer")
    return env, cwd, timeout_ms


_SESSION_FIELDS: dict[str, tuple[str, ...]] = {
    # tag: required string fields
    "session.create": (),
    "session.list": (),
    "session.get": ("session_id",),
    "session.delete": ("session_id",),
    "session.exec": ("session_id", "command"),
    "session.command": ("session_id", "command_id"),
    "session.logs": ("session_id", "command_id"),
}


def _parse_session(request_id: int, kind: str, message: dict[str, object]) -> SessionRequest:
    strings: dict[str, str] = {}
    for name in _SESSION_FIELDS[kind]:
        value = message.get(name)
        if not isinstance(value, str):
            raise BadRequest(request_id, f"'{name}' must be a string")
        strings[name] = value
    session_id = strings.get("session_id", message.get("session_id"))
    cwd = message.get("cwd")
    for name, optional in (("session_id", session_id), ("cwd", cwd)):
        if optional is not None and not isinstance(optional, str):
            raise BadRequest(request_id, f"'{name}' must be a string or null")
    timeout_ms = message.get("timeout_ms", DEFAULT_TIMEOUT_MS)
    if not _is_int(timeout_ms) or timeout_ms < 0:
        raise BadRequest(request_id, "'timeout_ms' must be a non-negative integer")
    flags = {name: message.get(name, False) for name in ("run_async", "output")}
    for name, flag in flags.items():
        if not isinstance(flag, bool):
            raise BadRequest(request_id, f"'{name}' must be a boolean")
    return SessionRequest(
        request_id,
        kind=kind,
        session_id=session_id if isinstance(session_id, str) else None,
        cwd=cwd if isinstance(cwd, str) else None,
        command=strings.get("command", ""),
        command_id=strings.get("command_id", ""),
        timeout_ms=timeout_ms,
        run_async=bool(flags["run_async"]),
        output=bool(flags["output"]),
    )


_FS_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    # tag: (required str fields, optional str fields, int fields, bool fields)
    "fs.list": (("path",), (), ("depth",), ()),
    "fs.stat": (("path",), (), (), ()),
    "fs.mkdir": (("path", "mode"), (), (), ()),
    "fs.remove": (("path",), (), (), ("recursive",)),
    "fs.move": (("source", "destination"), (), (), ()),
    "fs.chmod": (("path",), ("mode", "owner", "group"), (), ()),
    "fs.find_names": (("path", "pattern"), (), ("max",), ()),
    "fs.grep": (("path", "pattern"), (), ("max",), ("regex",)),
    "fs.replace": (("find", "replace"), ("path", "glob"), (), ("regex",)),
}
_FS_DEFAULTS: dict[str, object] = {"depth": 1, "max": 1000, "mode": "755"}


def _parse_fs(request_id: int, kind: str, message: dict[str, object]) -> FsRequest:
    required, optional, ints, bools = _FS_FIELDS[kind]
    fields: dict[str, object] = {}
    for name in required:
        value = message.get(name, _FS_DEFAULTS.get(name))
        if not isinstance(value, str):
            raise BadRequest(request_id, f"{name!r} must be a string")
        fields[name] = value
    for name in optional:
        value = message.get(name)
        if value is not None and not isinstance(value, str):
            raise BadRequest(request_id, f"{name!r} must be a string or null")
        fields[name] = value
    for name in ints:
        value = message.get(name, _FS_DEFAULTS[name])
        if not _is_int(value):
            raise BadRequest(request_id, f"{name!r} must be an integer")
        fields[name] = value
    for name in bools:
        value = message.get(name, False)
        if not isinstance(value, bool):
            raise BadRequest(request_id, f"{name!r} must be a boolean")
        fields[name] = value
    if kind == "fs.replace":
        files = message.get("files", [])
        if not _is_str_list(files):
            raise BadRequest(request_id, "'files' must be a list of strings")
        fields["files"] = files
    return FsRequest(request_id, kind, **fields)  # type: ignore[arg-type]


def _parse_transfer(request_id: int, kind: str, message: dict[str, object]) -> StreamRequest:
    path = message.get("path")
    if not isinstance(path, str):
        raise BadRequest(request_id, "'path' must be a string")
    if kind == "fs.read":
        return FsReadRequest(request_id, path)
    mode = message.get("mode")
    if mode is not None and not isinstance(mode, str):
        raise BadRequest(request_id, "'mode' must be a string or null")
    return FsWriteRequest(request_id, path, mode)


_PTY_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    # tag: (required str fields, optional str fields, int fields, bool fields)
    "pty.create": ((), ("session_id", "cwd"), ("cols", "rows"), ("lazy_start",)),
    "pty.list": ((), (), (), ()),
    "pty.get": (("session_id",), (), (), ()),
    "pty.kill": (("session_id",), (), (), ()),
    "pty.resize": (("session_id", "cols", "rows"), (), (), ()),
    "pty.attach": (("session_id",), ("cwd",), ("cols", "rows"), ("create",)),
}


def _parse_pty(request_id: int, kind: str, message: dict[str, object]) -> PtyRequest | PtyAttachRequest:
    required, optional, ints, bools = _PTY_FIELDS[kind]
    fields: dict[str, object] = {}
    for name in required:
        value = message.get(name)
        if name in ("cols", "rows"):
            if not _is_int(value):
                raise BadRequest(request_id, f"{name!r} must be an integer")
        elif not isinstance(value, str):
            raise BadRequest(request_id, f"{name!r} must be a string")
        fields[name] = value
    for name in optional:
        value = message.get(name)
        if value is not None and not isinstance(value, str):
            raise BadRequest(request_id, f"{name!r} must be a string or null")
        fields[name] = value
    for name in ints:
        value = message.get(name, 80 if name == "cols" else 24)
        if not _is_int(value):
            raise BadRequest(request_id, f"{name!r} must be an integer")
        fields[name] = value
    for name in bools:
        value = message.get(name, False)
        if not isinstance(value, bool):
            raise BadRequest(request_id, f"{name!r} must be a boolean")
        fields[name] = value
    if kind in ("pty.create", "pty.attach"):
        env = message.get("env", {})
        if not isinstance(env, dict) or not all(isinstance(value, str) for value in env.values()):
            raise BadRequest(request_id, "'env' must map strings to strings")
        fields["env"] = env
    if kind == "pty.attach":
        return PtyAttachRequest(request_id, **fields)  # type: ignore[arg-type]
    return PtyRequest(request_id, kind, **fields)  # type: ignore[arg-type]


def _is_str_list(value: object) -> TypeGuard[list[str]]:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _is_int(value: object) -> TypeGuard[int]:
    """JSON integers only: Python's ``bool`` is an ``int`` but ``true`` is not a valid id."""
    return isinstance(value, int) and not isinstance(value, bool)
