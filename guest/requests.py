"""The request messages the agent understands, and their validation: the part of the wire
protocol that only requests other than ``ping`` need.

It lives apart from ``framing`` so that the agent answers its first ``ping`` without paying
for it: building these ~25 frozen dataclasses (and importing ``dataclasses``, which pulls in
``inspect``) costs more than everything else the agent loads before it listens. ``framing``
re-exports every name defined here, importing this module the first time one is asked for
(``framing.ExecRequest`` and friends work as before) or a request other than ``ping`` arrives.
Like ``framing``, it restates ``contracts/guest.py`` by hand, and the wire tests prove it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeGuard

from guest.framing import (
    DEFAULT_TIMEOUT_MS,
    GIT_TIMEOUT_MS,
    LANGUAGES,
    BadRequest,
    PingRequest,
    is_int,
)

_ACCOUNT = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")
"""``contracts.guest.Account``."""


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
class FsWatchRequest:
    """Any ``fs.watch.*`` request: ``kind`` is its ``t``; the fields it does not take keep
    their defaults."""

    id: int
    kind: str
    path: str = ""
    recursive: bool = False
    watch_id: str = ""


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


@dataclass(frozen=True)
class ProcSpawnRequest:
    """``proc.spawn``: the opener of a process stream."""

    id: int
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None


@dataclass(frozen=True)
class ProcStartRequest:
    """``proc.start``: the opener of a stream to a new registry process. ``pty`` is
    ``{"cols": int, "rows": int}`` or None."""

    id: int
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    tag: str | None = None
    pty: dict[str, int] | None = None
    stdin: bool = True
    timeout_ms: int | None = None
    user: str | None = None


@dataclass(frozen=True)
class ProcConnectRequest:
    """``proc.connect``: the opener of a stream to a registry process, by pid or tag."""

    id: int
    pid: int | None = None
    tag: str | None = None


@dataclass(frozen=True)
class ProcRequest:
    """Any ``proc.*`` relay request: ``kind`` is its ``t``; the fields it does not take keep
    their defaults (``contracts.guest`` has one class per request, the agent one module)."""

    id: int
    kind: str
    pid: int | None = None
    tag: str | None = None
    signal: int = 0
    data: str = ""
    cols: int = 80
    rows: int = 24


StreamRequest = (
    FsWriteRequest
    | FsReadRequest
    | PtyAttachRequest
    | ProcSpawnRequest
    | ProcStartRequest
    | ProcConnectRequest
)
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
    | FsWatchRequest
    | PtyRequest
    | ProcRequest
)


def parse(request_id: int, kind: object, message: dict[str, object]) -> Request | StreamRequest:
    """The request of type ``kind`` in ``message`` (a decoded frame whose ``id`` is valid and
    whose ``t`` is not ``ping``); ``framing.parse_request`` has the rules."""
    if not isinstance(kind, str) or kind not in _PARSERS:
        raise BadRequest(request_id, f"unknown message type {kind!r}")
    return _PARSERS[kind](request_id, kind, message)


def _parse_env_set(request_id: int, kind: str, message: dict[str, object]) -> EnvSetRequest:
    env = message.get("env")
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(x, str) for k, x in env.items()
    ):
        raise BadRequest(request_id, "'env' must be an object of strings")
    return EnvSetRequest(request_id, env)


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
        if depth is not None and not is_int(depth):
            raise BadRequest(request_id, "'depth' must be an integer or null")
        fields["depth"] = depth
    if kind == "git.log":
        limit = message.get("limit", 100)
        if not is_int(limit):
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
        if not is_int(timeout_ms):
            raise BadRequest(request_id, "'timeout_ms' must be an integer")
        fields["timeout_ms"] = timeout_ms
    request: GitRequest = cls(request_id, **fields)
    return request


def _parse_exec(request_id: int, kind: str, message: dict[str, object]) -> ExecRequest:
    argv = message.get("argv")
    if not _is_str_list(argv) or not argv:
        raise BadRequest(request_id, "'argv' must be a non-empty list of strings")
    env, cwd, timeout_ms = _parse_run_options(request_id, message)
    return ExecRequest(request_id, argv=argv, env=env, cwd=cwd, timeout_ms=timeout_ms)


def _parse_code_run(request_id: int, kind: str, message: dict[str, object]) -> CodeRunRequest:
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
    if not is_int(timeout_ms) or timeout_ms <= 0:
        raise BadRequest(request_id, "'timeout_ms' must be a positive integer")
    return env, cwd, timeout_ms


_SESSION_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    # tag: (required str fields, optional str fields, other fields: timeout_ms and the flags)
    "session.create": ((), ("session_id", "cwd"), ()),
    "session.list": ((), (), ()),
    "session.get": (("session_id",), (), ("output",)),
    "session.delete": (("session_id",), (), ()),
    "session.exec": (("session_id", "command"), (), ("timeout_ms", "run_async")),
    "session.command": (("session_id", "command_id"), (), ()),
    "session.logs": (("session_id", "command_id"), (), ()),
}


def _parse_session(request_id: int, kind: str, message: dict[str, object]) -> SessionRequest:
    """Reads only the fields ``kind`` has in ``contracts.guest``: a field another session
    request takes is ignored, like any unknown field."""
    required, optional, others = _SESSION_FIELDS[kind]
    fields: dict[str, object] = {}
    for name in required:
        value = message.get(name)
        if not isinstance(value, str):
            raise BadRequest(request_id, f"'{name}' must be a string")
        fields[name] = value
    for name in optional:
        value = message.get(name)
        if value is not None and not isinstance(value, str):
            raise BadRequest(request_id, f"'{name}' must be a string or null")
        fields[name] = value
    if "timeout_ms" in others:
        timeout_ms = message.get("timeout_ms", DEFAULT_TIMEOUT_MS)
        if not is_int(timeout_ms) or timeout_ms < 0:
            raise BadRequest(request_id, "'timeout_ms' must be a non-negative integer")
        fields["timeout_ms"] = timeout_ms
    for name in others:
        if name != "timeout_ms":
            flag = message.get(name, False)
            if not isinstance(flag, bool):
                raise BadRequest(request_id, f"'{name}' must be a boolean")
            fields[name] = flag
    return SessionRequest(request_id, kind, **fields)  # type: ignore[arg-type]


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
        if not is_int(value):
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


_WATCH_FIELDS = {"fs.watch.create": "path", "fs.watch.events": "watch_id", "fs.watch.remove": "watch_id"}
"""Each ``fs.watch.*`` request's one string field (``fs.watch.create`` also has ``recursive``)."""


