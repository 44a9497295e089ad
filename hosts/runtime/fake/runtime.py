"""The fake runtime: ``SandboxRuntime`` without root, for tests. IT ISOLATES NOTHING.

A "sandbox" here is a directory under the state dir (see ``_dir``) and the real guest agent
(``python -S -m guest.agent --init``) running as hostd's own user, with its working
directory and HOME in that directory's ``disk/``. No namespace, cgroup, network or user
separation exists: a command can read and write anything hostd's user can. It exists so the
controller, hostd's HTTP API and the core get a fast test tier that needs neither root nor a
template build, and so the backend contract suite (``tests/hosts/runtime/test_contract.py``)
can check its own expectations against something cheap. hostd runs it only when
``DNAH_HOST_RUNTIME=fake`` is set; the default is the real runtime.

Because the agent and everything it speaks are real, exec, files (relative paths), PTYs,
sessions and transfers behave as they do in a real sandbox; only absolute paths differ (they
name the host's files). The rest is mimicked:

* pause/resume: SIGSTOP/SIGCONT of the agent's whole process tree (``_procs``), a real
  freeze, so a paused sandbox's processes make no progress (a flag that only refused agent
  calls would let its background jobs run on, which a contract test would catch);
* stop/start: kill the tree, keep the directory; start the agent again on it;
* snapshot and export: ``disk/`` as an ``archive`` (``hosts/runtime/manifest.py``) (frozen
  meanwhile when running; the fake is not on btrfs, so it has no ``subvolume`` snapshots),
  which the snapshot store, restore, clone and unarchive handle like the OCI runtime's;
* resize: recorded in ``spec.json``, enforced nowhere;
* recover: agents whose recorded pid (and start time) still runs are adopted;
* destroy: kill the tree, remove the directory.

A create registers the removal of each thing it builds in an undo stack (``_undo``) before
building it, so a failure at any step leaves nothing behind. Lifecycle operations hold the
sandbox's lock and are shielded from cancellation, as in the namespace runtime.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import functools
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import msgspec
import structlog

from contracts.host import SandboxInfo, SandboxSpec
from hosts.agent_client import wait_ready
from hosts.errors import (
    AgentUnavailable,
    HostError,
    RuntimeFailure,
    SandboxConflict,
    SandboxNotFound,
    TemplateNotFound,
)
from hosts.runtime import _snapshot
from hosts.runtime._layout import DiskBase
from hosts.runtime._mounts import remove_tree
from hosts.runtime._undo import Undo
from hosts.runtime.base import Capabilities, PortEndpoint
from hosts.runtime.fake import _procs
from hosts.runtime.fake._dir import ARCHIVED, PAUSED, FakeDir
from hosts.runtime.fake._procs import AgentRecord
from hosts.runtime.manifest import Manifest
from hosts.runtime.manifest import read as read_manifest

if TYPE_CHECKING:
    from hosts.templates import Template

log = structlog.get_logger("hosts.runtime")

T = TypeVar("T")

_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")


FILESYSTEM_ONLY = Capabilities(memory_snapshot=False, live_resize=True, fork=False)
"""What the fake runtime can do, as the OCI one: disk-only snapshots and forks, live resize."""


@dataclass(frozen=True, kw_only=True)
class FakeConfig:
    state_dir: Path
    """Sandboxes live in ``state_dir/sandboxes/<id>/``."""
    guest_dir: Path
    """The agent's package (the repo's ``guest/``); its parent goes on the agent's PYTHONPATH."""
    templates: dict[str, str] = field(default_factory=lambda: {"dnah-base": "fake"})
    """The template names it accepts, each with the content hash its disks record."""
    boot_timeout: float = 20.0
    capabilities: Capabilities = FILESYSTEM_ONLY
    """What it declares (at registration, to the core). Its snapshots never hold memory and
    its resize is always live, whatever this says: tests that need a host declaring otherwise
    (the core's refusals) change it here."""


