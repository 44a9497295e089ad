"""The commands hostd accepts, whatever front end they arrive through.

Each command is a frozen Struct; together they form a tagged union (tag field ``kind``), so
the HTTP API (``hosts/app.py``) and any other front end (a config-file runner, a test) feed
``HostController.handle`` the same values, and a list of commands can be decoded from JSON.

Sandbox states are those of ``contracts.host.SandboxInfo``: ``running``, ``stopped``,
``paused``, ``archived``; "absent" means the host holds no sandbox with that id. A command sent in a state
it is not allowed in fails with ``SandboxConflict``, or ``SandboxNotFound`` when absent. An
id that cannot name a sandbox (``is_sandbox_id``) names nothing, so it counts as absent.
"""

from __future__ import annotations

import re

import msgspec

from contracts import guest
from contracts.host import ExecRequest, SandboxSpec
from contracts.snapshots import SignedSnapshot

_SANDBOX_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")


def is_sandbox_id(value: str) -> bool:
    """Whether ``value`` can name a sandbox: 1-63 letters, digits, ``-`` or ``_``.

    Ids become directory, cgroup, netns and host names, so a front end must reject anything
    else before it reaches a runtime (``..`` addresses a parent directory, ``/`` another path).
    """
    return _SANDBOX_ID.fullmatch(value) is not None


class _Command(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="kind"):
    pass


class CreateSandbox(_Command, frozen=True, tag="create"):
    """Create ``spec.id`` from its template and boot it.

    Allowed when: absent. Result: ``SandboxInfo`` (running).
    """

    spec: SandboxSpec


class StartSandbox(_Command, frozen=True, tag="start"):
    """Boot a stopped sandbox on the disk it kept (an archived one is unarchived first).

    Allowed when: stopped, archived; running (a no-op, so a retried start succeeds).
    Result: ``SandboxInfo`` (running).
    """

    spec: SandboxSpec


class PauseSandbox(_Command, frozen=True, tag="pause"):
    """Freeze every process of the sandbox in place (memory kept, no CPU used).

    Allowed when: running; paused (a no-op). Result: ``SandboxInfo`` (paused).
    """

    sandbox_id: str


class ResumeSandbox(_Command, frozen=True, tag="resume"):
    """Thaw a paused sandbox.

    Allowed when: paused; running (a no-op). Result: ``SandboxInfo`` (running).
    """

    sandbox_id: str


class ResizeSandbox(_Command, frozen=True, tag="resize"):
    """Change the sandbox's CPU, memory and disk size; ``None`` keeps a value.

    Allowed when: running or paused (CPU and memory only grow, live), stopped or archived
    (CPU and memory either way); disk only grows, in every state. Result: ``SandboxInfo``.
    """

    sandbox_id: str
    cpu: int | None = None
    ram_mb: int | None = None
    disk_gb: int | None = None


class TakeSnapshot(_Command, frozen=True, tag="snapshot"):
    """Write the sandbox's disk to the snapshot store as ``snapshot_id`` (a running sandbox
    is frozen meanwhile). The snapshot is not trusted until ``SealSnapshot``.

    Allowed when: running, paused, stopped. Result: ``contracts.host.SnapshotTaken``.
    """

    sandbox_id: str
    snapshot_id: str


class SealSnapshot(_Command, frozen=True, tag="seal"):
    """Store the core's signature of a snapshot, if its claim describes the stored snapshot.

    Allowed when: the snapshot exists. Result: ``None``.
    """

    snapshot_id: str
    signed: SignedSnapshot


class DeleteSnapshot(_Command, frozen=True, tag="delete_snapshot"):
    """Remove a snapshot. Allowed: always (idempotent). Result: ``None``."""

    snapshot_id: str


class RestoreSnapshot(_Command, frozen=True, tag="restore"):
    """Replace the sandbox's disk with one of its own snapshots, verified first (signature by
    one of ``verify_keys`` {kid: base64 public key}, hashes), and boot it.

    Allowed when: running, paused, stopped. Result: ``SandboxInfo`` (running).
    """

    sandbox_id: str
    snapshot_id: str
    verify_keys: dict[str, str]


class CloneSnapshot(_Command, frozen=True, tag="clone"):
    """Create ``spec.id`` with the (verified) snapshot's disk and boot it.

    Allowed when: ``spec.id`` absent. Result: ``SandboxInfo`` (running).
    """

    snapshot_id: str
    spec: SandboxSpec
    verify_keys: dict[str, str]


