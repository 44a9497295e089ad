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
GET        /sandboxes/{id}                 —                   SandboxInfo
POST       /sandboxes                      SandboxSpec         SandboxInfo
POST       /sandboxes/{id}/start           SandboxSpec         SandboxInfo
POST       /sandboxes/{id}/stop            —                   SandboxInfo
DELETE     /sandboxes/{id}                 —                   204
POST       /sandboxes/{id}/exec            ExecRequest         ExecResult
POST       /sandboxes/{id}/agent           a guest request     its reply
PUT        /sandboxes/{id}/files?path=     the file's bytes    FileWritten
GET        /sandboxes/{id}/files?path=     —                   the file's bytes
GET        /sandboxes/{id}/disk            —                   DiskUsage
WebSocket  /sandboxes/{id}/pty             guest.PtyAttach     a terminal
WebSocket  /sandboxes/{id}/proc            guest.ProcSpawn,    a process's stdio
                                           ProcStart or
                                           ProcConnect
POST       /sandboxes/{id}/pause           —                   SandboxInfo
POST       /sandboxes/{id}/resume          —                   SandboxInfo
POST       /sandboxes/{id}/resize          ResizeRequest       SandboxInfo
POST       /sandboxes/{id}/snapshots       SnapshotRequest     SnapshotTaken
PUT        /snapshots/{sid}/signature      snapshots.Signed…   204
DELETE     /snapshots/{sid}                —                   204
POST       /sandboxes/{id}/restore         RestoreRequest      SandboxInfo
POST       /snapshots/{sid}/clone          CloneRequest        SandboxInfo
POST       /sandboxes/{id}/archive         —                   SandboxInfo
POST       /sandboxes/{id}/unarchive       —                   SandboxInfo
PUT        /sandboxes/{id}/egress          EgressPolicy        SandboxInfo
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

``/files`` streams a file's bytes to or from the sandbox (``guest.FsWrite``/``guest.FsRead``
on a stream connection of their own): the body is never held whole by hostd, and an upload
is all or nothing (a request that ends early leaves the file as it was). ``PUT`` takes
``mode`` (octal) as an optional query parameter. ``GET`` answers with ``Content-Length``
set to the file's size when opened; if the file shrinks while it is read, hostd cuts the
response short (the client sees an incomplete body, never a wrong one), and bytes appended
meanwhile are not sent. When the agent refuses (missing file, a directory, permission
denied), the answer is **422** with the agent's ``guest.Error`` as its body, so the caller
maps the agent's code exactly as for a relayed reply; among the other routes, only the
snapshot routes answer 422 (``snapshot_rejected``, a ``HostErrorBody``).

``/pty`` is a WebSocket bridged to a terminal stream of the agent (``guest.PtyAttach``; the
upgrade needs the same bearer token, else it is refused with 403). The core's first message
is the opener as JSON text; hostd answers with the agent's first reply as text
(``guest.PtyAttached`` or ``guest.Error``). Then binary messages carry the terminal's input
(core → hostd) and output (hostd → core), and text messages from the core are
``guest.PtyResize``. When the shell exits, hostd sends the agent's ``guest.PtyExited`` as text
and closes with 1000. When hostd cannot open the stream it closes with ``4000 + status``
(4404 no such sandbox, 4409 not running, 4502 agent unreachable; 4400 a malformed opener)
and the message as the reason. Either side closing ends the stream (``hosts/terminal.py``).

``/proc`` works the same way for a process (``guest.ProcSpawn``, ``ProcStart`` or
``ProcConnect``, ``hosts/proc.py``): the first reply is ``guest.ProcStarted`` or
``guest.Error``; binary messages from the core are stdin (an empty one closes it), binary
messages from hostd are the agent's tagged output frames (first byte ``guest.PROC_STDOUT``,
``PROC_STDERR`` or ``PROC_PTY``, the tag alone ends that stream), and the last text message
is ``guest.ProcExited``; the core then closes the socket (hostd reads until then, and closes
with 1000 itself after ``CLOSE_WAIT_S`` in ``hosts/proc.py``). Closing it earlier kills a
``ProcSpawn``'s process but only detaches from a ``ProcStart``'s or ``ProcConnect``'s (the
process stays in the agent's registry).

