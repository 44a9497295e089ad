"""Clients ↔ dnah: the public request and response shapes.

Two shapes over one service layer: the native ``/v1`` API (seed 000, snake_case) and the
Daytona API (camelCase, exactly the fields the official Daytona SDK requires — see
``shared/research/sdk-compat.md`` §1). Native request bodies reject unknown fields so a typo
is an error, not a silently ignored option; Daytona bodies ignore unknown fields, because the
SDK sends many we do not act on.

Every error, in both shapes, is an ``ErrorBody``: ``{statusCode, message, code}``.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from contracts.egress_api import MAX_SANDBOX_SECRETS, EgressRules, SecretName
from contracts.fields import (
    NO_NUL,
    Arg,
    Argv,
    EnvMap,
    Int32,
    LabelMap,
    Name,
    NonNegative,
    Path,
    Positive,
    Secret,
    Text,
    Url,
    check_command_size,
)


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    status_code: int
    message: str
    code: str


# native /v1 ---------------------------------------------------------------------------------


class CreateSandbox(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/sandboxes``. Also accepts E2B's ``{templateID, metadata, envVars, timeout}``;
    when both spellings are given the native one wins."""

    template: Name | None = None
    name: Name | None = None
    cpu: Positive | None = None
    ram_mb: Positive | None = None
    disk_gb: Positive | None = None
    env: EnvMap = {}
    labels: LabelMap = {}
    language: Name | None = None
    lifecycle: Literal["persistent", "ephemeral"] | None = None
    """A preset of the three timers (docs/lifecycle.md); explicit timers win over it."""
    auto_stop_minutes: NonNegative | msgspec.UnsetType = msgspec.UNSET
    """Idle minutes before an automatic stop; 0: never."""
    auto_archive_days: NonNegative | msgspec.UnsetType = msgspec.UNSET
    """Days after the stop before an automatic archive; 0: never."""
    auto_delete_days: NonNegative | msgspec.UnsetType = msgspec.UNSET
    """Days after the stop before an automatic delete; 0: never."""
    public: bool = False
    """Its preview URLs open without a token (docs/network.md, "Preview URLs and tokens")."""
    wake_on_traffic: bool = False
    """A preview request while it is paused resumes it (off: such a request is a 409)."""
    # E2B's create body
    templateID: Name | None = None
    metadata: LabelMap = {}
    envVars: EnvMap = {}
    timeout: NonNegative | None = None
    egress: EgressRules | None = None
    """Where it may connect (``POST /v1/sandboxes/{id}/egress-policy`` changes it later);
    none: the operator's default."""
    secrets: Annotated[list[SecretName], msgspec.Meta(max_length=MAX_SANDBOX_SECRETS)] = []
    """Names of the org's secrets (``POST /v1/secrets``): each is ``NAME=<placeholder>`` in
    the environment, the value put in its place only in requests towards its hosts."""

    def __post_init__(self) -> None:
        check_command_size([], {**self.envVars, **self.env})  # every command will carry it


