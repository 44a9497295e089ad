"""The OCI runtime: every sandbox is a container that runc runs, in a user namespace.

For machines without KVM. A sandbox here is

* a disk: a writable btrfs snapshot of its template's read-only subvolume in the storage pool
  (``hosts/storage``), owned by the shifted ids, capped at ``disk_gb`` by a qgroup;
* an OCI bundle (``bundle``): mount, PID, UTS, IPC, cgroup and user namespaces, root inside
  mapped to the unprivileged host uid ``uid_base``, a seccomp filter (``seccomp``), a
  capability bounding set, masked and read-only /proc and /sys paths, and a cgroup with CPU,
  memory (no swap) and pids limits, all applied by ``runc run`` (``runc``);
* a network namespace with one veth on an isolated bridge port, NAT out, no way to the host
  or other sandboxes (``_network``), which hostd prepares and runc joins by path, and a
  sysfs of it mounted on the host for the sandbox's /sys (runc cannot mount one: a user
  namespace may only mount sysfs for a network namespace it owns, and the sandbox's must be
  owned by the host so that root inside cannot reconfigure it).

The agent runs as PID 1 under ``daytona`` (uid 1000) without effective capabilities, and
``sudo`` makes root inside: see docs/runtime.md ("OCI runtime", "Trust model").

``resize`` is ``runc update`` (live) plus a new qgroup limit. ``pause`` and ``resume`` are
``runc pause``/``resume`` (the freezer cgroup). A snapshot is a read-only btrfs snapshot of
the disk, taken while a running sandbox is frozen (milliseconds), into a directory inside the
pool; restore and clone make a writable copy of it, so none of them copies data (see
``_snapshot`` and docs/runtime.md, "Snapshots on the pool"). ``export`` writes the portable
tar + zstd of the disk that archives are made of. ``archive`` drops the disk of a stopped
sandbox once the caller has a verified copy elsewhere; the sandbox stays known, reported
``archived``, until ``unarchive`` puts a disk back. Both leave a marker (``archived``,
``frozen-for-snapshot``) that ``recover`` reads, so a crash half-way is finished or rolled
back at the next start.

Concurrency: every operation on a sandbox holds that sandbox's lock; operations on different
sandboxes run concurrently, and slot allocation is thread-safe. Lifecycle operations are
shielded from cancellation, so a caller that gives up never leaves a half-built or
half-removed sandbox: the operation finishes (or unwinds) on its own.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import concurrent.futures
import contextlib
import functools
import ipaddress
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec
import structlog

from contracts.host import SandboxInfo, SandboxSpec
from hosts.agent_client import wait_ready
from hosts.errors import AgentUnavailable, HostError, RuntimeFailure, SandboxConflict, SandboxNotFound
from hosts.runtime import _snapshot
from hosts.runtime._layout import BootRecord, DiskBase, SandboxDir
from hosts.runtime._mounts import remove_tree, unmount_all
from hosts.runtime._network import Network
from hosts.runtime._undo import Undo
from hosts.runtime.base import Capabilities, PortEndpoint
from hosts.runtime.manifest import DISK, Manifest
from hosts.runtime.manifest import read as read_manifest
from hosts.runtime.oci import _bytecode, _host
from hosts.runtime.oci.bundle import AGENT_UID, Bundle, Limits
from hosts.runtime.oci.runc import Runc, Supervisor, adopt
from hosts.storage import _btrfs, _loop, overlay_upper
from hosts.storage.pool import PoolConfig, StoragePool, SubvolumeIdentity
from hosts.templates import Template, TemplateStore

log = structlog.get_logger("hosts.runtime")

T = TypeVar("T")

_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
"""Sandbox ids become hostnames, directory, cgroup and netns names: keep them plain."""
_PATH_UNSAFE = re.compile(r"[,:\\\s]")
"""Characters that would break mount options."""
_FROZEN_MARKER = "frozen-for-snapshot"
"""In a sandbox's directory while a snapshot holds it frozen."""
_ARCHIVED_MARKER = "archived"
"""In a sandbox's directory once its disk is (being) dropped for an archive."""
_NEW, _OLD = ".new", ".old"
"""Suffixes of a disk being written (restore, unarchive) and of the one it replaces."""
_GB = 2**30
_KILL_WAIT_S = 5.0
"""How long a stop waits for a SIGKILLed PID 1 to be reaped before ``runc delete --force``."""


@dataclass(frozen=True, kw_only=True)
class OciConfig:
    """Everything the runtime needs. Host-global names (bridge, nft table, netns prefix,
    cgroup parent) all derive from ``bridge`` and ``cgroup_parent``, so two instances with
    different values (``make up`` and the test suite) run side by side."""

    state_dir: Path
    """Sandboxes live in ``state_dir/sandboxes/<id>/``."""
    templates: TemplateStore
    pool: PoolConfig
    """The storage pool that holds the sandboxes' disks (opened at the first boot or recover)."""
    guest_dir: Path
    """The agent's package (the repo's ``guest/``), bound read-only at /opt/dnah/guest."""
    bridge: str = "dnah0"
    subnet: ipaddress.IPv4Network = field(default_factory=lambda: ipaddress.IPv4Network("10.213.0.0/16"))
    cgroup_parent: str = "dnah"
    egress: bool = True
    """Whether sandboxes reach networks beyond the host (through NAT); see ``Network``."""
    resolv_conf: Path = Path("/etc/resolv.conf")
    trust_bundle: Callable[[SandboxSpec], Path | None] | None = None
    """The CA bundle to bind over a sandbox's system one, if any (hostd's egress service gives
    sandboxes with secrets one holding their egress CA: docs/network.md "Secrets")."""
    uid_base: int = 1_000_000
    """Host uid/gid of root inside every sandbox; sandbox ids 0..65535 map from here on."""
    pids_max: int = 512
    runc: str = "runc"
    boot_timeout: float = 30.0
    """Seconds from spawn to the agent's first pong before a boot counts as failed."""

    def __post_init__(self) -> None:
        for path in (self.state_dir, self.guest_dir, self.resolv_conf):
            if not path.is_absolute() or _PATH_UNSAFE.search(str(path)):
                raise ValueError(f"{path} must be absolute, without commas, colons or spaces")
        if self.subnet.prefixlen > 30:
            raise ValueError(f"subnet {self.subnet} leaves no room for sandboxes")