The lifecycle routes (``hosts/lifecycle.py``; docs/architecture.md, "Snapshots, archives and
lifecycle on the host") follow ``hosts/commands.py`` for the states each allows (409
otherwise). A snapshot, restore or clone that cannot be trusted (unsigned, unknown key, bad
signature, a hash that does not match) is refused with **422** ``snapshot_rejected`` before
anything changes; an unknown snapshot (or archive) is a 404 ``snapshot_not_found``; malformed
verify keys, a disk shrink or a non-positive size are a 400 ``bad_request``. The signature
body is ``contracts.snapshots.SignedSnapshot``. An archived sandbox is listed with state
``archived`` (its disk is in the archive store; ``start`` brings it back).

``GET /sandboxes/{id}`` answers once no lifecycle command on the sandbox is in flight (it
waits for the sandbox's lock), so it reports the outcome of an operation under way — what a
restarted core needs to settle a row it left in a transitional state; 404 when absent.

``/disk`` measures the sandbox's writable layer on the host (any state: a stopped sandbox
keeps its disk), which the sandbox cannot measure from the inside.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from contracts.fields import (
    TIMEOUT_MAX_MS,
    Argv,
    EnvMap,
    Name,
    Path,
    Positive,
    Secret,
    Text,
    Url,
    check_command_size,
)
from contracts.netrules import check_domain, check_rules

REGISTER_PATH = "/internal/hosts/register"
HEARTBEAT_PATH = "/internal/hosts/{host_id}/heartbeat"


class _Wire(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class EgressPolicy(_Wire, frozen=True):
    """Where a sandbox may connect beyond the addresses hostd always denies.

    ``allow``: everything but the listed networks and domains; ``deny``: nothing but them.
    Domains (``pypi.org``, ``*.github.com``, lower case) are matched by hostd's egress proxy
    on the name a connection asks for (TLS SNI or HTTP Host). Sent with ``PUT
    /sandboxes/{id}/egress`` and in ``SandboxSpec.egress``."""

    mode: Literal["allow", "deny"]
    cidrs: list[str] = []
    domains: list[str] = []

    def __post_init__(self) -> None:
        check_rules(self.cidrs, self.domains)


ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
"""A secret's name is the environment variable that holds its placeholder in the sandbox."""


class SecretGrant(_Wire, frozen=True):
    """One secret a sandbox may use: its environment holds ``name=placeholder``; hostd's
    egress proxy replaces the placeholder with ``value`` only in requests towards ``hosts``."""

    name: Annotated[str, msgspec.Meta(pattern=ENV_NAME)]
    placeholder: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]{16,256}$")]
    value: Secret
    hosts: Annotated[list[str], msgspec.Meta(min_length=1, max_length=256)]

    def __post_init__(self) -> None:
        for host in self.hosts:
            check_domain(host)


class SandboxSpec(_Wire, frozen=True):
    """Everything a host needs to run one sandbox."""

    id: Name
    template: Name
    cpu: Positive
    ram_mb: Positive
    disk_gb: Positive
    env: EnvMap = {}
    egress: EgressPolicy | None = None
    """``None``: the operator's default (hostd's ``DNAH_EGRESS_DEFAULT``)."""
    secrets: list[SecretGrant] = []

    def __post_init__(self) -> None:
        check_command_size([], self.env)


class SandboxInfo(_Wire, frozen=True):
    id: str
    state: Literal["running", "stopped", "paused", "archived"]
    """``archived``: the host keeps the sandbox's record but its disk is in the archive store
    (``POST /sandboxes/{id}/archive``); ``start`` or ``unarchive`` brings the disk back."""
    ip: str | None = None


class ExecRequest(_Wire, frozen=True):
    cmd: Annotated[Argv, msgspec.Meta(min_length=1)]
    env: EnvMap = {}
    cwd: Path | None = None
    timeout_ms: Annotated[int, msgspec.Meta(ge=1, le=TIMEOUT_MAX_MS)] = 60_000

    def __post_init__(self) -> None:
        check_command_size(self.cmd, self.env)


