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
sent. Streams (file transfers, terminals: ``OpenStream``) get a connection each, owned by
the caller. An exec or agent call whose connection fails after it was sent is never retried, since
the command may already have run; it fails with ``AgentUnavailable`` and the next request
reconnects.

No transport lives here: front ends (HTTP in ``hosts/app.py``) translate to and from commands.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar, overload

import structlog

from contracts import guest
from contracts.host import DiskUsage, ExecRequest, ExecResult, HostHealth, SandboxInfo, SandboxSpec
from hosts.agent_client import AgentClient
from hosts.agent_stream import AgentStream
from hosts.commands import (
    AgentCall,
    Command,
    CreateSandbox,
    DestroySandbox,
    ExecInSandbox,
    GetDiskUsage,
    GetHealth,
    ListSandboxes,
    OpenStream,
    StartSandbox,
    StopSandbox,
    is_sandbox_id,
)
from hosts.errors import AgentUnavailable, SandboxConflict, SandboxNotFound
from hosts.runtime.base import SandboxRuntime

log = structlog.get_logger("hosts.controller")

_R = TypeVar("_R")


class HostController:
    """Runs commands on one host. Create one per runtime; call ``close`` at shutdown."""

    def __init__(self, runtime: SandboxRuntime) -> None:
        self._runtime = runtime
        self._lifecycle = _KeyedLocks()
        self._connecting = _KeyedLocks()
        self._agents: dict[str, AgentClient] = {}

    @overload
    async def handle(self, cmd: CreateSandbox | StartSandbox | StopSandbox) -> SandboxInfo: ...
    @overload
    async def handle(self, cmd: DestroySandbox) -> None: ...
    @overload
    async def handle(self, cmd: ExecInSandbox) -> ExecResult: ...
    @overload
    async def handle(self, cmd: AgentCall) -> guest.GuestToHost: ...
    @overload
    async def handle(self, cmd: OpenStream) -> tuple[AgentStream, guest.StreamReply]: ...
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
        | DiskUsage
        | HostHealth
        | list[SandboxInfo]
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
            return await self._runtime.create(spec)

    async def _start(self, spec: SandboxSpec) -> SandboxInfo:
        async with self._lifecycle.hold(spec.id):
            info = self._get(spec.id)
            if info.state == "running":
                return info
            if info.state != "stopped":
                raise SandboxConflict(f"sandbox {spec.id} is {info.state}; only a stopped one starts")
            return await self._runtime.start(spec)

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
                client = await AgentClient.connect(self._runtime.agent_socket(sandbox_id))
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