class Sandbox(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    org_id: str
    template: str
    state: str
    cpu: int
    ram_mb: int
    disk_gb: int
    env: dict[str, str]
    labels: dict[str, str]
    language: str
    error_reason: str | None
    lifecycle: str
    auto_stop_minutes: int
    """0: never."""
    auto_archive_days: int
    """0: never; rounded up when the timer is not whole days (``auto_archive_minutes`` is exact)."""
    auto_delete_days: int
    auto_archive_minutes: int | None
    """None: never."""
    auto_delete_minutes: int | None
    """None: never; 0: as soon as it stops."""
    created_at: str
    updated_at: str
    last_activity_at: str
    stopped_at: str | None
    parent_id: str | None = None
    """The sandbox this one was cloned or forked from."""
    source_snapshot_id: str | None = None
    public: bool = False
    """Its preview URLs open without a token."""
    wake_on_traffic: bool = False
    """A preview request while it is paused resumes it."""
    from_memory: bool = False
    """A clone or fork whose snapshot held memory: it went on running the parent's processes
    as they were at the snapshot. False: it booted fresh on the snapshot's disk, or is no clone."""


class Resize(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/sandboxes/{id}/resize``: new values, or null to keep one."""

    cpu: Positive | None = None
    ram_mb: Positive | None = None
    disk_gb: Positive | None = None


class Labels(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``PUT /v1/sandboxes/{id}/labels``: the new set (it replaces the old one)."""

    labels: LabelMap


class SandboxList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[Sandbox]
    next_cursor: str | None = None


class Exec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/sandboxes/{id}/exec``: run ``cmd`` (an argv, no shell) to completion."""

    cmd: Annotated[Argv, msgspec.Meta(min_length=1)]
    timeout_ms: Annotated[int, msgspec.Meta(ge=1, le=3_600_000)] = 60_000
    env: EnvMap = {}
    cwd: Path | None = None

    def __post_init__(self) -> None:
        check_command_size(self.cmd, self.env)


class ExecResult(msgspec.Struct, frozen=True, kw_only=True):
    stdout: str
    stderr: str
    exit_code: int
    duration_ms: float
    timed_out: bool = False
    truncated: bool = False
    """True when output past 1 MiB on stdout or stderr was dropped (the command itself ran on)."""


CODE_MAX_CHARS = 1_000_000
"""Longest snippet run-code accepts (both shapes): far beyond any hand-written script, and well
inside the agent protocol's frame limit even when JSON escapes every character."""
Code = Annotated[str, msgspec.Meta(pattern=NO_NUL, max_length=CODE_MAX_CHARS)]
"""A snippet or shell line: ``Text`` up to ``CODE_MAX_CHARS``."""


class RunCode(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/sandboxes/{id}/run-code``: run ``code`` with ``lang``'s interpreter
    (python, bash, javascript, typescript — run as JavaScript); without ``lang``, the
    sandbox's ``language``. ``argv`` are the program's arguments."""

    code: Code
    lang: Name | None = None
    timeout_ms: Annotated[int, msgspec.Meta(ge=1, le=3_600_000)] = 60_000
    argv: Argv = []
    env: EnvMap = {}
    cwd: Path | None = None

    def __post_init__(self) -> None:
        check_command_size(self.argv, self.env)


class Dirs(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /v1/sandboxes/{id}/dirs``: the user's home; the working directory commands start
    in without a ``cwd`` (the home); the project directory (``/workspace`` when the template
    has one, else the home)."""

    home: str
    work: str
    project: str


class Metrics(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /v1/sandboxes/{id}/metrics``. CPU and memory are the sandbox's own cgroup limits
    and use, as its agent reads them (used memory excludes reclaimable file cache);
    ``load_1m`` is /proc/loadavg inside (the shared kernel's under the namespace runtime);
    ``disk_used_mb`` is what the sandbox wrote, measured on its host; age, state and last
    activity come from the control plane. Reading metrics counts as activity."""

    cpu_count: int
    mem_total_mb: int
    mem_used_mb: int
    load_1m: float
    disk_used_mb: int
    age_seconds: int
    state: str
    last_activity_at: str


class CreateApiKey(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/api-keys`` (admin only). Without ``org_id`` a new org is created."""

    name: Name = ""
    org_id: Name | None = None
    org_name: Name | None = None


class ApiKeyCreated(msgspec.Struct, frozen=True, kw_only=True):
    """Carries the key itself: it is shown once and stored only as a hash."""

    id: str
    key: str
    org_id: str
    name: str
    created_at: str


class Health(msgspec.Struct, frozen=True, kw_only=True):
    status: str
    checks: dict[str, str]


# Daytona ------------------------------------------------------------------------------------


MAX_GIB = 2**31 // 1024 - 1
"""Largest Daytona ``memory`` (GiB): its MiB must still fit an ``integer``."""


class DaytonaCreateSandbox(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``POST /sandbox``. ``memory`` and ``disk`` are GiB, as in Daytona."""

    name: Name | None = None
    snapshot: Name | None = None
    user: Name | None = None
    env: EnvMap = {}
    labels: LabelMap = {}
    public: bool = False
    cpu: Positive | None = None
    gpu: NonNegative | None = None
    memory: Annotated[int, msgspec.Meta(ge=1, le=MAX_GIB)] | None = None
    disk: Positive | None = None
    auto_stop_interval: Int32 | None = None
    auto_archive_interval: Int32 | None = None
    auto_delete_interval: Int32 | None = None
    ephemeral: bool = False
    network_block_all: bool = False
    network_allow_list: Text | None = None
    """Comma-separated networks: nothing but them (and ``domainAllowList``) is reachable."""
    domain_allow_list: Text | None = None
    target: Name | None = None

    def __post_init__(self) -> None:
        check_command_size([], self.env)  # every command will carry it


class DaytonaSandbox(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The Sandbox DTO. Every field the SDK's pydantic model requires is present, with the
    JSON type it insists on (ints are ints, bools are bools)."""

    id: str
    organization_id: str
    name: str
    user: str
    env: dict[str, str]
    labels: dict[str, str]
    public: bool
    network_block_all: bool
    kvm: bool
    target: str
    cpu: int
    gpu: int
    memory: int
    disk: int
    toolbox_proxy_url: str
    state: str
    desired_state: str
    snapshot: str
    error_reason: str | None
    recoverable: bool
    auto_stop_interval: int
    auto_archive_interval: int
    auto_delete_interval: int
    created_at: str
    updated_at: str
    last_activity_at: str
    daemon_version: str
    from_memory: bool = False
    """Ours (``fromMemory``), as in the native ``Sandbox``; the SDK keeps it in
    ``additional_properties``."""
    network_allow_list: str | None = None
    domain_allow_list: str | None = None
    backup_state: str = "None"
    """Daytona's BackupState: None, InProgress, Completed or Error (Pending is never used:
    a backup starts as soon as it is asked for)."""
    backup_created_at: str | None = None
    backup_snapshot_id: str | None = None
    """Ours: the snapshot that is the backup (a native ``restore`` or ``clone`` takes it)."""


class DaytonaSandboxList(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    items: list[DaytonaSandbox]
    next_cursor: str | None = None


class DaytonaPaginatedSandboxes(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``GET /sandbox/paginated``: one page, numbered from 1, of ``total`` sandboxes."""

    items: list[DaytonaSandbox]
    total: int
    page: int
    total_pages: int


class DaytonaToolboxUrl(msgspec.Struct, frozen=True, kw_only=True):
    url: str


class DaytonaExecute(msgspec.Struct, frozen=True, kw_only=True):
    """``POST /toolbox/{id}/process/execute``: ``command`` is a shell command line;
    ``timeout`` is in seconds."""

    command: Text
    cwd: Path | None = None
    envs: EnvMap = {}
    timeout: Annotated[int, msgspec.Meta(ge=0, le=3600)] | None = None

    def __post_init__(self) -> None:
        check_command_size(["/bin/sh", "-c", self.command], self.envs)


class DaytonaExecuteResult(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    exit_code: int
    result: str


class DaytonaCodeRun(msgspec.Struct, frozen=True, kw_only=True):
    """``POST /toolbox/{id}/process/code-run``. ``language`` defaults to the sandbox's;
    ``timeout`` is in seconds."""

    code: Code
    language: Name | None = None
    argv: Argv | None = None
    envs: EnvMap | None = None
    timeout: Annotated[int, msgspec.Meta(ge=0, le=3600)] | None = None

    def __post_init__(self) -> None:
        check_command_size(self.argv or [], self.envs)


class DaytonaCharts(msgspec.Struct, frozen=True, kw_only=True):
    """Matplotlib charts are not captured: always empty."""

    charts: list[dict[str, object]] = []


class DaytonaCodeRunResult(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``result`` is stdout then stderr, as for ``process/execute``."""

    exit_code: int
    result: str
    artifacts: DaytonaCharts


class DaytonaDir(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /toolbox/{id}/user-home-dir``, ``/work-dir`` and ``/project-dir``."""

    dir: str


# git, both shapes ---------------------------------------------------------------------------
# ``path`` is the repository (the clone's target); relative paths start at the sandbox's
# working directory (the user's home). ``username``/``password`` are used for that one
# operation and never stored in the sandbox (see ``guest/git.py``).


class GitClone(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/sandboxes/{id}/git/clone``."""

    url: Url
    path: Path
    branch: Name | None = None
    depth: Positive | None = None
    commit_id: Name | None = None
    username: Secret | None = None
    password: Secret | None = None


class GitAdd(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/sandboxes/{id}/git/add``: ``files`` relative to the repository root."""

    path: Path
    files: list[Path]


class GitCommit(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/sandboxes/{id}/git/commit``: what is staged, as the given author."""

    path: Path
    message: Arg
    author_name: Name | None = None
    author_email: Name | None = None
    allow_empty: bool = False

    def __post_init__(self) -> None:
        check_command_size([self.message], None)  # git gets it as one argument


class GitSync(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/sandboxes/{id}/git/push`` and ``/git/pull``: ``remote`` defaults to
    ``origin``, ``branch`` to the current one (pull: its upstream)."""

    path: Path
    remote: Name | None = None
    branch: Name | None = None
    username: Secret | None = None
    password: Secret | None = None
    set_upstream: bool = False


class GitBranch(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/sandboxes/{id}/git/branches``: create ``name`` at HEAD."""

    path: Path
    name: Name


class GitCheckout(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/sandboxes/{id}/git/checkout``: a branch (also one only the remote has) or a
    commit."""

    path: Path
    ref: Name


class GitOk(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool = True


class GitFile(msgspec.Struct, frozen=True, kw_only=True):
    """``staging``/``worktree``: unmodified, modified, type_changed, added, deleted, renamed,
    copied, unmerged or untracked."""

    path: str
    staging: str
    worktree: str
    orig_path: str | None = None


class GitStatus(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /v1/sandboxes/{id}/git/status?path=``: ``branch`` is empty when HEAD is
    detached, ``upstream`` when the branch tracks nothing."""

    branch: str
    detached: bool
    upstream: str
    ahead: int
    behind: int
    files: list[GitFile]


class GitCommitted(msgspec.Struct, frozen=True, kw_only=True):
    sha: str


class GitBranches(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /v1/sandboxes/{id}/git/branches?path=``: ``current`` is empty when detached."""

    branches: list[str]
    current: str


class GitCommitInfo(msgspec.Struct, frozen=True, kw_only=True):
    sha: str
    author_name: str
    author_email: str
    timestamp: str
    message: str


class GitLog(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /v1/sandboxes/{id}/git/log?path=&limit=``: newest first."""

    commits: list[GitCommitInfo]


class DaytonaGitClone(msgspec.Struct, frozen=True, kw_only=True):
    """``POST /toolbox/{id}/git/clone`` (snake_case, like every Daytona git body).
    ``insecure_skip_tls`` is accepted and ignored: TLS is always verified."""

    url: Url
    path: Path
    branch: Name | None = None
    commit_id: Name | None = None
    username: Secret | None = None
    password: Secret | None = None
    depth: Positive | None = None


class DaytonaGitAdd(msgspec.Struct, frozen=True, kw_only=True):
    path: Path
    files: list[Path]


class DaytonaGitCommit(msgspec.Struct, frozen=True, kw_only=True):
    path: Path
    message: Arg
    author: Name
    email: Name
    allow_empty: bool | None = None

    def __post_init__(self) -> None:
        check_command_size([self.message], None)  # git gets it as one argument


class DaytonaGitSync(msgspec.Struct, frozen=True, kw_only=True):
    """``POST /toolbox/{id}/git/push`` and ``/git/pull``."""

    path: Path
    username: Secret | None = None
    password: Secret | None = None
    branch: Name | None = None
    remote: Name | None = None
    set_upstream: bool | None = None


class DaytonaGitBranch(msgspec.Struct, frozen=True, kw_only=True):
    """``POST`` and ``DELETE /toolbox/{id}/git/branches``."""

    path: Path
    name: Name


class DaytonaGitCheckout(msgspec.Struct, frozen=True, kw_only=True):
    path: Path
    branch: Name


class DaytonaGitFileStatus(msgspec.Struct, frozen=True, kw_only=True):
    """``staging``/``worktree``: Unmodified, Untracked, Modified, Added, Deleted, Renamed,
    Copied or ``Updated but unmerged``; ``extra`` is a rename's or copy's source."""

    name: str
    staging: str
    worktree: str
    extra: str


class DaytonaGitStatus(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    current_branch: str
    file_status: list[DaytonaGitFileStatus]
    ahead: int
    behind: int
    branch_published: bool
    detached: bool
    upstream: str


class DaytonaGitCommitted(msgspec.Struct, frozen=True, kw_only=True):
    hash: str


class DaytonaGitBranches(msgspec.Struct, frozen=True, kw_only=True):
    branches: list[str]
    current: str


class DaytonaGitCommitInfo(msgspec.Struct, frozen=True, kw_only=True):
    hash: str
    author: str
    email: str
    message: str
    timestamp: str


# sessions: persistent shells (native /v1/sandboxes/{id}/sessions, Daytona /toolbox/{id}/process/session)


class CreateSession(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/sandboxes/{id}/sessions``: a new shell in ``cwd`` (default: the home);
    ``id`` picks the session's id (default: a new UUID)."""

    cwd: Path | None = None
    id: Annotated[Name, msgspec.Meta(min_length=1)] | None = None


class SessionOut(msgspec.Struct, frozen=True, kw_only=True):
    """A session: its shell's current directory and whether the shell still runs (a command
    that exits the shell ends the session)."""

    id: str
    cwd: str
    alive: bool = True


class SessionList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[SessionOut]


class SessionExec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/sandboxes/{id}/sessions/{sid}/exec``: run the shell line ``cmd`` in the
    session (``cd`` and ``export`` persist)."""

    cmd: Annotated[Code, msgspec.Meta(min_length=1)]
    timeout_ms: Annotated[int, msgspec.Meta(ge=1, le=3_600_000)] = 60_000


class SessionCommandOut(msgspec.Struct, frozen=True, kw_only=True):
    """A session command: its output (each stream up to 1 MiB; 8 KiB in a history listing),
    exit code (null while it runs; -9 with ``timed_out``), and the shell's directory after it."""

    command_id: str
    cmd: str
    stdout: str
    stderr: str
    exit_code: int | None
    cwd: str | None
    timed_out: bool = False


class SessionCommandList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[SessionCommandOut]


class DaytonaCreateSession(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    session_id: Annotated[Name, msgspec.Meta(min_length=1)]


class DaytonaSessionCommand(msgspec.Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True):
    """``exitCode`` is absent while the command runs."""

    id: str
    command: str
    exit_code: int | None = None


class DaytonaSession(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    session_id: str
    commands: list[DaytonaSessionCommand]


class DaytonaSessionExecute(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``runAsync`` (or the older ``async``) answers 202 at once; ``suppressInputEcho`` is
    accepted and has no effect (commands never read input)."""

    command: Annotated[Code, msgspec.Meta(min_length=1)]
    run_async: bool | None = None
    async_: bool | None = msgspec.field(default=None, name="async")
    suppress_input_echo: bool | None = None


class DaytonaSessionExecuteResult(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``output`` is stdout then stderr (as ``/process/execute``'s ``result``)."""

    cmd_id: str
    output: str
    stdout: str
    stderr: str
    exit_code: int


class DaytonaSessionStarted(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    cmd_id: str


class DaytonaCommandLogs(msgspec.Struct, frozen=True, kw_only=True):
    output: str
    stdout: str
    stderr: str


# files: metadata and text operations (native /v1/sandboxes/{id}/files/..., Daytona
# /toolbox/{id}/files...). Paths are the sandbox's; relative ones start at the user's home.
# Naming swap: native ``find`` matches names and ``grep`` contents; Daytona's ``search``
# matches names and its ``find`` contents.


class FileInfo(msgspec.Struct, frozen=True, kw_only=True):
    """``mode``: ``-rw-r--r--`` style (Go's); ``permissions``: octal (``0644``);
    ``mod_time``: RFC 3339; ``link_target``: a symlink's target."""

    name: str
    path: str
    is_dir: bool
    size: int
    mode: str
    permissions: str
    owner: str
    group: str
    mod_time: str
    link_target: str | None = None


class FileList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[FileInfo]
    truncated: bool = False


class FileOk(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool = True


class FilePaths(msgspec.Struct, frozen=True, kw_only=True):
    paths: list[str]
    truncated: bool = False


class FileMatch(msgspec.Struct, frozen=True, kw_only=True):
    file: str
    line: int
    content: str


class FileMatches(msgspec.Struct, frozen=True, kw_only=True):
    matches: list[FileMatch]
    truncated: bool = False


class FileMove(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    source: Path
    destination: Path


class FileChmod(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``mode`` in octal (``755``); ``owner``/``group`` as names or numeric ids."""

    path: Path
    mode: Name | None = None
    owner: Name | None = None
    group: Name | None = None


class FileReplace(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Replace ``find`` with ``replace`` in ``files``, or in the files under ``path`` whose
    name matches ``glob``; ``regex`` makes ``find`` a (Python) regular expression."""

    find: Text
    replace: Text
    path: Path | None = None
    glob: Path | None = None
    files: list[Path] = []
    regex: bool = False


class FileReplaced(msgspec.Struct, frozen=True, kw_only=True):
    file: str
    success: bool
    replacements: int
    error: str | None = None


class FileReplaceResults(msgspec.Struct, frozen=True, kw_only=True):
    results: list[FileReplaced]


class DaytonaFileInfo(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``modTime`` in Go's ``time.String()`` layout (as Daytona's daemon), ``modifiedAt`` in
    RFC 3339."""

    name: str
    path: str
    is_dir: bool
    size: int
    mode: str
    permissions: str
    owner: str
    group: str
    mod_time: str
    modified_at: str


class DaytonaSearchFiles(msgspec.Struct, frozen=True, kw_only=True):
    files: list[str]


class DaytonaReplace(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    files: list[Path]
    pattern: Text
    new_value: Text


class DaytonaReplaceResult(msgspec.Struct, frozen=True, kw_only=True):
    file: str
    success: bool
    error: str | None = None


# file byte streams (native PUT/GET /v1/sandboxes/{id}/files?path=, Daytona /toolbox/{id}/files/
# upload, download, bulk-upload, bulk-download). The bytes themselves travel as they are, never
# in JSON, except in seed 004's quick-start upload (``DaytonaUploadJson``, base64).


class FileUploaded(msgspec.Struct, frozen=True, kw_only=True):
    """An upload is complete: ``path`` (absolute, inside the sandbox) holds ``size`` bytes."""

    path: str
    size: int


class FilesUploaded(msgspec.Struct, frozen=True, kw_only=True):
    """Daytona's bulk upload succeeded for every file (the SDK ignores the body)."""

    files: list[FileUploaded]


class FileTransferError(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One file of a bulk transfer that failed, with the status it would have had alone."""

    path: str
    status_code: int
    message: str
    code: str


class BulkUploadFailed(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Some files of a bulk upload failed (the others were stored): the error shape, plus
    ``errors`` (one per failed file, which the Daytona SDK reads) and ``files`` (the stored ones)."""

    status_code: int
    message: str
    code: str
    errors: list[FileTransferError]
    files: list[FileUploaded]


class DaytonaUploadJson(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Seed 004's quick-start upload: the content in base64 (so at most 32 MiB through a paid
    gateway, which buffers JSON bodies; use the streaming routes for big files)."""

    path: Path
    content: str


class DaytonaBulkDownload(msgspec.Struct, frozen=True, kw_only=True):
    paths: list[Path]


# terminals (core/http/{native,daytona}/terminals.py) --------------------------------------------
#
# Native: ``GET /v1/sandboxes/{id}/terminal`` is a WebSocket. The server's text messages are
# ``TerminalReady`` (first) and ``TerminalExit`` (last, then close 1000); its binary messages
# are the terminal's output. The client's binary messages, and text messages that are not a
# ``TerminalResize``, are typed into the terminal.


TermSize = Annotated[int, msgspec.Meta(ge=1, le=1000)]
"""A terminal's columns or rows (``guest.PTY_MAX_SIZE`` is the agent's own limit)."""


class TerminalReady(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="ready"):
    session_id: str
    cols: int
    rows: int


class TerminalResize(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="resize"):
    cols: TermSize
    rows: TermSize


class TerminalExit(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="exit"):
    """``exit_code``: the shell's; negative when a signal ended it (-1: SIGHUP, a kill)."""

    exit_code: int


class DaytonaPtyCreate(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Daytona's ``PtyCreateRequest`` (every field optional)."""

    id: Name | None = None
    cols: TermSize | None = None
    rows: TermSize | None = None
    cwd: Path | None = None
    envs: EnvMap | None = None
    lazy_start: bool | None = None


class DaytonaPtyCreated(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    session_id: str


class DaytonaPtySessionInfo(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``active``: the session's shell runs."""

    id: str
    cols: int
    rows: int
    cwd: str
    envs: dict[str, str]
    created_at: str
    active: bool
    lazy_start: bool


class DaytonaPtyList(msgspec.Struct, frozen=True, kw_only=True):
    sessions: list[DaytonaPtySessionInfo]


class DaytonaPtyResize(msgspec.Struct, frozen=True, kw_only=True):
    cols: TermSize
    rows: TermSize


# webhooks (core/http/native/webhooks.py, docs/webhooks.md) -----------------------------------

WEBHOOK_EVENTS = ("sandbox.state_updated", "template.state_updated")
"""The events a webhook can subscribe to; ``"*"`` subscribes to all, present and future."""


class CreateWebhook(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/webhooks``. Without ``secret`` the server generates one."""

    url: Url
    events: Annotated[list[Name], msgspec.Meta(max_length=64)]
    secret: Text | None = None


class Webhook(msgspec.Struct, frozen=True, kw_only=True):
    """A webhook as listed: ``secret`` is always ``"[redacted]"``."""

    id: str
    url: str
    events: list[str]
    secret: str
    created_at: str


class WebhookCreated(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to a create: the only time ``secret`` is shown."""

    id: str
    url: str
    events: list[str]
    secret: str
    created_at: str


class WebhookList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[Webhook]


class WebhookDelivery(msgspec.Struct, frozen=True, kw_only=True):
    """One event sent (or being sent) to one webhook. ``status``: pending, delivered or dead;
    ``id`` is the ``x-dnah-delivery-id`` header of every attempt."""

    id: str
    event: str
    status: str
    attempts: int
    next_attempt_at: str | None
    delivered_at: str | None
    last_status: int | None
    last_error: str | None
    created_at: str


class WebhookDeliveryList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[WebhookDelivery]


# lifecycle (Daytona shapes; the native ones, ``Resize`` and ``Labels``, are with ``Sandbox``)


class DaytonaResize(msgspec.Struct, frozen=True, kw_only=True):
    """``POST /sandbox/{id}/resize``: ``memory`` and ``disk`` in GiB; absent keeps a value."""

    cpu: Positive | None = None
    memory: Annotated[int, msgspec.Meta(ge=1, le=MAX_GIB)] | None = None
    disk: Positive | None = None


class DaytonaLabels(msgspec.Struct, frozen=True, kw_only=True):
    """``PUT /sandbox/{id}/labels`` body and answer: the whole new set."""

    labels: LabelMap


# snapshots (native /v1/sandboxes/{id}/snapshot|snapshots|restore|clone|fork, /v1/snapshots/{id};
# Daytona /sandbox/{id}/fork)


class SnapshotOut(msgspec.Struct, frozen=True, kw_only=True):
    """A signed snapshot. ``memory``: whether it holds memory too (false on the namespace
    runtime: the filesystem only)."""

    id: str
    sandbox_id: str
    template: str
    size_bytes: int
    memory: bool
    kid: str
    manifest_hash: str
    created_at: str


class SnapshotList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[SnapshotOut]


class RestoreSnapshot(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    snapshot_id: Name


class CloneSnapshot(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    snapshot_id: Name
    name: Name | None = None


class Fork(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Name | None = None


class DaytonaFork(msgspec.Struct, frozen=True, kw_only=True):
    name: Name | None = None