@dataclass(eq=False)
class _Sandbox:
    spec: SandboxSpec
    base: DiskBase
    agent: AgentRecord | None = None
    """The running agent; None when stopped."""
    paused: bool = False
    archived: bool = False
    process: subprocess.Popen[bytes] | None = None
    """The agent, when this instance started it (to reap it); None when adopted."""


class FakeRuntime:
    """``SandboxRuntime`` as plain processes and directories (see the module doc)."""

    kind = "fake"

    def __init__(self, config: FakeConfig) -> None:
        self.config = config
        self.capabilities = config.capabilities
        self._sandboxes: dict[str, _Sandbox] = {}
        self._locks: collections.defaultdict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)
        self._background: set[asyncio.Task[None]] = set()

    # inventory -------------------------------------------------------------------------------

    def list(self) -> list[SandboxInfo]:
        return [self._info(sb) for _, sb in sorted(self._sandboxes.items())]

    def spec(self, sandbox_id: str) -> SandboxSpec:
        return self._get(sandbox_id).spec

    def agent_socket(self, sandbox_id: str) -> Path:
        return self._dir(sandbox_id).agent_socket

    def port_endpoint(self, sandbox_id: str) -> PortEndpoint:
        """hostd's own loopback: the fake's sandboxes are host processes in hostd's netns, so
        their servers listen where hostd is (one more thing the fake does not isolate)."""
        sandbox = self._booted(sandbox_id)
        if sandbox.paused:
            raise SandboxConflict(f"sandbox {sandbox_id} is paused, not running")
        return PortEndpoint(netns=None, address="127.0.0.1")

    async def disk_used_bytes(self, sandbox_id: str) -> int:
        """Bytes allocated under ``disk/`` (``du``); 0 for an archived sandbox."""
        self._get(sandbox_id)
        return await _blocking("measure disk", _allocated_bytes, self._dir(sandbox_id).disk)

    def ready_templates(self) -> builtins.list[str]:
        """The templates it creates sandboxes from: all it is configured with, none built."""
        return sorted(self.config.templates)

    async def remove_host_setup(self) -> None:
        """Nothing host-wide exists to remove; refuses, as the real runtimes do, while
        sandboxes exist."""
        if self._sandboxes:
            raise SandboxConflict(f"{len(self._sandboxes)} sandboxes still exist")

    async def recover(self) -> builtins.list[SandboxInfo]:
        """Adopt the sandboxes whose agents still run; the others are stopped, and half-made
        directories are removed."""
        log.warning("the fake runtime isolates nothing: for tests only", state_dir=str(self.config.state_dir))
        found = await _blocking("recover", self._scan)
        for sandbox in found:
            self._sandboxes[sandbox.spec.id] = sandbox
            if sandbox.agent is not None:
                self._watch(sandbox)
        return self.list()

    # lifecycle -------------------------------------------------------------------------------

    async def prepare(self, template: Template) -> None:
        """Nothing to prepare: a fake sandbox is a directory."""

    async def create(self, spec: SandboxSpec, snapshot: Path | None = None) -> SandboxInfo:
        _check_spec(spec)
        return await asyncio.shield(self._create(spec, snapshot))

    async def start(self, spec: SandboxSpec) -> SandboxInfo:
        _check_spec(spec)
        return await asyncio.shield(self._start(spec))

    async def stop(self, sandbox_id: str) -> SandboxInfo:
        return await asyncio.shield(self._stop(sandbox_id))

    async def destroy(self, sandbox_id: str) -> None:
        _check_id(sandbox_id)
        await asyncio.shield(self._destroy(sandbox_id))

    async def pause(self, sandbox_id: str) -> SandboxInfo:
        async with self._locks[sandbox_id]:
            sandbox = self._booted(sandbox_id)
            if not sandbox.paused:
                await _blocking("mark paused", self._dir(sandbox_id).mark, PAUSED, True)
                await _blocking("freeze", _procs.freeze, _pid(sandbox))
                sandbox.paused = True
            return self._info(sandbox)

    async def resume(self, sandbox_id: str) -> SandboxInfo:
        async with self._locks[sandbox_id]:
            sandbox = self._booted(sandbox_id)
            if sandbox.paused:
                await _blocking("thaw", _procs.thaw, _pid(sandbox))
                await _blocking("unmark paused", self._dir(sandbox_id).mark, PAUSED, False)
                sandbox.paused = False
            return self._info(sandbox)

    async def snapshot(self, sandbox_id: str, directory: Path) -> None:
        """Archive ``disk/`` into ``directory``; a running sandbox is frozen meanwhile. The
        fake is not on btrfs: its snapshots are ``archive`` entries, like its exports."""
        await self.export(sandbox_id, directory)

    async def export(self, sandbox_id: str, directory: Path) -> None:
        """Archive ``disk/`` into ``directory``; a running sandbox is frozen meanwhile."""
        async with self._locks[sandbox_id]:
            sandbox = self._get(sandbox_id)
            if sandbox.archived:
                raise SandboxConflict(f"sandbox {sandbox_id} is archived; unarchive it first")
            freeze = sandbox.agent is not None and not sandbox.paused
            if freeze:
                await _blocking("freeze", _procs.freeze, _pid(sandbox))
            try:
                disk = self._dir(sandbox_id).disk
                await _blocking(
                    "snapshot", _snapshot.write, disk, directory, sandbox_id, sandbox.base, self.kind
                )
            finally:
                if freeze:
                    await _blocking("thaw", _procs.thaw, _pid(sandbox))

    async def resize(self, sandbox_id: str, cpu: int, ram_mb: int, disk_gb: int) -> SandboxInfo:
        """Record the new limits (nothing enforces them here)."""
        if cpu < 1 or ram_mb < 1 or disk_gb < 1:
            raise RuntimeFailure("a sandbox needs at least 1 CPU, 1 MB of memory and 1 GB of disk")
        async with self._locks[sandbox_id]:
            sandbox = self._get(sandbox_id)
            spec = msgspec.structs.replace(sandbox.spec, cpu=cpu, ram_mb=ram_mb, disk_gb=disk_gb)
            await _blocking("write spec", self._dir(sandbox_id).write_spec, spec)
            sandbox.spec = spec
            return self._info(sandbox)

    async def archive(self, sandbox_id: str) -> SandboxInfo:
        return await asyncio.shield(self._archive(sandbox_id))

    async def unarchive(self, sandbox_id: str, directory: Path) -> SandboxInfo:
        return await asyncio.shield(self._unarchive(sandbox_id, directory))

    async def restore(self, sandbox_id: str, directory: Path) -> SandboxInfo:
        return await asyncio.shield(self._restore(sandbox_id, directory))

    # implementation --------------------------------------------------------------------------

    async def _create(self, spec: SandboxSpec, snapshot: Path | None) -> SandboxInfo:
        manifest = None if snapshot is None else await _blocking("read snapshot", _read_archive, snapshot)
        async with self._locks[spec.id]:
            if spec.id in self._sandboxes:
                raise SandboxConflict(f"sandbox {spec.id} already exists")
            if manifest is not None and manifest.template != spec.template:
                raise SandboxConflict(f"the snapshot is a {manifest.template} disk, not {spec.template}")
            base = self._base(spec.template, None if manifest is None else manifest.content_hash)
            sandbox = _Sandbox(spec, base)
            directory = self._dir(spec.id)
            undo = Undo(spec.id)
            try:
                await _blocking("claim sandbox dir", directory.claim)
                undo.push("remove sandbox dir", functools.partial(remove_tree, directory.path))
                await _blocking("lay out disk", directory.populate, spec, base)
                if snapshot is not None:
                    fill = functools.partial(_snapshot.extract, snapshot)
                    await _blocking("fill disk from snapshot", directory.replace_disk, fill)
                await self._boot(sandbox, undo)
            except BaseException:
                await undo.unwind()
                raise
            self._sandboxes[spec.id] = sandbox
            self._watch(sandbox)
            log.info("sandbox created", sandbox_id=spec.id, pid=_pid(sandbox), runtime=self.kind)
            return self._info(sandbox)

    async def _start(self, spec: SandboxSpec) -> SandboxInfo:
        async with self._locks[spec.id]:
            sandbox = self._get(spec.id)
            if sandbox.agent is not None:
                raise SandboxConflict(f"sandbox {spec.id} is already booted")
            if sandbox.archived:
                raise SandboxConflict(f"sandbox {spec.id} is archived; unarchive it first")
            if spec.template != sandbox.base.template:
                raise SandboxConflict(f"sandbox {spec.id}'s disk is a {sandbox.base.template} disk")
            await _blocking("write spec", self._dir(spec.id).write_spec, spec)
            sandbox.spec = spec
            await self._boot_stopped(sandbox)
            return self._info(sandbox)

    async def _stop(self, sandbox_id: str) -> SandboxInfo:
        async with self._locks[sandbox_id]:
            sandbox = self._get(sandbox_id)
            if sandbox.agent is not None:
                await self._halt(sandbox)
            return self._info(sandbox)

    async def _destroy(self, sandbox_id: str) -> None:
        async with self._locks[sandbox_id]:
            sandbox = self._sandboxes.get(sandbox_id)
            if sandbox is not None and sandbox.agent is not None:
                await self._halt(sandbox)
            # Also for a sandbox we do not know: what a crash left is removed by name.
            directory = self._dir(sandbox_id)
            if (record := await _blocking("read agent", directory.read_agent)) is not None:
                await _blocking("kill agent", _procs.kill_tree, record)
            await _blocking("remove sandbox dir", remove_tree, directory.path)
            self._sandboxes.pop(sandbox_id, None)
        self._locks.pop(sandbox_id, None)

    async def _archive(self, sandbox_id: str) -> SandboxInfo:
        async with self._locks[sandbox_id]:
            sandbox = self._get(sandbox_id)
            if sandbox.agent is not None:
                raise SandboxConflict(f"sandbox {sandbox_id} is booted; only a stopped one is archived")
            if not sandbox.archived:
                directory = self._dir(sandbox_id)
                # Marker first: a crash from here on leaves an archived sandbox, never a
                # half-removed disk that boots.
                await _blocking("mark archived", directory.mark, ARCHIVED, True)
                sandbox.archived = True
                await _blocking("drop disk", directory.drop_disk)
            return self._info(sandbox)

    async def _unarchive(self, sandbox_id: str, source: Path) -> SandboxInfo:
        manifest = await _blocking("read archive", _read_archive, source)
        async with self._locks[sandbox_id]:
            sandbox = self._get(sandbox_id)
            if not sandbox.archived:
                raise SandboxConflict(f"sandbox {sandbox_id} is not archived")
            base = DiskBase(template=manifest.template, content_hash=manifest.content_hash)
            if base != sandbox.base or manifest.sandbox_id != sandbox_id:
                raise SandboxConflict(f"the archive in {source} is not sandbox {sandbox_id}'s disk")
            directory = self._dir(sandbox_id)
            fill = functools.partial(_snapshot.extract, source)
            await _blocking("restore disk", directory.replace_disk, fill)
            await _blocking("unmark archived", directory.mark, ARCHIVED, False)
            sandbox.archived = False
            return self._info(sandbox)

    async def _restore(self, sandbox_id: str, source: Path) -> SandboxInfo:
        manifest = await _blocking("read snapshot", _read_archive, source)
        async with self._locks[sandbox_id]:
            sandbox = self._get(sandbox_id)
            if sandbox.archived:
                raise SandboxConflict(f"sandbox {sandbox_id} is archived; unarchive it first")
            base = DiskBase(template=manifest.template, content_hash=manifest.content_hash)
            if base != sandbox.base:
                raise SandboxConflict(f"the snapshot in {source} is not of sandbox {sandbox_id}'s disk base")
            if sandbox.agent is not None:
                await self._halt(sandbox)
            fill = functools.partial(_snapshot.extract, source)
            await _blocking("replace disk", self._dir(sandbox_id).replace_disk, fill)
            await self._boot_stopped(sandbox)
            return self._info(sandbox)

    async def _boot_stopped(self, sandbox: _Sandbox) -> None:
        undo = Undo(sandbox.spec.id)
        try:
            await self._boot(sandbox, undo)
        except BaseException:
            await undo.unwind()
            raise
        self._watch(sandbox)

    async def _boot(self, sandbox: _Sandbox, undo: Undo) -> None:
        """Start the agent and wait until it answers; each step's removal goes in ``undo``."""
        directory = self._dir(sandbox.spec.id)
        undo.push("clear boot record", directory.clear_boot)
        process = await _blocking(
            "start agent",
            spawn_agent,
            self.config.guest_dir,
            directory.agent_socket,
            directory.disk,
            sandbox.spec.env,
            directory.console,
        )
        undo.push("kill agent", functools.partial(_kill_child, process))
        ticks = _procs.start_ticks(process.pid)
        record = AgentRecord(pid=process.pid, start_ticks=ticks if ticks is not None else -1)
        undo.push("kill agent tree", functools.partial(_procs.kill_tree, record))
        await _blocking("write agent record", directory.write_agent, record)
        await self._wait_for_agent(process, directory)
        sandbox.agent, sandbox.process, sandbox.paused = record, process, False

    async def _wait_for_agent(self, process: subprocess.Popen[bytes], directory: FakeDir) -> None:
        """Return once the agent answers a ping; fail fast if it exits first."""
        ready = asyncio.ensure_future(wait_ready(directory.agent_socket, timeout=self.config.boot_timeout))
        while not ready.done():
            if process.poll() is not None:
                ready.cancel()
                tail = await asyncio.to_thread(directory.console_tail)
                raise RuntimeFailure(f"agent exited while booting (status {process.returncode}): {tail}")
            await asyncio.wait({ready}, timeout=0.02)
        try:
            client = ready.result()
        except AgentUnavailable as exc:
            tail = await asyncio.to_thread(directory.console_tail)
            raise RuntimeFailure(f"sandbox agent did not come up: {exc}; console: {tail}") from exc
        await client.close()

    async def _halt(self, sandbox: _Sandbox) -> None:
        """Kill the agent's tree and forget the boot; the disk stays."""
        record, process = sandbox.agent, sandbox.process
        # Clearing ``agent`` first tells the exit watcher this exit is intended.
        sandbox.agent, sandbox.process = None, None
        if record is not None:
            await _blocking("kill agent", _procs.kill_tree, record)
        if process is not None:
            await asyncio.to_thread(process.wait)
        await _blocking("clear boot record", self._dir(sandbox.spec.id).clear_boot)
        sandbox.paused = False

    def _watch(self, sandbox: _Sandbox) -> None:
        """Notice the agent dying on its own (a pidfd becomes readable at its exit)."""
        record = sandbox.agent
        if record is None:
            return
        try:
            pidfd = os.pidfd_open(record.pid)
        except ProcessLookupError:
            pidfd = None
        if pidfd is None or not _procs.alive(record):
            if pidfd is not None:
                os.close(pidfd)
            self._spawn_reap(sandbox, record)
            return
        loop = asyncio.get_running_loop()

        def exited() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            self._spawn_reap(sandbox, record)

        loop.add_reader(pidfd, exited)

    def _spawn_reap(self, sandbox: _Sandbox, record: AgentRecord) -> None:
        task = asyncio.ensure_future(self._reap_dead(sandbox, record))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _reap_dead(self, sandbox: _Sandbox, record: AgentRecord) -> None:
        async with self._locks[sandbox.spec.id]:
            if sandbox.agent is not record:
                return  # stopped on purpose, or booted again since
            log.warning("sandbox died", sandbox_id=sandbox.spec.id)
            await self._halt(sandbox)

    def _scan(self) -> builtins.list[_Sandbox]:
        root = self.config.state_dir / "sandboxes"
        root.mkdir(parents=True, exist_ok=True)
        found = []
        for path in sorted(root.iterdir()):
            directory = FakeDir(path)
            record = directory.read_agent()
            try:
                sandbox = _Sandbox(directory.read_spec(), directory.read_base())
            except (FileNotFoundError, msgspec.DecodeError):
                log.warning("removing an incomplete sandbox directory", sandbox_id=path.name)
                if record is not None:
                    _procs.kill_tree(record)
                remove_tree(path)
                continue
            if record is not None and _procs.alive(record):
                sandbox.agent, sandbox.paused = record, directory.marked(PAUSED)
            else:
                directory.clear_boot()
                directory.repair()
            if directory.marked(ARCHIVED):
                sandbox.archived = True
                directory.drop_disk()  # finish an archive, or undo an unfinished unarchive
            found.append(sandbox)
        return found

    def _base(self, template: str, content_hash: str | None) -> DiskBase:
        known = self.config.templates.get(template)
        if known is None or (content_hash is not None and content_hash != known):
            raise TemplateNotFound(f"template {template} is not available on this host")
        return DiskBase(template=template, content_hash=known)

    def _dir(self, sandbox_id: str) -> FakeDir:
        _check_id(sandbox_id)
        return FakeDir(self.config.state_dir / "sandboxes" / sandbox_id)

    def _get(self, sandbox_id: str) -> _Sandbox:
        _check_id(sandbox_id)
        sandbox = self._sandboxes.get(sandbox_id)
        if sandbox is None:
            raise SandboxNotFound(f"no sandbox {sandbox_id} on this host")
        return sandbox

    def _booted(self, sandbox_id: str) -> _Sandbox:
        sandbox = self._get(sandbox_id)
        if sandbox.agent is None:
            raise SandboxConflict(f"sandbox {sandbox_id} is stopped")
        return sandbox

    def _info(self, sandbox: _Sandbox) -> SandboxInfo:
        if sandbox.archived:
            return SandboxInfo(id=sandbox.spec.id, state="archived")
        if sandbox.agent is None:
            return SandboxInfo(id=sandbox.spec.id, state="stopped")
        state: Literal["running", "paused"] = "paused" if sandbox.paused else "running"
        return SandboxInfo(id=sandbox.spec.id, state=state, ip="127.0.0.1")


