"""Clients ↔ dnah: the public request and response shapes.

Two shapes over one service layer: the native ``/v1`` API (seed 000, snake_case) and the
Daytona API (camelCase, exactly the fields the official Daytona SDK requires — see
``shared/research/sdk-compat.md`` §1). Native request bodies reject unknown fields so a typo
is an error, not a silently ignored option; Daytona bodies ignore unknown fields, because the
SDK sends many we do not act on.

Every error, in both shapes, is an ``ErrorBody``: ``{statusCode, message, code}``.
"""

from __future__ import annotations

from typing import Annotated

import msgspec


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    status_code: int
    message: str
    code: str


# native /v1 ---------------------------------------------------------------------------------


class CreateSandbox(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/sandboxes``. Also accepts E2B's ``{templateID, metadata, envVars, timeout}``;
    when both spellings are given the native one wins."""

    template: str | None = None
    name: str | None = None
    cpu: int | None = None
    ram_mb: int | None = None
    disk_gb: int | None = None
    env: dict[str, str] = {}
    labels: dict[str, str] = {}
    language: str | None = None
    auto_stop_minutes: int = 0
    auto_archive_days: int = 0
    auto_delete_days: int = 0
    # E2B's create body
    templateID: str | None = None
    metadata: dict[str, str] = {}
    envVars: dict[str, str] = {}
    timeout: int | None = None


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
    auto_stop_minutes: int
    auto_archive_days: int
    auto_delete_days: int
    created_at: str
    updated_at: str
    last_activity_at: str


class SandboxList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[Sandbox]
    next_cursor: str | None = None


class Exec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/sandboxes/{id}/exec``: run ``cmd`` (an argv, no shell) to completion."""

    cmd: Annotated[list[str], msgspec.Meta(min_length=1)]
    timeout_ms: Annotated[int, msgspec.Meta(ge=1, le=3_600_000)] = 60_000
    env: dict[str, str] = {}
    cwd: str | None = None


class ExecResult(msgspec.Struct, frozen=True, kw_only=True):
    stdout: str
    stderr: str
    exit_code: int
    duration_ms: float
    timed_out: bool = False


CODE_MAX_CHARS = 1_000_000
"""Longest snippet run-code accepts (both shapes): far beyond any hand-written script, and well
inside the agent protocol's frame limit even when JSON escapes every character."""


class RunCode(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/sandboxes/{id}/run-code``: run ``code`` with ``lang``'s interpreter
    (python, bash, javascript, typescript — run as JavaScript); without ``lang``, the
    sandbox's ``language``. ``argv`` are the program's arguments."""

    code: Annotated[str, msgspec.Meta(max_length=CODE_MAX_CHARS)]
    lang: str | None = None
    timeout_ms: Annotated[int, msgspec.Meta(ge=1, le=3_600_000)] = 60_000
    argv: list[str] = []
    env: dict[str, str] = {}
    cwd: str | None = None


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

    name: str = ""
    org_id: str | None = None
    org_name: str | None = None


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


class DaytonaCreateSandbox(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``POST /sandbox``. ``memory`` and ``disk`` are GiB, as in Daytona."""

    name: str | None = None
    snapshot: str | None = None
    user: str | None = None
    env: dict[str, str] = {}
    labels: dict[str, str] = {}
    public: bool = False
    cpu: int | None = None
    gpu: int | None = None
    memory: int | None = None
    disk: int | None = None
    auto_stop_interval: int | None = None
    auto_archive_interval: int | None = None
    auto_delete_interval: int | None = None
    network_block_all: bool = False
    target: str | None = None


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


class DaytonaSandboxList(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    items: list[DaytonaSandbox]
    next_cursor: str | None = None


class DaytonaToolboxUrl(msgspec.Struct, frozen=True, kw_only=True):
    url: str


class DaytonaExecute(msgspec.Struct, frozen=True, kw_only=True):
    """``POST /toolbox/{id}/process/execute``: ``command`` is a shell command line;
    ``timeout`` is in seconds."""

    command: str
    cwd: str | None = None
    envs: dict[str, str] = {}
    timeout: Annotated[int, msgspec.Meta(ge=0, le=3600)] | None = None


class DaytonaExecuteResult(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    exit_code: int
    result: str


class DaytonaCodeRun(msgspec.Struct, frozen=True, kw_only=True):
    """``POST /toolbox/{id}/process/code-run``. ``language`` defaults to the sandbox's;
    ``timeout`` is in seconds."""

    code: Annotated[str, msgspec.Meta(max_length=CODE_MAX_CHARS)]
    language: str | None = None
    argv: list[str] | None = None
    envs: dict[str, str] | None = None
    timeout: Annotated[int, msgspec.Meta(ge=0, le=3600)] | None = None


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