def _parse_fs_watch(request_id: int, kind: str, message: dict[str, object]) -> FsWatchRequest:
    name = _WATCH_FIELDS[kind]
    value = message.get(name)
    if not isinstance(value, str):
        raise BadRequest(request_id, f"{name!r} must be a string")
    if kind != "fs.watch.create":
        return FsWatchRequest(request_id, kind, watch_id=value)
    recursive = message.get("recursive", False)
    if not isinstance(recursive, bool):
        raise BadRequest(request_id, "'recursive' must be a boolean")
    return FsWatchRequest(request_id, kind, path=value, recursive=recursive)


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
            if not is_int(value):
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
        if not is_int(value):
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


def _parse_proc_spawn(request_id: int, kind: str, message: dict[str, object]) -> ProcSpawnRequest:
    argv = message.get("argv")
    if not _is_str_list(argv) or not argv:
        raise BadRequest(request_id, "'argv' must be a non-empty list of strings")
    env = message.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(value, str) for value in env.values()):
        raise BadRequest(request_id, "'env' must map strings to strings")
    cwd = message.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        raise BadRequest(request_id, "'cwd' must be a string or null")
    return ProcSpawnRequest(request_id, argv=argv, env=env, cwd=cwd)


def _parse_proc_start(request_id: int, kind: str, message: dict[str, object]) -> ProcStartRequest:
    spawn = _parse_proc_spawn(request_id, kind, message)
    tag = _optional_str(request_id, message, "tag")
    pty = message.get("pty")
    if pty is not None:
        if not isinstance(pty, dict) or not all(is_int(pty.get(name)) for name in ("cols", "rows")):
            raise BadRequest(request_id, "'pty' must be null or an object with integer 'cols' and 'rows'")
        pty = {"cols": pty["cols"], "rows": pty["rows"]}
    stdin = message.get("stdin", True)
    if not isinstance(stdin, bool):
        raise BadRequest(request_id, "'stdin' must be a boolean")
    timeout_ms = message.get("timeout_ms")
    if timeout_ms is not None and (not is_int(timeout_ms) or timeout_ms <= 0):
        raise BadRequest(request_id, "'timeout_ms' must be a positive integer or null")
    user = _optional_str(request_id, message, "user")
    if user is not None and not _ACCOUNT.fullmatch(user):
        raise BadRequest(request_id, f"'user' {user!r} is not an account name")
    return ProcStartRequest(
        request_id,
        argv=spawn.argv,
        env=spawn.env,
        cwd=spawn.cwd,
        tag=tag,
        pty=pty,
        stdin=stdin,
        timeout_ms=timeout_ms,
        user=user,
    )


