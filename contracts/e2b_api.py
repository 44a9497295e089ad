"""E2B's control plane on the wire (``POST /v2/sandboxes`` and the routes around it), as the
``e2b`` SDK 2.63.0 sends and parses it (its ``e2b/api/client/models``).

Each class is E2B's model of the same name with an ``E2b`` prefix (so the core's OpenAPI
document keeps its own ``Sandbox``). Field names are E2B's own, spelled per field
(``templateID``, ``memoryMB``, and the one snake-case key, ``allow_internet_access``).
Requests ignore fields they do not name, as the SDK's generated server would; the features
behind the few named-but-refused fields (MCP, IAM, volumes, network rules and proxies) are
refused by the core with a 400 rather than ignored. Responses omit an optional field rather
than send ``null`` where the SDK distinguishes unset.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from contracts.fields import NO_NUL, EnvMap, LabelMap, Name, Text

MAX_TIMEOUT_S = 86_400
"""The longest timeout (seconds) a sandbox may be given: E2B's own maximum (a day)."""
DEFAULT_TIMEOUT_S = 300
"""A sandbox's timeout when its create names none (E2B's default)."""
MAX_FORKS = 20
"""Forks one ``POST /sandboxes/{id}/fork`` may ask for (the SDK's ``MAX_FORK_COUNT``)."""

TimeoutS = Annotated[int, msgspec.Meta(ge=0, le=MAX_TIMEOUT_S)]
"""A timeout in seconds from now; 0 ends the sandbox at the reaper's next pass."""
NetworkEntry = Annotated[str, msgspec.Meta(pattern=NO_NUL, max_length=256)]
NetworkList = Annotated[list[NetworkEntry], msgspec.Meta(max_length=256)]

E2bState = Literal["running", "paused"]
"""The only states E2B knows (``SandboxState``); the SDK refuses any other."""


class E2bAutoResume(msgspec.Struct, frozen=True, kw_only=True):
    enabled: bool


class E2bNetwork(msgspec.Struct, frozen=True, kw_only=True):
    """``SandboxNetworkConfig``: egress lists (addresses, networks or domains) and whether the
    sandbox's ports are public."""

    allow_public_traffic: bool | None = msgspec.field(default=None, name="allowPublicTraffic")
    allow_out: NetworkList | None = msgspec.field(default=None, name="allowOut")
    deny_out: NetworkList | None = msgspec.field(default=None, name="denyOut")
    dns_servers: NetworkList | None = msgspec.field(default=None, name="dnsServers")
    egress_proxy: dict[str, Any] | None = msgspec.field(default=None, name="egressProxy")
    mask_request_host: Text | None = msgspec.field(default=None, name="maskRequestHost")
    https_ports: list[int] | None = msgspec.field(default=None, name="httpsPorts")
    rules: dict[str, Any] | None = None


class E2bNewSandbox(msgspec.Struct, frozen=True, kw_only=True):
    """``NewSandboxV2``: the body of ``POST /v2/sandboxes``."""

    template_id: Name = msgspec.field(name="templateID")
    timeout: TimeoutS = DEFAULT_TIMEOUT_S
    auto_pause: bool = msgspec.field(default=False, name="autoPause")
    auto_pause_memory: bool = msgspec.field(default=True, name="autoPauseMemory")
    auto_resume: E2bAutoResume | None = msgspec.field(default=None, name="autoResume")
    allow_internet_access: bool | None = None
    network: E2bNetwork | None = None
    metadata: LabelMap | None = None
    env_vars: EnvMap | None = msgspec.field(default=None, name="envVars")
    mcp: dict[str, Any] | None = None
    iam: dict[str, Any] | None = None
    volume_mounts: list[Any] | None = msgspec.field(default=None, name="volumeMounts")