class ArchiveSandbox(_Command, frozen=True, tag="archive"):
    """Move a stopped sandbox's disk into the archive store (tar + zstd) and free it locally.

    Allowed when: stopped; archived (a no-op). Result: ``SandboxInfo`` (archived).
    """

    sandbox_id: str


class UnarchiveSandbox(_Command, frozen=True, tag="unarchive"):
    """Bring an archived sandbox's disk back (hash-checked), then drop the archive.

    Allowed when: archived; stopped (a no-op). Result: ``SandboxInfo`` (stopped).
    ``StartSandbox`` on an archived sandbox does this first, implicitly.
    """

    sandbox_id: str


class StopSandbox(_Command, frozen=True, tag="stop"):
    """Kill every process of the sandbox and free its CPU and memory; the disk is kept.

    Allowed when: running, paused; stopped (a no-op). Result: ``SandboxInfo`` (stopped).
    """

    sandbox_id: str


class DestroySandbox(_Command, frozen=True, tag="destroy"):
    """Remove every trace of the sandbox, disk included.

    Allowed when: any state, and absent (idempotent, so the core can retry it).
    Result: ``None``.
    """

    sandbox_id: str


class ExecInSandbox(_Command, frozen=True, tag="exec"):
    """Run a command to completion inside the sandbox, through its agent.

    Allowed when: running. Result: ``contracts.host.ExecResult``.
    """

    sandbox_id: str
    request: ExecRequest


class AgentCall(_Command, frozen=True, tag="agent"):
    """Relay one request to the sandbox's agent and return its reply, whatever operation it
    is: the controller only checks the state and owns the connection; ``message.id`` is
    replaced by the connection's own numbering.

    Allowed when: running. Result: the reply (``contracts.guest.GuestToHost``), an agent
    ``error`` reply included (the relay's caller interprets it).
    """

    sandbox_id: str
    message: guest.HostToGuest


class OpenStream(_Command, frozen=True, tag="stream"):
    """Open a stream connection to the sandbox's agent (a file transfer, a terminal) with
    ``opener`` as its first frame.

    Allowed when: running. Result: the ``AgentStream`` and the agent's first reply (an
    ``error`` reply included); the caller owns the stream and must close it.
    """

    sandbox_id: str
    opener: guest.StreamOpener


class LocatePort(_Command, frozen=True, tag="locate_port"):
    """Where hostd connects to reach the sandbox's ports (``hosts/ports/``).

    Allowed when: running. Result: the runtime's ``PortEndpoint``.
    """

    sandbox_id: str


class GetDiskUsage(_Command, frozen=True, tag="disk"):
    """How much disk the sandbox's own data takes (its writable layer), in bytes.

    Allowed when: present, in any state (a stopped sandbox keeps its disk).
    Result: ``contracts.host.DiskUsage``.
    """

    sandbox_id: str


class ListSandboxes(_Command, frozen=True, tag="list"):
    """Every sandbox whose disk this host holds.

    Allowed: always. Result: ``list[SandboxInfo]``.
    """


class InspectSandbox(_Command, frozen=True, tag="inspect"):
    """One sandbox's state once no lifecycle command on it is in flight: it waits for the
    sandbox's lock, so the answer is the outcome of whatever operation was under way (a
    restarted core settles the rows it left in a transitional state with it).

    Allowed: always. Result: ``SandboxInfo``; 404 when the host has no such sandbox.
    """

    sandbox_id: str


class GetHealth(_Command, frozen=True, tag="health"):
    """The host's liveness summary.

    Allowed: always. Result: ``HostHealth``.
    """


Command = (
    CreateSandbox
    | StartSandbox
    | StopSandbox
    | PauseSandbox
    | ResumeSandbox
    | ResizeSandbox
    | TakeSnapshot
    | SealSnapshot
    | DeleteSnapshot
    | RestoreSnapshot
    | CloneSnapshot
    | ArchiveSandbox
    | UnarchiveSandbox
    | DestroySandbox
    | ExecInSandbox
    | AgentCall
    | OpenStream
    | LocatePort
    | GetDiskUsage
    | ListSandboxes
    | InspectSandbox
    | GetHealth
)
