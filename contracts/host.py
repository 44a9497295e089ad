"""core ↔ hostd: host registration, heartbeats, and the commands the core sends a host.

hostd calls the core (``/internal/hosts/...``) to register and heartbeat, authenticating
both with the cluster's bootstrap token (in the registration body, and as
``Authorization: Bearer <bootstrap token>`` on heartbeats). In its registration it hands the core the
URL and bearer token of its own internal API, which only the core knows; the core then sends
sandbox commands there. Both ends decode with these Structs, so a field added here is seen
by both at once.

hostd routes (all need ``Authorization: Bearer <api_token>``):

=========  ==============================  ==================  ==============
method     path                            body                answer
=========  ==============================  ==================  ==============
GET        /health                         —                   HostHealth
GET        /sandboxes                      —                   list[SandboxInfo]
POST       /sandboxes                      SandboxSpec         SandboxInfo
POST       /sandboxes/{id}/start           SandboxSpec         SandboxInfo
POST       /sandboxes/{id}/stop            —                   SandboxInfo
DELETE     /sandboxes/{id}                 —                   204
POST       /sandboxes/{id}/exec            ExecRequest         ExecResult
POST       /sandboxes/{id}/agent           a guest request     its reply
GET        /sandboxes/{id}/disk            —                   DiskUsage
=========  ==============================  ==================  ==============

Errors come back as ``HostErrorBody`` with a 4xx/5xx status.

``/agent`` is the generic relay to the sandbox's agent. Its body is one host → guest message
of ``contracts.guest`` (``HostToGuest``, decoded by ``guest.decode_relayed``: ``t`` picks the
operation, an unknown one is a 400, ``id`` may be left out because hostd numbers the frames of
its agent connection itself). The answer is 200 with the agent's reply message as JSON
(``guest.GuestToHost``), *including* an agent ``error`` reply: the status describes the relay
(sandbox absent 404, not running 409, agent unreachable 502), the body what the agent said, so
the caller maps the agent's error codes to its own. The reply's ``id`` is hostd's frame id and
means nothing to the caller. How long hostd waits for the reply follows the request: its
``timeout_ms`` plus a margin, or 30 s for requests without one; callers time their HTTP
request accordingly.

``/disk`` measures the sandbox's writable layer on the host (any state: a stopped sandbox
keeps its disk), which the sandbox cannot measure from the inside.
"""

from __future__ import annotations

from typing import Literal

import msgspec

REGISTER_PATH = "/internal/hosts/register"
HEARTBEAT_PATH = "/internal/hosts/{host_id}/heartbeat"


class _Wire(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class SandboxSpec(_Wire, frozen=True):
    """Everything a host needs to run one sandbox."""

    id: str
    template: str
    cpu: int
    ram_mb: int
    disk_gb: int
    env: dict[str, str] = {}


class SandboxInfo(_Wire, frozen=True):
    id: str
    state: Literal["running", "stopped", "paused"]
    ip: str | None = None


class ExecRequest(_Wire, frozen=True):
    cmd: list[str]
    env: dict[str, str] = {}
    cwd: str | None = None
    timeout_ms: int = 60_000


class ExecResult(_Wire, frozen=True):
    stdout: str
    stderr: str
    exit_code: int
    duration_ms: float
    timed_out: bool = False


class DiskUsage(_Wire, frozen=True):
    """Bytes allocated to the sandbox's own data: the files it wrote, not the template's."""

    used_bytes: int


class HostHealth(_Wire, frozen=True):
    status: Literal["ok"]
    runtime: str
    sandboxes: int


class HostRegistration(_Wire, frozen=True):
    """hostd → core at start-up. ``sandboxes`` is the host's inventory: every sandbox whose
    disk it holds, running or not, so the core can reconcile."""

    bootstrap_token: str
    name: str
    api_url: str
    api_token: str
    runtime: str
    cpu: int
    ram_mb: int
    disk_gb: int
    templates: list[str]
    sandboxes: list[SandboxInfo] = []


class HostRegistered(_Wire, frozen=True):
    host_id: str
    heartbeat_interval_s: float


class Heartbeat(_Wire, frozen=True):
    sandboxes: list[SandboxInfo]


class HostErrorBody(_Wire, frozen=True):
    code: str
    message: str