class E2bSandbox(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """E2B's ``Sandbox``: what create, connect, resume and fork answer. With
    ``envdAccessToken`` the SDK sends ``X-Access-Token`` to envd; with ``trafficAccessToken``,
    the traffic token to the sandbox's other ports."""

    template_id: str = msgspec.field(name="templateID")
    sandbox_id: str = msgspec.field(name="sandboxID")
    client_id: str = msgspec.field(name="clientID")
    envd_version: str = msgspec.field(name="envdVersion")
    alias: str | None = None
    envd_access_token: str | None = msgspec.field(default=None, name="envdAccessToken")
    traffic_access_token: str | None = msgspec.field(default=None, name="trafficAccessToken")
    domain: str | None = None


class E2bNetworkInfo(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    allow_public_traffic: bool = msgspec.field(name="allowPublicTraffic")
    allow_out: list[str] | None = msgspec.field(default=None, name="allowOut")
    deny_out: list[str] | None = msgspec.field(default=None, name="denyOut")


class E2bLifecycle(msgspec.Struct, frozen=True, kw_only=True):
    auto_resume: bool = msgspec.field(name="autoResume")
    on_timeout: Literal["kill", "pause"] = msgspec.field(name="onTimeout")


class E2bListedSandbox(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """E2B's ``ListedSandbox``: one item of ``GET /v2/sandboxes``."""

    template_id: str = msgspec.field(name="templateID")
    sandbox_id: str = msgspec.field(name="sandboxID")
    client_id: str = msgspec.field(name="clientID")
    started_at: datetime = msgspec.field(name="startedAt")
    end_at: datetime = msgspec.field(name="endAt")
    cpu_count: int = msgspec.field(name="cpuCount")
    memory_mb: int = msgspec.field(name="memoryMB")
    disk_size_mb: int = msgspec.field(name="diskSizeMB")
    state: E2bState
    envd_version: str = msgspec.field(name="envdVersion")
    alias: str | None = None
    metadata: dict[str, str] = {}


class E2bSandboxDetail(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """E2B's ``SandboxDetail``: ``GET /sandboxes/{id}``."""

    template_id: str = msgspec.field(name="templateID")
    sandbox_id: str = msgspec.field(name="sandboxID")
    client_id: str = msgspec.field(name="clientID")
    started_at: datetime = msgspec.field(name="startedAt")
    end_at: datetime = msgspec.field(name="endAt")
    envd_version: str = msgspec.field(name="envdVersion")
    cpu_count: int = msgspec.field(name="cpuCount")
    memory_mb: int = msgspec.field(name="memoryMB")
    disk_size_mb: int = msgspec.field(name="diskSizeMB")
    state: E2bState
    alias: str | None = None
    envd_access_token: str | None = msgspec.field(default=None, name="envdAccessToken")
    allow_internet_access: bool | None = msgspec.field(default=None, name="allowInternetAccess")
    domain: str | None = None
    metadata: dict[str, str] = {}
    network: E2bNetworkInfo | None = None
    lifecycle: E2bLifecycle | None = None


class E2bConnect(msgspec.Struct, frozen=True, kw_only=True):
    """``ConnectSandboxV2`` (and v1's ``ConnectSandbox``): a timeout only lengthens the
    deadline of a running sandbox; a resumed one gets it from now."""

    timeout: TimeoutS | None = None
    memory: bool | None = None


class E2bResume(msgspec.Struct, frozen=True, kw_only=True):
    """``ResumedSandbox`` (the legacy resume)."""

    timeout: TimeoutS | None = None
    auto_pause: bool | None = msgspec.field(default=None, name="autoPause")
    memory: bool | None = None


class E2bPause(msgspec.Struct, frozen=True, kw_only=True):
    """``SandboxPauseRequest``: what the backend keeps is the backend's to say (a VM keeps its
    memory, a container its files), so both fields are accepted and not acted on."""

    memory: bool | None = None
    require_healthy_guest: bool | None = msgspec.field(default=None, name="requireHealthyGuest")


class E2bSetTimeout(msgspec.Struct, frozen=True, kw_only=True):
    """``SandboxTimeoutRequest``: the deadline becomes now + ``timeout`` (shorter or longer)."""

    timeout: TimeoutS


class E2bRefresh(msgspec.Struct, frozen=True, kw_only=True):
    """``SandboxRefreshRequest``: keep the sandbox alive at least ``duration`` more seconds."""

    duration: Annotated[int, msgspec.Meta(ge=0, le=3600)] | None = None


class E2bNetworkUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """``SandboxNetworkUpdateConfig`` (``PUT /sandboxes/{id}/network``): replaces the egress
    lists; what it omits is cleared."""

    allow_out: NetworkList | None = msgspec.field(default=None, name="allowOut")
    deny_out: NetworkList | None = msgspec.field(default=None, name="denyOut")
    dns_servers: NetworkList | None = msgspec.field(default=None, name="dnsServers")
    egress_proxy: dict[str, Any] | None = msgspec.field(default=None, name="egressProxy")
    rules: dict[str, Any] | None = None


class E2bSandboxMetric(msgspec.Struct, frozen=True, kw_only=True):
    """E2B's ``SandboxMetric``: one sample (bytes, and percent of the sandbox's CPUs)."""

    timestamp: datetime
    timestamp_unix: int = msgspec.field(name="timestampUnix")
    cpu_count: int = msgspec.field(name="cpuCount")
    cpu_used_pct: float = msgspec.field(name="cpuUsedPct")
    mem_used: int = msgspec.field(name="memUsed")
    mem_total: int = msgspec.field(name="memTotal")
    mem_cache: int = msgspec.field(name="memCache")
    disk_used: int = msgspec.field(name="diskUsed")
    disk_total: int = msgspec.field(name="diskTotal")


class E2bSandboxesWithMetrics(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /sandboxes/metrics``: the latest sample of each named running sandbox."""

    sandboxes: dict[str, E2bSandboxMetric]


LogLevel = Literal["debug", "info", "warn", "error"]


class E2bSandboxLog(msgspec.Struct, frozen=True, kw_only=True):
    timestamp: datetime
    line: str


class E2bSandboxLogEntry(msgspec.Struct, frozen=True, kw_only=True):
    timestamp: datetime
    message: str
    level: LogLevel
    fields: dict[str, str] = {}


class E2bSandboxLogs(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /sandboxes/{id}/logs`` (v1): the same entries twice, as lines and as entries."""

    logs: list[E2bSandboxLog]
    log_entries: list[E2bSandboxLogEntry] = msgspec.field(name="logEntries")


class E2bSandboxLogsV2(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /v2/sandboxes/{id}/logs``."""

    logs: list[E2bSandboxLogEntry]


class E2bSnapshotRequest(msgspec.Struct, frozen=True, kw_only=True):
    """``SandboxSnapshotRequest``. A snapshot is named by its id; ``name`` is refused."""

    name: Name | None = None
    memory: bool | None = None


class E2bSnapshotInfo(msgspec.Struct, frozen=True, kw_only=True):
    """E2B's ``SnapshotInfo``: the id is what ``Sandbox.create(template=…)`` takes."""

    snapshot_id: str = msgspec.field(name="snapshotID")
    names: list[str]


class E2bForkRequest(msgspec.Struct, frozen=True, kw_only=True):
    """``SandboxForkRequest``: ``count`` new sandboxes from one snapshot taken now."""

    timeout: TimeoutS | None = None
    count: Annotated[int, msgspec.Meta(ge=1, le=MAX_FORKS)] = 1


class E2bError(msgspec.Struct, frozen=True, kw_only=True):
    """E2B's ``Error``: every failure of the control plane (and of envd's REST routes)."""

    code: int
    message: str


class E2bForkResult(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """``SandboxForkResult``: exactly one of the two is set."""

    sandbox: E2bSandbox | None = None
    error: E2bError | None = None