_PROC_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # tag: (required int fields, required str fields); every one but proc.list names a process
    "proc.connect": ((), ()),
    "proc.list": ((), ()),
    "proc.signal": (("signal",), ()),
    "proc.input": ((), ("data",)),
    "proc.close_stdin": ((), ()),
    "proc.resize": (("cols", "rows"), ()),
}


def _parse_proc(request_id: int, kind: str, message: dict[str, object]) -> ProcRequest | ProcConnectRequest:
    ints, strs = _PROC_FIELDS[kind]
    fields: dict[str, object] = {}
    if kind != "proc.list":
        pid = message.get("pid")
        if pid is not None and not is_int(pid):
            raise BadRequest(request_id, "'pid' must be an integer or null")
        fields["pid"] = pid
        fields["tag"] = _optional_str(request_id, message, "tag")
    for name in ints:
        value = message.get(name)
        if not is_int(value):
            raise BadRequest(request_id, f"{name!r} must be an integer")
        fields[name] = value
    for name in strs:
        value = message.get(name)
        if not isinstance(value, str):
            raise BadRequest(request_id, f"{name!r} must be a string")
        fields[name] = value
    if kind == "proc.connect":
        return ProcConnectRequest(request_id, **fields)  # type: ignore[arg-type]
    return ProcRequest(request_id, kind, **fields)  # type: ignore[arg-type]


def _optional_str(request_id: int, message: dict[str, object], name: str) -> str | None:
    value = message.get(name)
    if value is not None and not isinstance(value, str):
        raise BadRequest(request_id, f"{name!r} must be a string or null")
    return value


_PARSERS: dict[str, Callable[[int, str, dict[str, object]], Request | StreamRequest]] = {
    "exec": _parse_exec,
    "code.run": _parse_code_run,
    "env.set": _parse_env_set,
    "dirs": lambda request_id, kind, message: DirsRequest(request_id),
    "metrics": lambda request_id, kind, message: MetricsRequest(request_id),
    **dict.fromkeys(_GIT_FIELDS, _parse_git),
    **dict.fromkeys(_SESSION_FIELDS, _parse_session),
    **dict.fromkeys(_FS_FIELDS, _parse_fs),
    **dict.fromkeys(_WATCH_FIELDS, _parse_fs_watch),
    **dict.fromkeys(("fs.write", "fs.read"), _parse_transfer),
    **dict.fromkeys(_PTY_FIELDS, _parse_pty),
    "proc.spawn": _parse_proc_spawn,
    "proc.start": _parse_proc_start,
    **dict.fromkeys(_PROC_FIELDS, _parse_proc),
}
REQUEST_TAGS = frozenset({"ping", *_PARSERS})
"""Every request type the agent understands (``ping`` is parsed by ``framing``): the wire
tests check it is exactly ``contracts.guest``'s."""


def _is_str_list(value: object) -> TypeGuard[list[str]]:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)