@dataclass(eq=False)
class _Sandbox:
    spec: SandboxSpec
    base: DiskBase
    slot: int | None = None
    """The network slot while booted; None when stopped."""
    paused: bool = False
    archived: bool = False
    """The disk was archived away (``archive``); it must be unarchived before it boots."""
    supervisor: Supervisor | None = None
    """The process whose exit means the sandbox died (see ``Supervisor``); None when stopped."""


class OciRuntime:
    """``SandboxRuntime`` on runc, btrfs and Linux namespaces (see the module doc)."""

    kind = "oci"
    capabilities = Capabilities(memory_snapshot=False, live_resize=True, fork=False)

    def __init__(self, config: OciConfig) -> None:
        self.config = config
        self._network = Network(config.bridge, config.subnet, egress=config.egress)
        self._runc = Runc(config.state_dir / "runc", config.runc)
        self._pool: StoragePool | None = None
        self._disks = _host.EXPOSED / config.bridge / "disks"
        """Where runc finds the disks (``_host.expose_disks``)."""
        self._sandboxes: dict[str, _Sandbox] = {}
        self._locks: collections.defaultdict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)
        self._host_ready = False
        self._host_lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()

    # inventory -------------------------------------------------------------------------------

    def list(self) -> list[SandboxInfo]:
        return [self._info(sb) for _, sb in sorted(self._sandboxes.items())]

    def spec(self, sandbox_id: str) -> SandboxSpec:
        _check_id(sandbox_id)
        return self._get(sandbox_id).spec

    def agent_socket(self, sandbox_id: str) -> Path:
        _check_id(sandbox_id)
        return self._dir(sandbox_id).agent_socket

    def port_endpoint(self, sandbox_id: str) -> PortEndpoint:
        """The sandbox's own netns, on its loopback: a server bound to 127.0.0.1 is reached as
        well as one on 0.0.0.0, and nothing crosses the bridge."""
        _check_id(sandbox_id)
        sandbox = self._get(sandbox_id)
        if sandbox.slot is None or sandbox.paused:
            raise SandboxConflict(f"sandbox {sandbox_id} is {self._info(sandbox).state}, not running")
        return PortEndpoint(netns=self._network.netns_path(sandbox_id), address="127.0.0.1")

    async def disk_used_bytes(self, sandbox_id: str) -> int:
        """The bytes the sandbox's disk references (its qgroup: what ``disk_gb`` limits, the
        template's shared data included, like a real disk's used space); 0 when archived."""
        _check_id(sandbox_id)
        sandbox = self._get(sandbox_id)
        if sandbox.archived:
            return 0
        pool = await self._open_pool()
        return await _blocking("measure disk", pool.usage, pool.disk(sandbox_id))

    async def recover(self) -> builtins.list[SandboxInfo]:
        """Adopt what a previous hostd left: sandboxes whose processes still run are running
        (or paused, if frozen); the others are stopped, and everything a crash can leave
        behind (processes, netns, veths, cgroups, half-created directories) is removed."""
        await self._ensure_host()
        await self._open_pool()
        found = await _blocking("recover", self._scan)
        for sandbox, init in found:
            self._sandboxes[sandbox.spec.id] = sandbox
            if sandbox.slot is None or init is None:
                continue
            self._network.slots.claim(sandbox.slot)
            try:
                self._watch(sandbox, adopt(init))
            except ProcessLookupError:  # it died since the scan
                await self._halt(sandbox)
        running = sum(sb.slot is not None for sb in self._sandboxes.values())
        log.info("recovered", running=running, total=len(found))
        return self.list()

    # lifecycle -------------------------------------------------------------------------------

    async def create(self, spec: SandboxSpec, snapshot: Path | None = None) -> SandboxInfo:
        """Create and boot ``spec``; with ``snapshot``, its disk is that snapshot's (a clone),
        on the exact template build the snapshot was made on."""
        _check_spec(spec)
        return await asyncio.shield(self._create(spec, snapshot))

    async def start(self, spec: SandboxSpec) -> SandboxInfo:
        _check_spec(spec)
        return await asyncio.shield(self._start(spec))

    async def stop(self, sandbox_id: str) -> SandboxInfo:
        _check_id(sandbox_id)
        return await asyncio.shield(self._stop(sandbox_id))

    async def destroy(self, sandbox_id: str) -> None:
        _check_id(sandbox_id)
        await asyncio.shield(self._destroy(sandbox_id))

    async def pause(self, sandbox_id: str) -> SandboxInfo:
        _check_id(sandbox_id)
        async with self._locks[sandbox_id]:
            sandbox = self._booted(sandbox_id)
            if not sandbox.paused:
                await _blocking("pause", self._runc.pause, sandbox_id)
                sandbox.paused = True
            return self._info(sandbox)

    async def resume(self, sandbox_id: str) -> SandboxInfo:
        _check_id(sandbox_id)
        async with self._locks[sandbox_id]:
            sandbox = self._booted(sandbox_id)
            if sandbox.paused:
                await _blocking("resume", self._runc.resume, sandbox_id)
                sandbox.paused = False
            return self._info(sandbox)

    async def snapshot(self, sandbox_id: str, directory: Path) -> None:
        """A host-local snapshot in ``directory``, which must be inside the storage pool: a
        read-only btrfs snapshot of the disk (``manifest.DISK``), taken while a running
        sandbox is frozen, and a manifest recording its identity and size."""
        _check_id(sandbox_id)
        async with self._locks[sandbox_id]:
            sandbox = self._with_disk(sandbox_id)
            pool = await self._open_pool()
            disk, copy = pool.disk(sandbox_id), directory / DISK
            timer = _Timer()
            measuring: asyncio.Future[tuple[SubvolumeIdentity, int]] | None = None
            try:
                with timer.step("frozen"):
                    async with self._frozen(sandbox):
                        await _blocking("snapshot disk", pool.snapshot, disk, copy)
                        # The copy exists: it is measured while the sandbox thaws.
                        measuring = asyncio.ensure_future(_measure(pool, disk, copy))
            except BaseException:
                if measuring is not None:  # never left running under the caller's cleanup
                    await asyncio.gather(measuring, return_exceptions=True)
                raise
            assert measuring is not None
            with timer.step("measure"):
                identity, size = await measuring
            await _blocking(
                "write manifest",
                _snapshot.write_subvolume,
                directory,
                sandbox_id,
                sandbox.base,
                identity,
                size,
                self.kind,
            )
            log.info("sandbox snapshotted", sandbox_id=sandbox_id, **timer.fields())

    async def export(self, sandbox_id: str, directory: Path) -> None:
        """Write the disk into ``directory`` (anywhere) as a portable ``archive`` (tar + zstd,
        every file's sha256 in the manifest) of what differs from its template (the whole disk
        if that template is no longer in the pool); a running sandbox is frozen meanwhile."""
        _check_id(sandbox_id)
        async with self._locks[sandbox_id]:
            sandbox = self._with_disk(sandbox_id)
            disk = (await self._open_pool()).disk(sandbox_id)
            async with self._frozen(sandbox):
                base = sandbox.base
                template = await _blocking("find template", self._template_subvolume, base)
                await _blocking(
                    "archive disk", _snapshot.write, disk, directory, sandbox_id, base, self.kind, template
                )

    @contextlib.asynccontextmanager
    async def _frozen(self, sandbox: _Sandbox) -> AsyncIterator[None]:
        """Keep a running sandbox frozen for a copy of its disk; stopped or paused ones stay
        as they are. The marker tells a recovering hostd that this freeze was ours, to undo."""
        sandbox_id = sandbox.spec.id
        freeze = sandbox.slot is not None and not sandbox.paused
        marker = self._dir(sandbox_id).path / _FROZEN_MARKER
        if freeze:
            await _blocking("mark freeze", marker.touch)
            await _blocking("pause", self._runc.pause, sandbox_id)
        try:
            yield
        finally:
            if freeze:
                await _blocking("resume", self._runc.resume, sandbox_id)
                await _blocking("unmark freeze", marker.unlink, True)

    async def resize(self, sandbox_id: str, cpu: int, ram_mb: int, disk_gb: int) -> SandboxInfo:
        """Set new limits; a booted sandbox's cgroup takes them at once, and the disk's qgroup
        in any state. The controller decides which directions are allowed."""
        _check_id(sandbox_id)
        if cpu < 1 or ram_mb < 1 or disk_gb < 1:
            raise RuntimeFailure("a sandbox needs at least 1 CPU, 1 MB of memory and 1 GB of disk")
        async with self._locks[sandbox_id]:
            sandbox = self._get(sandbox_id)
            spec = msgspec.structs.replace(sandbox.spec, cpu=cpu, ram_mb=ram_mb, disk_gb=disk_gb)
            if sandbox.slot is not None:
                limits = Limits(cpu=cpu, ram_mb=ram_mb, pids=self.config.pids_max)
                await _blocking("resize cgroup", self._runc.update, sandbox_id, limits)
            if not sandbox.archived:
                pool = await self._open_pool()
                await _blocking("resize disk", pool.set_limit, pool.disk(sandbox_id), disk_gb * _GB)
            await _blocking("write spec", self._dir(sandbox_id).write_spec, spec)
            sandbox.spec = spec
            return self._info(sandbox)

    async def archive(self, sandbox_id: str) -> SandboxInfo:
        """Drop the disk of a stopped sandbox, which the caller has archived elsewhere."""
        _check_id(sandbox_id)
        return await asyncio.shield(self._archive(sandbox_id))

    async def unarchive(self, sandbox_id: str, directory: Path) -> SandboxInfo:
        """Put back the disk of an archived sandbox from the archive in ``directory`` (verified
        first; its layer replayed onto a staging copy of the template, or a whole-disk archive
        extracted into a staging subvolume, that then becomes the disk); stopped."""
        _check_id(sandbox_id)
        return await asyncio.shield(self._unarchive(sandbox_id, directory))

    async def restore(self, sandbox_id: str, directory: Path) -> SandboxInfo:
        _check_id(sandbox_id)
        return await asyncio.shield(self._restore(sandbox_id, directory))

    async def remove_host_setup(self) -> None:
        """Remove this instance's bridge, nft table and parent cgroups, and unmount the pool's
        image (for ``dnah down`` and test teardown). Sandboxes must all be destroyed first.

        Raises:
            SandboxConflict: sandboxes still exist.
        """
        async with self._host_lock:
            if self._sandboxes:
                raise SandboxConflict(f"{len(self._sandboxes)} sandboxes still exist")
            await _blocking("remove host network", self._network.remove_host)
            await _blocking("remove cgroups", _host.remove_parent, self.config.cgroup_parent)
            await _blocking("unexpose disks", _host.hide_disks, self.config.bridge)
            if self._pool is not None and self.config.pool.directory is None:
                await _blocking("unmount pool", _detach_pool, self.config.pool)
            self._pool = None
            self._host_ready = False

    # implementation --------------------------------------------------------------------------

    async def _create(self, spec: SandboxSpec, snapshot: Path | None) -> SandboxInfo:
        manifest = (
            None if snapshot is None else await _blocking("read snapshot", _read_disk_snapshot, snapshot)
        )
        async with self._locks[spec.id]:
            if spec.id in self._sandboxes:
                raise SandboxConflict(f"sandbox {spec.id} already exists")
            timer = _Timer()
            with timer.step("template"):
                if manifest is None:
                    template = await asyncio.to_thread(self.config.templates.get, spec.template)
                elif manifest.template != spec.template:
                    raise SandboxConflict(f"the snapshot is a {manifest.template} disk, not {spec.template}")
                else:
                    template = await asyncio.to_thread(
                        self.config.templates.get, manifest.template, content_hash=manifest.content_hash
                    )
            sandbox = _Sandbox(spec, DiskBase(template=template.name, content_hash=template.content_hash))
            directory = self._dir(spec.id)
            undo = Undo(spec.id)
            try:
                with timer.step("dir"):
                    await _blocking("claim sandbox dir", directory.claim)
                    undo.push("remove sandbox dir", functools.partial(remove_tree, directory.path))
                    agent = self.config.uid_base + AGENT_UID
                    await _blocking("lay out", directory.populate, spec, sandbox.base, agent, agent)
                    pool = await self._open_pool()
                undo.push("delete disk", functools.partial(pool.delete_disk, spec.id))

                async def new_disk() -> None:
                    if snapshot is None or manifest is None:
                        await _blocking("create disk", self._new_disk, spec.id, template)
                    else:
                        make = self._disk_from(snapshot, manifest)
                        await _blocking("disk from snapshot", self._fill_disk, spec.id, make)
                    await _blocking("limit disk", pool.set_limit, pool.disk(spec.id), spec.disk_gb * _GB)

                await self._boot(sandbox, undo, timer, new_disk)
            except BaseException:
                await undo.unwind()
                raise
            self._sandboxes[spec.id] = sandbox
            log.info("sandbox created", sandbox_id=spec.id, pid=_pid(sandbox), **timer.fields())
            return self._info(sandbox)

    async def _start(self, spec: SandboxSpec) -> SandboxInfo:
        async with self._locks[spec.id]:
            sandbox = self._get(spec.id)
            if sandbox.slot is not None:
                raise SandboxConflict(f"sandbox {spec.id} is already booted")
            if spec.template != sandbox.base.template:
                raise SandboxConflict(f"sandbox {spec.id}'s disk is a {sandbox.base.template} disk")
            await _blocking("write spec", self._dir(spec.id).write_spec, spec)
            sandbox.spec = spec
            await self._boot_stopped(sandbox, "started")
            return self._info(sandbox)

    async def _stop(self, sandbox_id: str) -> SandboxInfo:
        async with self._locks[sandbox_id]:
            sandbox = self._get(sandbox_id)
            if sandbox.slot is not None:
                started = time.perf_counter()
                await self._halt(sandbox)
                log.info("sandbox stopped", sandbox_id=sandbox_id, total_ms=_ms_since(started))
            return self._info(sandbox)

    async def _destroy(self, sandbox_id: str) -> None:
        async with self._locks[sandbox_id]:
            sandbox = self._sandboxes.get(sandbox_id)
            if sandbox is not None and sandbox.slot is not None:
                await self._halt(sandbox)
            # Also for a sandbox we do not know: a directory or host resources left by a
            # crash are removed by name, which is what makes destroy safe to retry.
            await _blocking("tear down", self._teardown, sandbox_id, None)
            await self._open_pool()
            await _blocking("delete disk", self._drop_disk, sandbox_id)
            await _blocking("remove sandbox dir", remove_tree, self._dir(sandbox_id).path)
            self._sandboxes.pop(sandbox_id, None)
        self._locks.pop(sandbox_id, None)
        log.info("sandbox destroyed", sandbox_id=sandbox_id)

    async def _archive(self, sandbox_id: str) -> SandboxInfo:
        async with self._locks[sandbox_id]:
            sandbox = self._get(sandbox_id)
            if sandbox.slot is not None:
                raise SandboxConflict(f"sandbox {sandbox_id} is booted; only a stopped one is archived")
            if not sandbox.archived:
                directory = self._dir(sandbox_id)
                # Marker first: from here on, a crash leaves an archived sandbox (whose
                # archive the caller already holds), never a half-removed disk that boots.
                await _blocking("mark archived", (directory.path / _ARCHIVED_MARKER).touch)
                sandbox.archived = True
                await self._open_pool()
                await _blocking("drop disk", self._drop_disk, sandbox_id)
                log.info("sandbox archived", sandbox_id=sandbox_id)
            return self._info(sandbox)

    async def _unarchive(self, sandbox_id: str, directory: Path) -> SandboxInfo:
        manifest = await _blocking("read archive", read_manifest, directory, ["archive"])
        async with self._locks[sandbox_id]:
            sandbox = self._get(sandbox_id)
            if not sandbox.archived:
                raise SandboxConflict(f"sandbox {sandbox_id} is not archived")
            base = DiskBase(template=manifest.template, content_hash=manifest.content_hash)
            if base != sandbox.base or manifest.sandbox_id != sandbox_id:
                raise SandboxConflict(f"the archive in {directory} is not sandbox {sandbox_id}'s disk")
            target = self._dir(sandbox_id)
            pool = await self._open_pool()
            make = self._disk_from(directory, manifest)
            await _blocking("restore disk", self._fill_disk, sandbox_id, make)
            # Committed before the caller deletes the archive: until then a crash could lose
            # both. It also spares the next snapshot flushing the whole extracted disk.
            await _blocking("commit disk", _btrfs.sync, pool.disk(sandbox_id))
            await _blocking("limit disk", pool.set_limit, pool.disk(sandbox_id), sandbox.spec.disk_gb * _GB)
            await _blocking("unmark archived", (target.path / _ARCHIVED_MARKER).unlink, True)
            sandbox.archived = False
            log.info("sandbox unarchived", sandbox_id=sandbox_id)
            return self._info(sandbox)

    async def _restore(self, sandbox_id: str, directory: Path) -> SandboxInfo:
        manifest = await _blocking("read snapshot", _read_disk_snapshot, directory)
        async with self._locks[sandbox_id]:
            sandbox = self._get(sandbox_id)
            if sandbox.archived:
                raise SandboxConflict(f"sandbox {sandbox_id} is archived; unarchive it first")
            base = DiskBase(template=manifest.template, content_hash=manifest.content_hash)
            if base != sandbox.base:
                raise SandboxConflict(
                    f"snapshot is of a {base.template}-{base.content_hash} disk, "
                    f"sandbox {sandbox_id} has a {sandbox.base.template}-{sandbox.base.content_hash} one"
                )
            started = time.perf_counter()
            old_slot = await self._halt(sandbox, keep_slot=True) if sandbox.slot is not None else None
            halted = _ms_since(started)
            pool = await self._open_pool()
            make = self._disk_from(directory, manifest)

            async def swap_disk() -> None:
                await _blocking("replace disk", self._replace_disk, sandbox_id, make)
                limit = sandbox.spec.disk_gb * _GB
                await _blocking("limit disk", pool.set_limit, pool.disk(sandbox_id), limit)

            async def clean_up() -> None:
                """What the old boot and disk leave, removed while the new boot runs."""
                await _together(
                    self._free_slot(old_slot) if old_slot is not None else asyncio.sleep(0),
                    self._drop_replaced_disk(sandbox_id),
                )

            await self._boot_stopped(sandbox, "restored", swap_disk, clean_up, stop_ms=halted)
            return self._info(sandbox)

    async def _boot_stopped(
        self,
        sandbox: _Sandbox,
        event: str,
        disk: Callable[[], Awaitable[None]] | None = None,
        clean_up: Callable[[], Awaitable[None]] | None = None,
        **extra: float,
    ) -> None:
        """Boot an existing disk, or the one ``disk()`` puts in its place meanwhile (a
        restore's); ``clean_up`` and ``extra`` timings as in ``_boot`` and the log line."""
        timer = _Timer()
        undo = Undo(sandbox.spec.id)
        try:
            await self._boot(sandbox, undo, timer, disk, clean_up)
        except BaseException:
            await undo.unwind()
            raise
        fields = timer.fields() | extra
        log.info(f"sandbox {event}", sandbox_id=sandbox.spec.id, pid=_pid(sandbox), **fields)

    async def _boot(
        self,
        sandbox: _Sandbox,
        undo: Undo,
        timer: _Timer,
        disk: Callable[[], Awaitable[None]] | None = None,
        clean_up: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Create the network, write the bundle, start ``runc run`` and wait for the agent.

        ``clean_up()``, when given, runs while the agent starts (or, if the boot fails before,
        when it fails) and is awaited before this returns or raises; it must not raise.

        ``disk()``, when given, makes the disk ready (a create's new disk, a restore's swap); it
        runs alongside the network setup, as do the sysfs mount and the inside of the netns
        once the netns exists: these steps are a few milliseconds of separate processes each,
        independent of one another, and runc needs them all only when it starts.

        Every resource registers its removal in ``undo`` before it is created; on failure the
        caller unwinds it (after every concurrent step has ended), on success ``sandbox`` is
        marked running.
        """
        cleaning: asyncio.Future[None] | None = None
        try:
            spec, directory = sandbox.spec, self._dir(sandbox.spec.id)
            with timer.step("host"):
                await self._ensure_host()
                pool = await self._open_pool()
            slot = self._network.slots.allocate()
            undo.push("release slot", functools.partial(self._network.slots.release, slot))
            netns = self._network.netns_path(spec.id)

            async def network() -> None:
                interfaces = self._network.create_interfaces
                with timer.step("netns"):
                    await _blocking("create netns and veth", interfaces, spec.id, slot, undo)
                undo.push("unmount sysfs", functools.partial(unmount_all, directory.sysfs))
                with timer.step("address"):
                    await _together(
                        _blocking("configure netns", self._network.configure_inside, spec.id, slot),
                        _blocking("mount sysfs", _host.mount_sysfs, netns, directory.sysfs),
                    )

            async def timed_disk() -> None:
                if disk is not None:
                    with timer.step("disk"):
                        await disk()

            undo.push("clear boot record", directory.clear_boot)
            with timer.step("prepare"):
                await _together(
                    network(),
                    timed_disk(),
                    _blocking("write boot record", directory.write_boot, BootRecord(slot=slot)),
                )
            trust = self.config.trust_bundle
            trust_bundle = await _blocking("write trust bundle", trust, spec) if trust else None
            bundle = Bundle(
                hostname=spec.id,
                rootfs=self._disks / pool.disk(spec.id).name,
                uid_base=self.config.uid_base,
                netns=netns,
                cgroups_path=f"/{self.config.cgroup_parent}/{spec.id}",
                limits=Limits(cpu=spec.cpu, ram_mb=spec.ram_mb, pids=self.config.pids_max),
                guest_dir=self.config.guest_dir,
                run_dir=directory.run,
                resolv_conf=self.config.resolv_conf,
                hosts=directory.hosts,
                sysfs=directory.sysfs,
                env=spec.env,
                trust_bundle=trust_bundle,
            )
            await _blocking("write bundle", bundle.write, directory.bundle)
            # runc cleans up after itself, unless it is killed mid-start: then the container's
            # state and cgroups are removed by id.
            undo.push("delete container", functools.partial(self._delete_container, spec.id))
            undo.push("stop a runc that started", functools.partial(self._runc.abort, spec.id))
            with timer.step("spawn"):
                supervisor = await self._runc.run(spec.id, directory.bundle, directory.console)
            undo.push("kill runc", supervisor.kill)
            if clean_up is not None:
                cleaning = asyncio.ensure_future(clean_up())
            with timer.step("agent"):
                await self._wait_for_agent(supervisor, directory)
            sandbox.slot, sandbox.paused = slot, False
            self._watch(sandbox, supervisor)
        finally:
            if cleaning is not None:
                await cleaning
            elif clean_up is not None:
                await clean_up()

    def _watch(self, sandbox: _Sandbox, supervisor: Supervisor) -> None:
        sandbox.supervisor = supervisor
        supervisor.exited.add_done_callback(functools.partial(self._on_exit, sandbox, supervisor))

    async def _wait_for_agent(self, supervisor: Supervisor, directory: SandboxDir) -> None:
        """Return once the agent answers a ping; fail fast if the sandbox dies first."""
        ready = asyncio.ensure_future(wait_ready(directory.agent_socket, timeout=self.config.boot_timeout))
        try:
            either: set[asyncio.Future[Any]] = {ready, supervisor.exited}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not ready.done():
                ready.cancel()
        if supervisor.exited.done():
            if ready.done() and not ready.cancelled() and ready.exception() is None:
                await ready.result().close()
            tail = await asyncio.to_thread(directory.console_tail)
            code = supervisor.exited.result()
            raise RuntimeFailure(f"sandbox exited while booting (status {code}): {tail}")
        try:
            client = ready.result()
        except AgentUnavailable as exc:
            tail = await asyncio.to_thread(directory.console_tail)
            raise RuntimeFailure(f"sandbox agent did not come up: {exc}; console: {tail}") from exc
        await client.close()

    async def _halt(self, sandbox: _Sandbox, *, keep_slot: bool = False) -> int | None:
        """Kill the sandbox's processes and free its cgroup and network; the disk stays.

        With ``keep_slot`` the veth stays and the slot stays taken, for the caller to free with
        ``_free_slot`` later (a restore, while it boots again); the slot is returned.
        """
        slot, supervisor = sandbox.slot, sandbox.supervisor
        # Forgetting the supervisor first tells the exit watcher this exit is intended. The
        # sandbox only counts as stopped once the teardown succeeded, so a failed one is
        # retried by the next stop or destroy.
        sandbox.supervisor = None
        if supervisor is not None and not sandbox.paused:
            await self._kill_init(sandbox.spec.id, supervisor)
        await _blocking("tear down", self._teardown, sandbox.spec.id, slot, not keep_slot)
        sandbox.slot, sandbox.paused = None, False
        if slot is not None and not keep_slot:
            self._network.slots.release(slot)
        return slot

    async def _free_slot(self, slot: int) -> None:
        """Delete a halted sandbox's veth, then hand its slot out again. Deleting a veth waits
        for the kernel's RCU grace periods (5-40 ms here), which a restore does meanwhile its
        boot instead of before it. A failure is logged and the slot stays taken (the sweep at
        the next start removes the veth)."""
        try:
            await _blocking("delete veth", self._network.delete_veth, slot)
        except HostError as exc:
            log.warning("veth not deleted; its slot stays taken", slot=slot, error=str(exc))
            return
        self._network.slots.release(slot)

    async def _kill_init(self, sandbox_id: str, supervisor: Supervisor) -> None:
        """SIGKILL the sandbox's PID 1 (the kernel then kills the rest of its PID namespace)
        and wait for it to be gone, so that the teardown's ``runc delete --force`` finds a
        stopped container: on a running one, runc 1.1 polls in 100 ms sleeps until its
        processes are gone, which made every stop and restore 100 ms slower. A frozen
        sandbox cannot die before it is thawed; ``delete --force`` handles that case, as it
        does a PID 1 that outlives the wait."""
        await _blocking("kill", self._runc.kill, sandbox_id)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(supervisor.exited), _KILL_WAIT_S)

    def _teardown(self, sandbox_id: str, slot: int | None, veth: bool = True) -> None:
        """Remove everything a boot creates, by name; tolerant of any of it being absent.
        Without ``veth``, the veth pair is left for ``_free_slot``."""
        directory = self._dir(sandbox_id)
        if slot is None and (record := directory.read_boot()) is not None:
            slot = record.slot
        # Independent processes (runc, ip, umount): run side by side.
        _parallel(
            functools.partial(self._delete_container, sandbox_id),
            functools.partial(self._network.delete_interfaces, sandbox_id, slot if veth else None),
            functools.partial(unmount_all, directory.path),
        )
        if directory.path.exists():
            directory.clear_boot()

    def _delete_container(self, sandbox_id: str) -> None:
        """``runc delete --force``, then whatever a runc killed mid-start left in the cgroups."""
        self._runc.delete(sandbox_id)
        _host.remove_sandbox(self.config.cgroup_parent, sandbox_id)

    def _on_exit(self, sandbox: _Sandbox, supervisor: Supervisor, _done: asyncio.Future[int | None]) -> None:
        """The supervisor exited. Unless we stopped it, the sandbox died on its own (its PID 1
        crashed, or the OOM killer chose it): free its resources and report it stopped."""
        if sandbox.supervisor is not supervisor:
            return
        task = asyncio.ensure_future(self._reap_dead(sandbox, supervisor))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _reap_dead(self, sandbox: _Sandbox, supervisor: Supervisor) -> None:
        async with self._locks[sandbox.spec.id]:
            if sandbox.supervisor is not supervisor:
                return
            tail = await asyncio.to_thread(self._dir(sandbox.spec.id).console_tail)
            log.warning("sandbox died", sandbox_id=sandbox.spec.id, console=tail[-500:])
            await self._halt(sandbox)

    def _scan(self) -> builtins.list[tuple[_Sandbox, int | None]]:
        """Read every sandbox directory back, with the host pid of each running one's PID 1;
        clean up whatever is not running."""
        root = self.config.state_dir / "sandboxes"
        root.mkdir(parents=True, exist_ok=True)
        found: builtins.list[tuple[_Sandbox, int | None]] = []
        for path in sorted(root.iterdir()):
            directory = SandboxDir(path)
            try:
                sandbox = _Sandbox(directory.read_spec(), directory.read_base())
            except (FileNotFoundError, msgspec.DecodeError):
                log.warning("removing an incomplete sandbox directory", sandbox_id=path.name)
                self._teardown(path.name, None)
                self._drop_disk(path.name)
                remove_tree(path)
                continue
            record = directory.read_boot()
            state = self._runc.state(path.name)
            init = state["pid"] if state and state["status"] in ("running", "paused") else None
            frozen_marker = path / _FROZEN_MARKER
            if record is not None and init is not None and state is not None:
                if frozen_marker.exists() and state["status"] == "paused":
                    self._runc.resume(path.name)  # a snapshot paused it and the hostd taking it died
                    state["status"] = "running"
                sandbox.slot, sandbox.paused = record.slot, state["status"] == "paused"
            else:
                init = None
                self._teardown(path.name, None)
                self._repair_disk(path.name)
            frozen_marker.unlink(missing_ok=True)
            if (path / _ARCHIVED_MARKER).exists():
                sandbox.archived = True
                self._drop_disk(path.name)  # finish an archive, or undo an unfinished unarchive
            found.append((sandbox, init))
        self._sweep({sb.spec.id: sb.slot for sb, _ in found if sb.slot is not None})
        return found

    def _sweep(self, running: dict[str, int]) -> None:
        """Remove host resources of this instance that no running sandbox owns."""
        for sandbox_id in set(self._runc.ids()) - running.keys():
            self._runc.delete(sandbox_id)
        for sandbox_id in _host.sandbox_ids(self.config.cgroup_parent) - running.keys():
            _host.remove_sandbox(self.config.cgroup_parent, sandbox_id)
        for sandbox_id in self._network.netns_ids() - running.keys():
            self._network.delete_netns(sandbox_id)
        for slot in self._network.veth_slots() - set(running.values()):
            self._network.delete_veth(slot)

    # disks -----------------------------------------------------------------------------------

    async def prepare(self, template: Template) -> None:
        """Import ``template`` into the storage pool now (the pool's lock makes a create that
        needs it meanwhile wait for this import instead of starting another)."""
        pool = await self._open_pool()
        await _blocking(
            "import template",
            functools.partial(pool.template, uid_shift=self.config.uid_base),
            template.name,
            template.content_hash,
            template.rootfs,
        )

    async def _open_pool(self) -> StoragePool:
        async with self._host_lock:
            if self._pool is None:
                pool = await _blocking("open storage pool", StoragePool.open, self.config.pool)
                self._disks = await _blocking(
                    "expose disks", _host.expose_disks, pool.disks, self.config.bridge
                )
                self._pool = pool
            return self._pool

    def _pool_now(self) -> StoragePool:
        assert self._pool is not None, "the pool is opened before any disk is touched"
        return self._pool

    def _new_disk(self, sandbox_id: str, template: Template) -> None:
        """The sandbox's disk: a writable snapshot of the template's (shifted) subvolume."""
        pool = self._pool_now()
        source = pool.template(
            template.name, template.content_hash, template.rootfs, uid_shift=self.config.uid_base
        )
        pool.create_disk(sandbox_id, source)

    def _disk_from(self, directory: Path, manifest: Manifest) -> Callable[[Path], None]:
        """What makes a new disk (a subvolume at the path it is given) from the verified
        snapshot or archive in ``directory``: a writable copy of a ``subvolume`` snapshot,
        which copies nothing, or an empty subvolume an ``archive`` is extracted into."""
        if manifest.disk is not None:
            return functools.partial(self._pool_now().writable_copy, directory / manifest.disk.name)
        if manifest.layer == "diff":
            return functools.partial(self._apply_archive_layer, directory, manifest)
        return functools.partial(_extract_into_subvolume, directory)

    def _template_subvolume(self, base: DiskBase) -> Path | None:
        """The pool's subvolume of the template build ``base``, if it is there."""
        path = self._pool_now().templates / f"{base.template}-{base.content_hash}"
        return path if _btrfs.is_subvolume(path) else None

    def _apply_archive_layer(self, directory: Path, manifest: Manifest, target: Path) -> None:
        """A writable copy of the template build the ``diff`` archive in ``directory`` was made
        on (imported first if this pool lacks it), at ``target``, with the archive's layer
        extracted next to it and replayed onto it (its files cloned, not copied)."""
        pool = self._pool_now()
        base = DiskBase(template=manifest.template, content_hash=manifest.content_hash)
        source = self._template_subvolume(base)
        if source is None:
            template = self.config.templates.get(manifest.template, content_hash=manifest.content_hash)
            uid_shift = self.config.uid_base
            source = pool.template(template.name, template.content_hash, template.rootfs, uid_shift=uid_shift)
        pool.writable_copy(source, target)
        with pool.scratch() as layer:
            layer.mkdir()
            _snapshot.extract(directory, layer)
            overlay_upper.apply(layer, target, shift=0)

    def _fill_disk(self, sandbox_id: str, make: Callable[[Path], None]) -> None:
        """Give a sandbox without a disk the one ``make`` creates (staged, then renamed)."""
        pool = self._pool_now()
        disk = pool.disk(sandbox_id)
        staging = disk.with_name(disk.name + _NEW)
        pool.delete(staging)
        make(staging)
        os.rename(staging, disk)

    def _replace_disk(self, sandbox_id: str, make: Callable[[Path], None]) -> None:
        """Swap the disk for the one ``make`` creates. The old disk is moved aside before the
        new one takes its place, so a crash at any point leaves a whole disk for
        ``_repair_disk`` to put back; the old one is left (``.old``) for the caller to delete
        with ``_drop_replaced_disk``, which a restore does while the sandbox boots."""
        pool = self._pool_now()
        disk = pool.disk(sandbox_id)
        staging, old = disk.with_name(disk.name + _NEW), disk.with_name(disk.name + _OLD)
        pool.delete(staging)
        make(staging)
        pool.delete(old)
        os.rename(disk, old)
        os.rename(staging, disk)

    async def _drop_replaced_disk(self, sandbox_id: str) -> None:
        """After ``_replace_disk`` (done or failed): ``_repair_disk``, which deletes the old
        disk, or puts it back if the new one never took its place. A failure is logged: the
        leftovers are deleted by the next replace or the next start's recovery."""
        try:
            await _blocking("delete replaced disk", self._repair_disk, sandbox_id)
        except HostError as exc:
            log.warning("replaced disk not deleted", sandbox_id=sandbox_id, error=str(exc))

    def _repair_disk(self, sandbox_id: str) -> None:
        """Finish or roll back a ``_replace_disk`` that a crash interrupted."""
        pool = self._pool_now()
        disk = pool.disk(sandbox_id)
        staging, old = disk.with_name(disk.name + _NEW), disk.with_name(disk.name + _OLD)
        if not os.path.lexists(disk) and os.path.lexists(old):
            os.rename(old, disk)
        pool.delete(staging)
        pool.delete(old)

    def _drop_disk(self, sandbox_id: str) -> None:
        """Delete the disk and its scratch copies; absent is fine."""
        pool = self._pool_now()
        disk = pool.disk(sandbox_id)
        for path in (disk.with_name(disk.name + _NEW), disk.with_name(disk.name + _OLD), disk):
            pool.delete(path)

    async def _ensure_host(self) -> None:
        async with self._host_lock:
            if not self._host_ready:
                await _blocking("set up host network", self._network.ensure_host)
                await asyncio.to_thread(_bytecode.precompile, self.config.guest_dir)
                self._host_ready = True

    def _dir(self, sandbox_id: str) -> SandboxDir:
        return SandboxDir(self.config.state_dir / "sandboxes" / sandbox_id)

    def _get(self, sandbox_id: str) -> _Sandbox:
        sandbox = self._sandboxes.get(sandbox_id)
        if sandbox is None:
            raise SandboxNotFound(f"no sandbox {sandbox_id} on this host")
        return sandbox

    def _with_disk(self, sandbox_id: str) -> _Sandbox:
        sandbox = self._get(sandbox_id)
        if sandbox.archived:
            raise SandboxConflict(f"sandbox {sandbox_id} is archived; unarchive it first")
        return sandbox

    def _booted(self, sandbox_id: str) -> _Sandbox:
        sandbox = self._get(sandbox_id)
        if sandbox.slot is None:
            raise SandboxConflict(f"sandbox {sandbox_id} is stopped")
        return sandbox

    def _info(self, sandbox: _Sandbox) -> SandboxInfo:
        if sandbox.archived:
            return SandboxInfo(id=sandbox.spec.id, state="archived")
        if sandbox.slot is None:
            return SandboxInfo(id=sandbox.spec.id, state="stopped")
        state: Literal["running", "paused"] = "paused" if sandbox.paused else "running"
        return SandboxInfo(id=sandbox.spec.id, state=state, ip=str(self._network.address(sandbox.slot)))


class _Timer:
    """Wall time per boot step, logged with the outcome so slow creates explain themselves."""

    def __init__(self) -> None:
        self._started = time.perf_counter()
        self._steps: dict[str, float] = {}

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self._steps[name] = _ms_since(started)

    def fields(self) -> dict[str, float]:
        return {
            "total_ms": _ms_since(self._started),
            **{f"{name}_ms": ms for name, ms in self._steps.items()},
        }


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


def _parallel(*steps: Callable[[], object]) -> None:
    """Run blocking ``steps`` in threads of their own, wait for all, raise the first failure."""
    with concurrent.futures.ThreadPoolExecutor(len(steps)) as executor:
        futures = [executor.submit(step) for step in steps]
    for future in futures:
        future.result()


async def _together(*steps: Awaitable[object]) -> None:
    """Run ``steps`` concurrently and wait for every one of them to end (so that an undo
    stack they share is complete before anyone unwinds it); then raise the first failure."""
    outcomes = await asyncio.gather(*steps, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


async def _measure(pool: StoragePool, disk: Path, copy: Path) -> tuple[SubvolumeIdentity, int]:
    """A snapshot's identity (of ``copy``) and size (``disk``'s usage), read side by side:
    each commits the pool first, and concurrent commits share a transaction. Both are waited
    for; then the first failure is raised."""
    identity, size = await asyncio.gather(
        _blocking("read snapshot identity", pool.identity, copy),
        _blocking("measure disk", pool.usage, disk),
        return_exceptions=True,
    )
    if isinstance(identity, BaseException):
        raise identity
    if isinstance(size, BaseException):
        raise size
    return identity, size


async def _blocking(what: str, fn: Callable[..., T], *args: object) -> T:
    """Run a blocking step in a thread, turning OS-level failures into ``RuntimeFailure``."""
    try:
        return await asyncio.to_thread(fn, *args)
    except HostError:
        raise
    except (OSError, ValueError) as exc:
        raise RuntimeFailure(f"{what}: {exc}") from exc


def _read_disk_snapshot(directory: Path) -> Manifest:
    """A verified snapshot whose disk this runtime can use: its own ``subvolume`` ones and
    ``archive`` ones (a VM's disk image and memory are not a directory tree)."""
    return read_manifest(directory, ["subvolume", "archive"])


def _extract_into_subvolume(archive: Path, target: Path) -> None:
    """A new subvolume at ``target`` holding the disk in the ``archive`` directory."""
    _btrfs.create(target)
    _snapshot.extract(archive, target)


def _detach_pool(config: PoolConfig) -> None:
    """Unmount the pool's image and detach its loop device (the image file stays)."""
    _loop.detach_image(config.image, config.mountpoint)


def _pid(sandbox: _Sandbox) -> int | None:
    """The supervisor's pid, for logs: the root of the sandbox's process tree on the host."""
    return sandbox.supervisor.pid if sandbox.supervisor else None


def _check_id(sandbox_id: str) -> None:
    """Ids become paths, cgroup and netns names: one that could not have been created (``..``,
    anything with ``/``) names no sandbox, whatever the front end let through."""
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