def spawn_agent(
    guest_dir: Path, socket_path: Path, home: Path, env: dict[str, str], console: Path
) -> subprocess.Popen[bytes]:
    """Start the sandbox's agent (a module-level name, so tests can make it fail)."""
    return _procs.spawn_agent(guest_dir, socket_path, home, env, console)


def _kill_child(process: subprocess.Popen[bytes]) -> None:
    """Kill and reap an agent this instance started (its tree is killed separately)."""
    if process.poll() is None:
        process.kill()
    process.wait()


def _pid(sandbox: _Sandbox) -> int:
    assert sandbox.agent is not None
    return sandbox.agent.pid


def _allocated_bytes(path: Path) -> int:
    if not path.exists():
        return 0
    out = subprocess.run(
        ["du", "-s", "--block-size=1", str(path)], check=True, capture_output=True, text=True
    )
    return int(out.stdout.split()[0])


async def _blocking(what: str, fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking step in a thread, turning OS-level failures into ``RuntimeFailure``."""
    try:
        return await asyncio.to_thread(fn, *args)
    except HostError:
        raise
    except (OSError, ValueError, TimeoutError, subprocess.CalledProcessError) as exc:
        raise RuntimeFailure(f"{what}: {exc}") from exc


def _check_id(sandbox_id: str) -> None:
    if not _ID_RE.fullmatch(sandbox_id):
        raise SandboxNotFound(f"no sandbox {sandbox_id!r}")


def _check_spec(spec: SandboxSpec) -> None:
    if not _ID_RE.fullmatch(spec.id):
        raise RuntimeFailure(f"sandbox id {spec.id!r} must be 1-63 letters, digits, '-' or '_'")
    for name, value in spec.env.items():
        if not name or "=" in name or "\0" in name or "\0" in value:
            raise RuntimeFailure(f"invalid environment variable {name!r}")
    if spec.cpu < 1 or spec.ram_mb < 1:
        raise RuntimeFailure("a sandbox needs at least 1 CPU and 1 MB of memory")


def _read_archive(directory: Path) -> Manifest:
    """A verified snapshot or archive of the one kind this runtime makes and uses."""
    return read_manifest(directory, ["archive"])
