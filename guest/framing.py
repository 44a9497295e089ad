"""The agent's half of the hostd ↔ guest wire protocol, written with the stdlib only.

``contracts/guest.py`` is the source of truth. The agent cannot import it (the template's
python3 has no msgspec), so this module restates the constants, the frame header and the
message shapes by hand. ``tests/contracts/test_guest_wire.py`` proves both ends agree byte for
byte, which is why the reply builders below fix the key order msgspec uses: the ``t`` tag first,
then the message's own fields in the order ``contracts.guest`` declares them, then ``id``
(msgspec puts the keyword-only fields inherited from ``_Msg`` after the subclass's fields).

The request classes and their validation live in ``guest/requests``, imported on first use
(see there why); every request name is still reachable as ``framing.<Name>``.

Binary frames belong to streams (``FsWrite``/``FsRead`` in ``contracts.guest``), which get a
connection of their own; ``binary_header`` frames their bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from guest import lazy

TYPE_CHECKING = False
if TYPE_CHECKING:  # what ``__getattr__`` hands out at run time, for the type checker
    from typing import TypeGuard

    from guest.requests import (
        CodeRunRequest as CodeRunRequest,
    )
    from guest.requests import (
        DirsRequest as DirsRequest,
    )
    from guest.requests import (
        EnvSetRequest as EnvSetRequest,
    )
    from guest.requests import (
        ExecRequest as ExecRequest,
    )
    from guest.requests import (
        FsReadRequest as FsReadRequest,
    )
    from guest.requests import (
        FsRequest as FsRequest,
    )
    from guest.requests import (
        FsWatchRequest as FsWatchRequest,
    )
    from guest.requests import (
        FsWriteRequest as FsWriteRequest,
    )
    from guest.requests import (
        GitAddRequest as GitAddRequest,
    )
    from guest.requests import (
        GitBranchCreateRequest as GitBranchCreateRequest,
    )
    from guest.requests import (
        GitBranchDeleteRequest as GitBranchDeleteRequest,
    )
    from guest.requests import (
        GitBranchesRequest as GitBranchesRequest,
    )
    from guest.requests import (
        GitCheckoutRequest as GitCheckoutRequest,
    )
    from guest.requests import (
        GitCloneRequest as GitCloneRequest,
    )
    from guest.requests import (
        GitCommitRequest as GitCommitRequest,
    )
    from guest.requests import (
        GitLogRequest as GitLogRequest,
    )
    from guest.requests import (
        GitPullRequest as GitPullRequest,
    )
    from guest.requests import (
        GitPushRequest as GitPushRequest,
    )
    from guest.requests import (
        GitRequest as GitRequest,
    )
    from guest.requests import (
        GitStatusRequest as GitStatusRequest,
    )
    from guest.requests import (
        MetricsRequest as MetricsRequest,
    )
    from guest.requests import (
        ProcConnectRequest as ProcConnectRequest,
    )
    from guest.requests import (
        ProcRequest as ProcRequest,
    )
    from guest.requests import (
        ProcSpawnRequest as ProcSpawnRequest,
    )
    from guest.requests import (
        ProcStartRequest as ProcStartRequest,
    )
    from guest.requests import (
        PtyAttachRequest as PtyAttachRequest,
    )
    from guest.requests import (
        PtyRequest as PtyRequest,
    )
    from guest.requests import (
        Request as Request,
    )
    from guest.requests import (
        SessionRequest as SessionRequest,
    )
    from guest.requests import (
        StreamRequest as StreamRequest,
    )


AGENT_PORT = 52
PROTOCOL_VERSION = 11
"""``contracts.guest.PROTOCOL_VERSION``, restated (tested equal); ``pong`` reports it and hostd
refuses to talk to an agent whose version is not its own."""
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
FS_WATCH_MAX = 32
FS_WATCH_DIRS = 8192
FS_WATCH_QUEUE = 10_000
FS_WATCH_QUEUE_BYTES = 4 * 1024 * 1024
FS_WATCH_IDLE_MS = 600_000
PTY_MAX_SESSIONS = 32
PTY_SCROLLBACK = 64 * 1024
PTY_MAX_SIZE = 1000
PTY_KILL_GRACE_MS = 1000
PROC_STDOUT = 1
PROC_STDERR = 2
PROC_PTY = 3
PROC_OUTPUT_KEPT = 1024 * 1024
PROC_KEEP_EXITED_MS = 300_000
PROC_MAX_EXITED = 64
PROC_EXITED_KEPT = 16 * 1024 * 1024
PROC_MAX_RUNNING = 1024
PROC_INPUT_MAX = 8 * 1024 * 1024
PROC_INPUT_WAIT_MS = 10_000
PROC_CLIENT_BACKLOG = 1024 * 1024
PROC_CLIENT_STALL_MS = 10_000


class BadRequest(Exception):
    """A JSON frame that is not a valid request. ``request_id`` is 0 when no id could be read,
    so the host still gets an ``error`` frame it can log."""

    def __init__(self, request_id: int, message: str) -> None:
        super().__init__(message)
        self.request_id = request_id


class PingRequest:
    """``ping``: the one request parsed without ``guest.requests`` (a plain class, not a
    dataclass, for the same reason)."""

    __slots__ = ("id",)

    def __init__(self, id: int) -> None:
        self.id = id

    def __eq__(self, other: object) -> bool:
        return type(other) is PingRequest and other.id == self.id

    def __hash__(self) -> int:
        return hash((PingRequest, self.id))

    def __repr__(self) -> str:
        return f"PingRequest(id={self.id})"


def __getattr__(name: str) -> object:
    """``framing.<Name>`` for the names ``guest.requests`` defines (PEP 562): importing it
    here, on first use, keeps it off the agent's start."""
    if name.startswith("_"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    lazy.load("guest.requests")  # on the agent's import lock: guest/lazy.py
    from guest import requests

    try:
        return getattr(requests, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


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


def fs_watch_created(request_id: int, watch_id: str) -> dict[str, object]:
    return {"t": "fs.watch.created", "watch_id": watch_id, "id": request_id}


def fs_watch_event(name: str, type: str) -> dict[str, object]:
    """An ``FsWatchEvent`` (nested, so no ``t`` and no ``id``)."""
    return {"name": name, "type": type}


def fs_watch_events_result(
    request_id: int, events: list[dict[str, object]], overflow: bool
) -> dict[str, object]:
    return {"t": "fs.watch.events.result", "events": events, "overflow": overflow, "id": request_id}


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


def proc_started(request_id: int, pid: int) -> dict[str, object]:
    return {"t": "proc.started", "pid": pid, "id": request_id}


def proc_exited(request_id: int, exit_code: int, timed_out: bool = False) -> dict[str, object]:
    return {"t": "proc.exited", "exit_code": exit_code, "timed_out": timed_out, "id": request_id}


def proc_info(
    *,
    pid: int,
    argv: list[str],
    env: dict[str, str],
    cwd: str,
    pty: bool,
    running: bool,
    tag: str | None,
    exit_code: int | None,
) -> dict[str, object]:
    """A ``ProcInfo`` (nested, so no ``t`` and no ``id``)."""
    return {
        "pid": pid,
        "argv": argv,
        "env": env,
        "cwd": cwd,
        "pty": pty,
        "running": running,
        "tag": tag,
        "exit_code": exit_code,
    }


def proc_list_result(request_id: int, processes: list[dict[str, object]]) -> dict[str, object]:
    return {"t": "proc.list.result", "processes": processes, "id": request_id}


def proc_done(request_id: int) -> dict[str, object]:
    return {"t": "proc.done", "id": request_id}


def error(request_id: int, code: str, message: str) -> dict[str, object]:
    return {"t": "error", "code": code, "message": message, "id": request_id}


def parse_request(payload: bytes) -> Request | StreamRequest:
    """Decode and validate one JSON frame from the host.

    Unknown fields are ignored, as msgspec does, so a newer host can add optional fields
    without breaking an older agent. Anything else that ``contracts.guest`` would reject
    raises ``BadRequest``. A ``ping`` is parsed here; any other request by
    ``guest.requests``, imported the first time one arrives.
    """
    try:
        message = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(0, f"malformed JSON: {exc}") from None
    except RecursionError:  # json's C decoder recurses once per nesting level
        raise BadRequest(0, "malformed JSON: nested too deeply") from None
    if not isinstance(message, dict):
        raise BadRequest(0, "a frame must be a JSON object")
    request_id = message.get("id")
    if not is_int(request_id):
        raise BadRequest(0, "'id' must be an integer")
    kind = message.get("t")
    if kind == "ping":
        return PingRequest(request_id)
    lazy.load("guest.requests")  # on the agent's import lock: guest/lazy.py
    from guest import requests

    return requests.parse(request_id, kind, message)


def is_int(value: object) -> TypeGuard[int]:
    """JSON integers only: Python's ``bool`` is an ``int`` but ``true`` is not a valid id."""
    return isinstance(value, int) and not isinstance(value, bool)
