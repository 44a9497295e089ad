"""hostd's controller: executes ``hosts.commands`` against a runtime and the sandboxes' agents.

The controller is where sandbox states are enforced (see ``hosts/commands.py``) and where
commands on one sandbox are ordered. Lifecycle commands (create, start, stop, destroy) on the
same sandbox run one at a time, in arrival order: a destroy that arrives while the create is
still booting waits for it, then removes what it built. Exec and agent calls (the generic
relay, ``AgentCall``) take no lock; they only need the sandbox to be running when they start,
and if a stop or destroy kills the sandbox under them, they fail with the error that describes
the new state.

Each running sandbox has at most one agent connection, opened on first use and shared by all
concurrent execs (the guest protocol multiplexes requests by id). A connection found closed
(the agent restarted, the sandbox was stopped and started) is replaced before the request is
sent; a new connection first checks the agent's protocol version (``AgentClient.open``: another
version is ``AgentIncompatible``, 409). Streams (file transfers, terminals: ``OpenStream``) get
a connection each, owned by the caller. An exec or agent call whose connection fails after it
was sent is never retried, since the command may already have run; it fails with
``AgentUnavailable`` and the next request reconnects.

Snapshots, clones, archives and resizes are lifecycle commands too (they hold the sandbox's
lock); a command that reads or writes a snapshot also holds that snapshot's lock (key
``snapshot:<id>``, which no sandbox id can be), so a deletion never races a restore or a
clone reading it. A snapshot is verified in full (``hosts/snapshot_store.py``) before the
sandbox it would overwrite, or the clone it would create, is touched.

No transport lives here: front ends (HTTP in ``hosts/app.py``) translate to and from commands.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar, overload

import structlog
from nacl.signing import VerifyKey

from contracts import guest
from contracts.host import (
    DiskUsage,
    ExecRequest,
    ExecResult,
    HostHealth,
    SandboxInfo,
    SandboxSpec,
    SnapshotTaken,
)
from contracts.snapshots import verify_keys_from_wire
from hosts import snapshot_store
from hosts.agent_client import AgentClient
from hosts.agent_stream import AgentStream
from hosts.commands import (
    AgentCall,
    ArchiveSandbox,
    CloneSnapshot,
    Command,
    CreateSandbox,
    DeleteSnapshot,
    DestroySandbox,
    ExecInSandbox,
    GetDiskUsage,
    GetHealth,
    InspectSandbox,
    ListSandboxes,
    LocatePort,
    OpenStream,
    PauseSandbox,
    ResizeSandbox,
    RestoreSnapshot,
    ResumeSandbox,
    SealSnapshot,
    StartSandbox,
    StopSandbox,
    TakeSnapshot,
    UnarchiveSandbox,
    is_sandbox_id,
)
from hosts.errors import AgentUnavailable, InvalidRequest, RuntimeFailure, SandboxConflict, SandboxNotFound
from hosts.runtime.base import PortEndpoint, SandboxRuntime
from hosts.snapshot_store import EntryStore

log = structlog.get_logger("hosts.controller")

_R = TypeVar("_R")


class HostController:
    """Runs commands on one host. Create one per runtime; call ``close`` at shutdown."""

    def __init__(
        self,
        runtime: SandboxRuntime,
        *,
        snapshots: EntryStore | None = None,
        archives: EntryStore | None = None,
    ) -> None:
        """``snapshots`` and ``archives`` are the stores (see ``hosts/snapshot_store.py``);
        without them, the commands that need one fail with ``RuntimeFailure``."""
        self._runtime = runtime
        self._snapshots = snapshots
        self._archives = archives
        self._lifecycle = _KeyedLocks()
        self._connecting = _KeyedLocks()
        self._agents: dict[str, AgentClient] = {}
        self.service_ports: Callable[[str], tuple[int, ...]] = _no_services
        """The ports a template's services listen on when ready (``hosts/service_ready.py``):
        a create or start waits for them before it returns. hostd's app sets it."""

    @overload
    async def handle(
        self,
        cmd: CreateSandbox
        | StartSandbox
        | StopSandbox
        | PauseSandbox
        | ResumeSandbox
        | ResizeSandbox
        | RestoreSnapshot
        | CloneSnapshot
        | ArchiveSandbox
        | UnarchiveSandbox
        | InspectSandbox,
    ) -> SandboxInfo: ...
    @overload
    async def handle(self, cmd: DestroySandbox | SealSnapshot | DeleteSnapshot) -> None: ...
    @overload
    async def handle(self, cmd: TakeSnapshot) -> SnapshotTaken: ...
    @overload
    async def handle(self, cmd: ExecInSandbox) -> ExecResult: ...
    @overload
    async def handle(self, cmd: AgentCall) -> guest.GuestToHost: ...
    @overload
    async def handle(self, cmd: OpenStream) -> tuple[AgentStream, guest.StreamReply]: ...
    @overload
    async def handle(self, cmd: LocatePort) -> PortEndpoint: ...
    @overload
    async def handle(self, cmd: GetDiskUsage) -> DiskUsage: ...
    @overload
    async def handle(self, cmd: ListSandboxes) -> list[SandboxInfo]: ...
    @overload
    async def handle(self, cmd: GetHealth) -> HostHealth: ...

    async def handle(
        self, cmd: Command
    ) -> (
        SandboxInfo
        | ExecResult
        | guest.GuestToHost
        | tuple[AgentStream, guest.StreamReply]
        | PortEndpoint
        | DiskUsage
        | HostHealth
        | list[SandboxInfo]
        | SnapshotTaken
        | None
    ):
        """Execute ``cmd`` and return its result (see each command's docstring).

        Raises:
            HostError: a subclass describing why the command could not be carried out.
        """
        match cmd:
            case ExecInSandbox(sandbox_id=sandbox_id, request=request):
                return await self._exec(_checked(sandbox_id), request)
            case AgentCall(sandbox_id=sandbox_id, message=message):
                return await self._on_agent(_checked(sandbox_id), lambda client: client.call(message))
            case OpenStream(sandbox_id=sandbox_id, opener=opener):
                return await self._open_stream(_checked(sandbox_id), opener)
            case LocatePort(sandbox_id=sandbox_id):
                sandbox_id = _checked(sandbox_id)
                self._require_running(sandbox_id)
                return self._runtime.port_endpoint(sandbox_id)
            case GetDiskUsage(sandbox_id=sandbox_id):
                sandbox_id = _checked(sandbox_id)
                self._get(sandbox_id)
                return DiskUsage(used_bytes=await self._runtime.disk_used_bytes(sandbox_id))
            case CreateSandbox(spec=spec):
                return await self._create(spec)
            case StartSandbox(spec=spec):
                return await self._start(spec)
            case StopSandbox(sandbox_id=sandbox_id):
                return await self._stop(_checked(sandbox_id))
            case DestroySandbox(sandbox_id=sandbox_id):
                await self._destroy(_checked(sandbox_id))
                return None
            case PauseSandbox(sandbox_id=sandbox_id):
                return await self._pause(_checked(sandbox_id), pause=True)
            case ResumeSandbox(sandbox_id=sandbox_id):
                return await self._pause(_checked(sandbox_id), pause=False)
            case ResizeSandbox():
                return await self._resize(cmd)
            case TakeSnapshot(sandbox_id=sandbox_id, snapshot_id=snapshot_id):
                return await self._snapshot(_checked(sandbox_id), snapshot_id)
            case SealSnapshot(snapshot_id=snapshot_id, signed=signed):
                store = self._store(self._snapshots)
                async with self._lifecycle.hold(_snapshot_key(snapshot_id)):
                    directory = store.existing(snapshot_id)
                    await asyncio.to_thread(snapshot_store.seal, snapshot_id, directory, signed)
                return None
            case DeleteSnapshot(snapshot_id=snapshot_id):
                store = self._store(self._snapshots)
                async with self._lifecycle.hold(_snapshot_key(snapshot_id)):
                    await asyncio.to_thread(store.delete, snapshot_id)
                return None
            case RestoreSnapshot(sandbox_id=sandbox_id, snapshot_id=snapshot_id, verify_keys=keys):
                return await self._restore(_checked(sandbox_id), snapshot_id, keys)
            case CloneSnapshot(snapshot_id=snapshot_id, spec=spec, verify_keys=keys):
                return await self._clone(snapshot_id, spec, keys)
            case ArchiveSandbox(sandbox_id=sandbox_id):
                return await self._archive(_checked(sandbox_id))
            case UnarchiveSandbox(sandbox_id=sandbox_id):
                sandbox_id = _checked(sandbox_id)
                async with self._lifecycle.hold(sandbox_id):
                    return await self._unarchive(sandbox_id)
            case InspectSandbox(sandbox_id=sandbox_id):
                sandbox_id = _checked(sandbox_id)
                async with self._lifecycle.hold(sandbox_id):
                    return self._get(sandbox_id)
            case ListSandboxes():
                return self._runtime.list()
            case GetHealth():
                return HostHealth(
                    status="ok", runtime=self._runtime.kind, sandboxes=len(self._runtime.list())
                )

    async def close(self) -> None:
        """Close every agent connection. Sandboxes are left running."""
        for sandbox_id in list(self._agents):
            await self._drop_agent(sandbox_id)

    async def _create(self, spec: SandboxSpec) -> SandboxInfo:
        async with self._lifecycle.hold(spec.id):
            if self._find(spec.id) is not None:
                raise SandboxConflict(f"sandbox {spec.id} already exists")
            info = await self._runtime.create(spec)
            await self._services_ready(spec)
            return info

    async def _services_ready(self, spec: SandboxSpec) -> None:
        """Wait (bounded, never failing) for the template's services to listen."""
        ports = await asyncio.to_thread(self.service_ports, spec.template)
        if ports:
            # imported here: hosts.ports (which it uses) imports this module
            from hosts.service_ready import wait_ready

            await wait_ready(spec.id, self._runtime.port_endpoint(spec.id), ports)

    async def _start(self, spec: SandboxSpec) -> SandboxInfo:
        async with self._lifecycle.hold(spec.id):
            info = self._get(spec.id)
            if info.state == "running":
                return info
            if info.state == "archived":
                await self._unarchive(spec.id)
                info = self._get(spec.id)
            if info.state != "stopped":
                raise SandboxConflict(f"sandbox {spec.id} is {info.state}; only a stopped one starts")
            info = await self._runtime.start(spec)
            await self._services_ready(spec)
            return info

    async def _stop(self, sandbox_id: str) -> SandboxInfo:
        async with self._lifecycle.hold(sandbox_id):
            info = self._get(sandbox_id)
            if info.state == "stopped":
                return info
            info = await self._runtime.stop(sandbox_id)
            await self._drop_agent(sandbox_id)
            return info

    async def _destroy(self, sandbox_id: str) -> None:
        async with self._lifecycle.hold(sandbox_id):
            await self._runtime.destroy(sandbox_id)
            await self._drop_agent(sandbox_id)
            if self._archives is not None:
                await asyncio.to_thread(self._archives.delete, sandbox_id)

    async def _pause(self, sandbox_id: str, *, pause: bool) -> SandboxInfo:
        async with self._lifecycle.hold(sandbox_id):
            info = self._get(sandbox_id)
            if info.state not in ("running", "paused"):
                raise SandboxConflict(f"sandbox {sandbox_id} is {info.state}; only a booted one pauses")
            if pause:
                return await self._runtime.pause(sandbox_id)
            return await self._runtime.resume(sandbox_id)

    async def _resize(self, cmd: ResizeSandbox) -> SandboxInfo:
        sandbox_id = _checked(cmd.sandbox_id)
        async with self._lifecycle.hold(sandbox_id):
            info = self._get(sandbox_id)
            spec = self._runtime.spec(sandbox_id)
            cpu = spec.cpu if cmd.cpu is None else cmd.cpu
            ram_mb = spec.ram_mb if cmd.ram_mb is None else cmd.ram_mb
            disk_gb = spec.disk_gb if cmd.disk_gb is None else cmd.disk_gb
            if cpu < 1 or ram_mb < 1 or disk_gb < 1:
                raise InvalidRequest("cpu, ram_mb and disk_gb must be positive")
            if disk_gb < spec.disk_gb:
                raise InvalidRequest(f"a disk only grows: {spec.disk_gb} GB now, {disk_gb} GB asked")
            if info.state in ("running", "paused") and (cpu < spec.cpu or ram_mb < spec.ram_mb):
                raise SandboxConflict(
                    f"sandbox {sandbox_id} is {info.state}: CPU and memory only grow live "
                    f"(now {spec.cpu} CPU, {spec.ram_mb} MB); stop it to shrink them"
                )
            return await self._runtime.resize(sandbox_id, cpu, ram_mb, disk_gb)

    async def _snapshot(self, sandbox_id: str, snapshot_id: str) -> SnapshotTaken:
        store = self._store(self._snapshots)
        async with self._lifecycle.hold(sandbox_id), self._lifecycle.hold(_snapshot_key(snapshot_id)):
            info = self._get(sandbox_id)
            if info.state == "archived":
                raise SandboxConflict(f"sandbox {sandbox_id} is archived; unarchive it to snapshot it")
            if store.path(snapshot_id).exists():
                raise SandboxConflict(f"snapshot {snapshot_id} already exists")
            staging = await asyncio.to_thread(store.staging, snapshot_id)
            try:
                await self._runtime.snapshot(sandbox_id, staging)
                directory = await asyncio.to_thread(store.publish, snapshot_id, staging, replace=False)
            except BaseException:
                await asyncio.to_thread(store.discard, staging)
                raise
            return await asyncio.to_thread(snapshot_store.describe, snapshot_id, directory)

    async def _restore(self, sandbox_id: str, snapshot_id: str, keys: dict[str, str]) -> SandboxInfo:
        store, verify_keys = self._store(self._snapshots), _verify_keys(keys)
        async with self._lifecycle.hold(sandbox_id), self._lifecycle.hold(_snapshot_key(snapshot_id)):
            info = self._get(sandbox_id)
            if info.state == "archived":
                raise SandboxConflict(f"sandbox {sandbox_id} is archived; unarchive it first")
            directory = store.existing(snapshot_id)
            await asyncio.to_thread(
                snapshot_store.trusted_snapshot, snapshot_id, directory, verify_keys, sandbox_id
            )
            await self._drop_agent(sandbox_id)
            return await self._runtime.restore(sandbox_id, directory)

    async def _clone(self, snapshot_id: str, spec: SandboxSpec, keys: dict[str, str]) -> SandboxInfo:
        store, verify_keys = self._store(self._snapshots), _verify_keys(keys)
        if not is_sandbox_id(spec.id):
            raise InvalidRequest(f"spec.id {spec.id!r} is not 1-63 letters, digits, '-' or '_'")
        async with self._lifecycle.hold(spec.id), self._lifecycle.hold(_snapshot_key(snapshot_id)):
            if self._find(spec.id) is not None:
                raise SandboxConflict(f"sandbox {spec.id} already exists")
            directory = store.existing(snapshot_id)
            await asyncio.to_thread(
                snapshot_store.trusted_snapshot, snapshot_id, directory, verify_keys, None
            )
            info = await self._runtime.create(spec, directory)
            await self._services_ready(spec)  # a fork's agent starts the template's services anew
            return info

    async def _archive(self, sandbox_id: str) -> SandboxInfo:
        """Export the disk as a portable archive (``runtime.export``: tar + zstd, whatever kind
        the runtime's snapshots are), publish it, then drop the local disk: a crash before the
        publish leaves the disk alone (the staging directory is swept), a crash after it leaves a
        complete archive whichever way the runtime's step went (see ``recover``)."""
        store = self._store(self._archives)
        async with self._lifecycle.hold(sandbox_id):
            info = self._get(sandbox_id)
            if info.state == "archived":
                return info
            if info.state != "stopped":
                raise SandboxConflict(f"sandbox {sandbox_id} is {info.state}; only a stopped one is archived")
            staging = await asyncio.to_thread(store.staging, sandbox_id)
            try:
                await self._runtime.export(sandbox_id, staging)
                await asyncio.to_thread(store.publish, sandbox_id, staging, replace=True)
            except BaseException:
                await asyncio.to_thread(store.discard, staging)
                raise
            return await self._runtime.archive(sandbox_id)

    async def _unarchive(self, sandbox_id: str) -> SandboxInfo:
        """Put the disk back, then drop the archive. The caller holds the sandbox's lock."""
        store = self._store(self._archives)
        info = self._get(sandbox_id)
        if info.state != "archived":
            if info.state == "stopped":
                return info
            raise SandboxConflict(f"sandbox {sandbox_id} is {info.state}, not archived")
        directory = store.existing(sandbox_id)
        info = await self._runtime.unarchive(sandbox_id, directory)
        await asyncio.to_thread(store.delete, sandbox_id)
        return info

    @staticmethod
    def _store(store: EntryStore | None) -> EntryStore:
        if store is None:
            raise RuntimeFailure("this hostd has no snapshot or archive store configured")
        return store

    async def _exec(self, sandbox_id: str, request: ExecRequest) -> ExecResult:
        result = await self._on_agent(
            sandbox_id,
            lambda client: client.exec(
                request.cmd, env=request.env, cwd=request.cwd, timeout_ms=request.timeout_ms
            ),
        )
        return ExecResult(
            stdout=result.stdout,
            stderr=result.stderr,
            exit_code=result.exit_code,
            duration_ms=result.duration_ms,
            timed_out=result.timed_out,
            truncated=result.truncated,
        )

    async def _on_agent(self, sandbox_id: str, request: Callable[[AgentClient], Awaitable[_R]]) -> _R:
        """Send ``request`` on the running sandbox's agent connection and return its answer."""
        self._require_running(sandbox_id)
        client = await self._agent(sandbox_id)
        try:
            return await request(client)
        except AgentUnavailable:
            # The request was sent and its connection failed, so whether it ran is unknown:
            # it is not retried (the next request reconnects). If a stop or destroy killed
            # the sandbox meanwhile, that is the error to report.
            await self._drop_agent(sandbox_id, client)
            await self._settled(sandbox_id)
            self._require_running(sandbox_id)
            raise

    async def _open_stream(
        self, sandbox_id: str, opener: guest.StreamOpener
    ) -> tuple[AgentStream, guest.StreamReply]:
        """A connection of its own for one stream; nothing is pooled (see ``AgentStream``)."""
        self._require_running(sandbox_id)
        try:
            return await AgentStream.open(self._runtime.agent_socket(sandbox_id), opener)
        except AgentUnavailable:
            await self._settled(sandbox_id)
            self._require_running(sandbox_id)
            raise

    async def _agent(self, sandbox_id: str) -> AgentClient:
        """The sandbox's pooled agent connection, reconnecting if it was lost (the agent
        restarted, or a previous exec failed on it)."""
        client = self._agents.get(sandbox_id)
        if client is not None and not client.closed:
            return client
        async with self._connecting.hold(sandbox_id):
            client = self._agents.get(sandbox_id)
            if client is not None and not client.closed:
                return client
            try:
                client = await AgentClient.open(self._runtime.agent_socket(sandbox_id))
            except AgentUnavailable:
                await self._settled(sandbox_id)
                self._require_running(sandbox_id)
                raise
            self._agents[sandbox_id] = client
            return client

    async def _drop_agent(self, sandbox_id: str, client: AgentClient | None = None) -> None:
        """Forget and close the sandbox's connection (only if it is still ``client``, if given)."""
        current = self._agents.get(sandbox_id)
        if current is None or (client is not None and current is not client):
            return
        del self._agents[sandbox_id]
        await current.close()

    async def _settled(self, sandbox_id: str) -> None:
        """Wait until no lifecycle command is running on the sandbox. A stop or destroy kills
        the agent before the runtime records the new state, so an exec that lost its agent
        waits for that to finish before it reports which state the sandbox is in."""
        async with self._lifecycle.hold(sandbox_id):
            pass

    def _find(self, sandbox_id: str) -> SandboxInfo | None:
        return next((info for info in self._runtime.list() if info.id == sandbox_id), None)

    def _get(self, sandbox_id: str) -> SandboxInfo:
        info = self._find(sandbox_id)
        if info is None:
            raise SandboxNotFound(f"no sandbox {sandbox_id} on this host")
        return info

    def _require_running(self, sandbox_id: str) -> None:
        state = self._get(sandbox_id).state
        if state != "running":
            raise SandboxConflict(f"sandbox {sandbox_id} is {state}, not running")