class ExecResult(_Wire, frozen=True):
    stdout: str
    stderr: str
    exit_code: int
    duration_ms: float
    timed_out: bool = False
    truncated: bool = False
    """Output past 1 MiB on a stream was dropped."""


class FileWritten(_Wire, frozen=True):
    """An upload is complete: ``path`` (absolute, inside the sandbox) holds ``size`` bytes."""

    path: str
    size: int


AGENT_REFUSED = 422
"""The status of a stream route the agent refused; the body is the agent's ``guest.Error``."""


class SnapshotRequest(_Wire, frozen=True):
    """Body of ``POST /sandboxes/{id}/snapshots``: the id the core chose for the snapshot
    (1-63 letters, digits, ``-`` or ``_``; unique on the host)."""

    snapshot_id: Name


class SnapshotTaken(_Wire, frozen=True):
    """A snapshot is written (manifest included) but not trusted until it is signed
    (``PUT /snapshots/{id}/signature`` with a ``contracts.snapshots.SignedSnapshot`` whose
    claim carries exactly this ``manifest_hash`` and ``size``)."""

    snapshot_id: str
    sandbox_id: str
    manifest_hash: str
    """Hex sha256 of the stored ``manifest.json`` bytes."""
    size: int
    """Bytes of the snapshot's data files."""
    memory: bool
    """Whether the snapshot holds memory too; False on the namespace runtime (disk only)."""


class RestoreRequest(_Wire, frozen=True):
    """Body of ``POST /sandboxes/{id}/restore``. ``verify_keys`` maps each accepted key id to
    its base64 Ed25519 public key; the snapshot's signature must be by one of them."""

    snapshot_id: Name
    verify_keys: dict[Name, Text]


class CloneRequest(_Wire, frozen=True):
    """Body of ``POST /snapshots/{snapshot_id}/clone``: a new sandbox ``spec`` whose disk is
    the (verified) snapshot's; ``spec.template`` must be the snapshot's template."""

    spec: SandboxSpec
    verify_keys: dict[Name, Text]


class ResizeRequest(_Wire, frozen=True):
    """Body of ``POST /sandboxes/{id}/resize``; a field left out keeps its value. A running
    sandbox may only grow (CPU, memory: applied live); a stopped one may also shrink CPU and
    memory; disk only ever grows. The core keeps the spec it sends on ``start`` in step."""

    cpu: Positive | None = None
    ram_mb: Positive | None = None
    disk_gb: Positive | None = None


class DiskUsage(_Wire, frozen=True):
    """Bytes allocated to the sandbox's own data: the files it wrote, not the template's."""

    used_bytes: int


class HostHealth(_Wire, frozen=True):
    status: Literal["ok"]
    runtime: str
    sandboxes: int


class Capabilities(_Wire, frozen=True):
    """What a host's runtime backend can do, declared at registration; the core decides with
    it instead of asking a host for what it cannot do (docs/runtimes.md, "Choosing a runtime")."""

    memory_snapshot: bool
    """A snapshot captures the sandbox's memory, so a restore or clone of it resumes the running
    processes (a VMM's snapshot); False: the disk only, and processes start afresh."""
    live_resize: bool
    """CPU and memory of a running sandbox can be changed in place; False: only while stopped."""
    fork: bool
    """A clone of a running sandbox continues the parent's running processes (a VM forked from
    its memory state); False: a fork is a filesystem copy booted anew."""


class HostRegistration(_Wire, frozen=True):
    """hostd → core at start-up. ``sandboxes`` is the host's inventory: every sandbox whose
    disk it holds, running or not, so the core can reconcile."""

    bootstrap_token: Text
    name: Name
    api_url: Url
    api_token: Text
    runtime: Name
    """The runtime backend (``oci``, ``qemu``, ``cloud-hypervisor``, ``fake``)."""
    capabilities: Capabilities
    cpu: Positive
    ram_mb: Positive
    disk_gb: Positive
    templates: list[Name]
    sandboxes: list[SandboxInfo] = []


class HostRegistered(_Wire, frozen=True):
    host_id: str
    heartbeat_interval_s: float


class Heartbeat(_Wire, frozen=True):
    sandboxes: list[SandboxInfo]


class HostErrorBody(_Wire, frozen=True):
    code: str
    message: str