def _no_services(_template: str) -> tuple[int, ...]:
    return ()


def _snapshot_key(snapshot_id: str) -> str:
    """The lock key of a snapshot: ``:`` keeps it apart from every sandbox id."""
    return f"snapshot:{snapshot_id}"


def _verify_keys(keys: dict[str, str]) -> dict[str, VerifyKey]:
    if not keys:
        raise InvalidRequest("verify_keys is empty: no snapshot could be trusted")
    try:
        return verify_keys_from_wire(keys)
    except ValueError as exc:
        raise InvalidRequest(f"verify_keys: {exc}") from None


def _checked(sandbox_id: str) -> str:
    """``sandbox_id``, if it can name a sandbox. Anything else names nothing on this host, and
    must never reach the runtime, which builds paths from ids."""
    if not is_sandbox_id(sandbox_id):
        raise SandboxNotFound(f"{sandbox_id!r} is not a sandbox id")
    return sandbox_id


class _KeyedLocks:
    """One ``asyncio.Lock`` per key, created on demand and dropped once nobody holds or awaits
    it, so ids of destroyed sandboxes do not accumulate. Waiters are served in FIFO order."""

    def __init__(self) -> None:
        self._slots: dict[str, _Slot] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        slot = self._slots.get(key) or self._slots.setdefault(key, _Slot())
        slot.users += 1
        try:
            async with slot.lock:
                yield
        finally:
            slot.users -= 1
            if slot.users == 0:
                del self._slots[key]


class _Slot:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0
