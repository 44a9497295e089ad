"""``VmRuntime``: a sandbox as a microVM, whatever the VMM. QEMU and Cloud Hypervisor subclass it.

A sandbox here is

* a disk: a raw ext4 image in a subvolume of the storage pool, a reflink of its guest image's
  rootfs grown to ``disk_gb`` (``hosts/vm/disk.py``);
* a network namespace whose veth sits on the instance's host bridge like an OCI sandbox's
  (the same nftables isolation and NAT), holding a bridge and the TAP the VMM opens
  (``hosts/vm/network.py``); the guest holds the sandbox's address;
* a cgroup around the VMM: memory = guest RAM + VMM overhead, CPU and pids (``hosts/vm/cgroup.py``);
* one VMM process, started in that netns and cgroup (``hosts/vm/process.py``), its sockets
  and logs in the sandbox's run directory (``hosts/vm/layout.py``); ``agent_socket()`` speaks
  the hybrid-vsock handshake whatever the VMM.

Everything above, and the lifecycle built on it, is here: the sandbox directory and its
records, boot and teardown with every step undone on failure, the guest's configuration and
identity refresh (``contracts.vm`` control messages), snapshots (``hosts/vm/snapshot.py``),
export and archive, adoption of running VMs by a restarted hostd, the exit watcher, disks.
What differs between VMMs is a small set of hooks a backend implements:

==========================  ===================================================================
``_vmm_argv``               the VMM's command line (QEMU boots from it; Cloud Hypervisor waits
                            for its API)
``_vmm_ready``              after the process started: wait until it can be driven
``_vmm_boot``               cold-boot the guest (a no-op where the command line did it)
``_vmm_restore``            load a snapshot's memory state (``snapshot_files``) and run it
``_vmm_pause``/``_resume``  stop / continue the vCPUs
``_vmm_save``               write the paused VM's memory state into a directory; its file name
``_vmm_adopt``              a running VMM a previous hostd started: take it over; paused or not
``_vmm_release``            let go of what hostd runs beside the VMM (QEMU's serial muxer)
``_vmm_resize``             change a running VM's vCPUs and memory (``live_resize`` backends)
``_read_vmm_version``       the binary's version, as the manifest records it (blocking)
``_kernel``                 which of the image's kernels the VMM boots
==========================  ===================================================================

Lifecycle. ``create`` boots and returns once the agent answers. ``stop`` asks vminit to power
off (``contracts.vm.Poweroff``: agent stopped, disk synced and unmounted) and kills the VMM if
it has not exited by the deadline; the disk stays. ``snapshot`` pauses a running VM, has the
VMM write its memory state into a new subvolume, reflinks the disk image next to it and lets
the VM run on; the subvolume is sealed read-only and named by identity in a ``vm`` manifest.
``restore`` and ``create`` from a snapshot start a new VMM on a reflink of the snapshot's disk,
load the memory, wait for the agent, then give the guest a new identity (hostname, machine
id, boot id, entropy, clock, address): a running process survives, and a fork is a machine of
its own. ``export`` writes the disk image as a tar + zstd ``archive``; ``archive`` drops the
disk of a stopped sandbox, ``unarchive`` puts it back.

The VMM outlives hostd: ``recover`` adopts every VM whose process still runs (pid and start
time in ``run/vmm.json``); everything else is torn down by name. Concurrency and cancellation
as in the OCI runtime: one lock per sandbox, lifecycle operations shielded from the caller's
cancellation, every create step undone on failure.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import contextlib
import functools
import os
import re
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec
import structlog

from contracts import vm as vm_contract
from contracts.host import Capabilities, SandboxInfo, SandboxSpec
from hosts.agent_client import AgentClient, wait_ready
from hosts.errors import AgentUnavailable, HostError, RuntimeFailure, SandboxConflict, SandboxNotFound
from hosts.runtime import _snapshot, manifest
from hosts.runtime._layout import BootRecord, DiskBase
from hosts.runtime._mounts import remove_tree
from hosts.runtime._network import Network
from hosts.runtime._undo import Undo
from hosts.runtime.base import PortEndpoint
from hosts.storage import _btrfs, _loop
from hosts.storage.pool import StoragePool
from hosts.templates import Template
from hosts.vm import cgroup, control, disk, network, process
from hosts.vm import snapshot as vm_snapshot
from hosts.vm.config import VmConfig
from hosts.vm.identity import new_identity, refresh_identity, set_clock
from hosts.vm.images import VmImage, VmImageStore
from hosts.vm.layout import Machine, VmDir

log = structlog.get_logger("hosts.runtime")

T = TypeVar("T")

_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
_NEW, _OLD = ".new", ".old"
_CLOCK_TIMEOUT = 10.0


@dataclass(eq=False)
class Vm:
    """A sandbox as the runtime tracks it."""

    spec: SandboxSpec
    base: DiskBase
    slot: int | None = None
    """The network slot while booted; None when stopped."""
    paused: bool = False
    archived: bool = False
    vmm: process.Vmm | None = None
    """The VMM process while booted; None when stopped (or being stopped on purpose)."""
    machine: Machine | None = None
    """The shape of the current (or last) boot."""


class VmRuntime:
    """``SandboxRuntime`` on microVMs; a backend supplies the VMM hooks (see the module doc)."""

    kind: str
    capabilities: Capabilities
    channel: Literal["serial", "vsock"]
    """How the guest's vminit reaches hostd (``BootParams.channel``)."""

    def __init__(self, config: VmConfig) -> None:
        self.config = config
        self._network = Network(config.bridge, config.subnet, egress=config.egress)
        self._images = VmImageStore(config.image_cache, config.guest_dir)
        self._pool: StoragePool | None = None
        self._sandboxes: dict[str, Vm] = {}
        self._locks: collections.defaultdict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)
        self._host_ready = False
        self._host_lock = asyncio.Lock()
        self._import_lock = asyncio.Lock()
        self._version: str | None = None
        self._background: set[asyncio.Task[None]] = set()

    # VMM hooks ---------------------------------------------------------------------------------

    def _vmm_argv(
        self, vm: Vm, machine: Machine, params: vm_contract.BootParams, *, restoring: bool
    ) -> list[str]:
        """The VMM's command line for this boot (``restoring``: a memory state will be loaded)."""
        raise NotImplementedError

    async def _vmm_ready(self, vm: Vm) -> None:
        """The VMM process just started: wait until it can be driven."""
        raise NotImplementedError

    async def _vmm_boot(self, vm: Vm, machine: Machine, params: vm_contract.BootParams) -> None:
        """Cold-boot the guest with ``params`` (the agent's answer is waited for afterwards)."""
        raise NotImplementedError

    async def _vmm_restore(self, vm: Vm, machine: Machine, snapshot_files: Path, undo: Undo) -> None:
        """Load the memory state in ``snapshot_files`` (a snapshot's subvolume) and run the VM."""
        raise NotImplementedError

    async def _vmm_pause(self, vm: Vm) -> None:
        raise NotImplementedError

    async def _vmm_resume(self, vm: Vm) -> None:
        raise NotImplementedError

    async def _vmm_save(self, vm: Vm, files: Path) -> str:
        """Write the paused VM's memory state into ``files``; return its main file's name."""
        raise NotImplementedError

    async def _vmm_adopt(self, vm: Vm) -> bool:
        """Take over the running VMM a previous hostd started; return whether it is paused."""
        raise NotImplementedError

    async def _vmm_release(self, vm: Vm) -> None:
        """Let go of whatever hostd runs beside the VMM (nothing by default)."""

    async def _vmm_resize(self, vm: Vm, cpu: int, ram_mb: int) -> None:
        """Give the running VM ``cpu`` vCPUs and ``ram_mb`` of memory (``live_resize`` only)."""
        raise NotImplementedError

    def _read_vmm_version(self) -> str:
        """The VMM binary's version, as its snapshots record it (blocking)."""
        raise NotImplementedError

    def _kernel(self, image: VmImage) -> Path:
        """The kernel the VMM boots: the image's bzImage by default."""
        return image.kernel

    # inventory -------------------------------------------------------------------------------

    def list(self) -> list[SandboxInfo]:
        return [self._info(vm) for _, vm in sorted(self._sandboxes.items())]

    def spec(self, sandbox_id: str) -> SandboxSpec:
        _check_id(sandbox_id)
        return self._get(sandbox_id).spec

    def agent_socket(self, sandbox_id: str) -> Path:
        _check_id(sandbox_id)
        return self._dir(sandbox_id).files.agent

    def port_endpoint(self, sandbox_id: str) -> PortEndpoint:
        """The guest's address, from hostd's own netns: the sandbox's netns holds no address
        (its ``eth0`` is only bridged to the TAP, ``hosts/vm/network.py``), while the host's
        bridge routes to the guest and lets its replies back in. Servers listening only on the
        guest's loopback are out of reach (they would need a relay inside the guest)."""
        _check_id(sandbox_id)
        vm = self._get(sandbox_id)
        if vm.slot is None or vm.paused:
            raise SandboxConflict(f"sandbox {sandbox_id} is {self._info(vm).state}, not running")
        return PortEndpoint(netns=None, address=str(self._network.address(vm.slot)))

    async def disk_used_bytes(self, sandbox_id: str) -> int:
        """The bytes the sandbox's own disk image holds in the pool beyond what it shares with
        the template image it was reflinked from (the pool's quota accounting, as for the OCI
        backend's writable layers); 0 when archived. A running guest is asked to ``sync``
        first, so writes still in its page cache count; blocks it frees come back because it
        mounts its disk with ``discard`` (``hosts/vm/initramfs.py``)."""
        _check_id(sandbox_id)
        vm = self._get(sandbox_id)
        if vm.archived:
            return 0
        if vm.slot is not None and not vm.paused:
            with contextlib.suppress(HostError, OSError):
                client = await AgentClient.connect(self.agent_socket(sandbox_id), timeout=5.0)
                try:
                    await client.exec(["sync"], timeout_ms=10_000)
                finally:
                    await client.close()
        pool = await self._open_pool()
        return await blocking("measure disk", pool.usage, pool.disk(sandbox_id))

    async def recover(self) -> builtins.list[SandboxInfo]:
        """Adopt what a previous hostd left: VMs whose VMM still runs are running or paused (as
        the VMM says; one that a snapshot or export held paused when that hostd died, marked
        ``held``, is resumed); the others are stopped, and what a crash can leave (a VMM of a
        sandbox whose records are gone, netns, veths, cgroups, half-made directories and disks)
        is removed."""
        await self._ensure_host()
        await self._open_pool()
        found = await blocking("recover", self._scan)
        for vm, record in found:
            self._sandboxes[vm.spec.id] = vm
            if record is None:
                continue
            try:
                vmm = process.adopt(record, self._dir(vm.spec.id).files.run)
                paused = await self._vmm_adopt(vm)
            except (ProcessLookupError, HostError, OSError) as exc:
                log.warning("running VM not adopted", sandbox_id=vm.spec.id, error=str(exc))
                await self._vmm_release(vm)
                vm.slot = None
                await blocking("tear down", self._teardown, vm.spec.id, None)
                continue
            assert vm.slot is not None
            self._network.slots.claim(vm.slot)
            held = self._dir(vm.spec.id).held
            if held.exists() and paused:
                # A snapshot held it paused and the hostd taking it died: let it run again.
                await self._vmm_resume(vm)
                paused = False
                await self._set_clock(vm)
            held.unlink(missing_ok=True)
            vm.paused = paused
            self._watch(vm, vmm)
        running = sum(vm.slot is not None for vm in self._sandboxes.values())
        log.info("recovered", running=running, total=len(found))
        return self.list()

    def _scan(self) -> builtins.list[tuple[Vm, process.VmmRecord | None]]:
        """Read every sandbox directory back, with the VMM record of each booted one; clean up
        the rest."""
        root = self.config.state_dir / "sandboxes"
        root.mkdir(parents=True, exist_ok=True)
        found: builtins.list[tuple[Vm, process.VmmRecord | None]] = []
        for path in sorted(root.iterdir()):
            directory = VmDir(path)
            try:
                vm = Vm(directory.read_spec(), directory.read_base())
            except (FileNotFoundError, msgspec.DecodeError):
                log.warning("removing an incomplete sandbox directory", sandbox_id=path.name)
                self._teardown(path.name, None)
                self._drop_disk(path.name)
                remove_tree(path)
                continue
            boot, record = directory.read_boot(), directory.read_vmm()
            alive = record is not None and process.start_time(record.pid) == record.start_time
            if boot is not None and record is not None and alive:
                vm.slot, vm.machine = boot.slot, directory.read_machine()
            else:
                record = None
                self._teardown(path.name, None)
                self._repair_disk(path.name)
                directory.held.unlink(missing_ok=True)
            if directory.archived.exists():
                vm.archived = True
                self._drop_disk(path.name)
            found.append((vm, record))
        running = {vm.spec.id: vm.slot for vm, _ in found if vm.slot is not None}
        for sandbox_id in cgroup.sandbox_ids(self.config.cgroup_parent) - running.keys():
            cgroup.remove(self.config.cgroup_parent, sandbox_id)
        for sandbox_id in self._network.netns_ids() - running.keys():
            self._network.delete_netns(sandbox_id)
        for slot in self._network.veth_slots() - {s for s in running.values() if s is not None}:
            self._network.delete_veth(slot)
        return found

    def detach(self) -> None:
        """Let go of every VM without touching it, as this hostd's death would: release what
        runs beside each VMM (freeing QEMU's serial ports for a successor) and stop watching
        the processes. For tests that start a successor in the same process."""
        for vm in self._sandboxes.values():
            task = asyncio.ensure_future(self._vmm_release(vm))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            vm.vmm = None

    # lifecycle -------------------------------------------------------------------------------

    async def create(self, spec: SandboxSpec, snapshot: Path | None = None) -> SandboxInfo:
        """Create and boot ``spec``; with ``snapshot``, a clone of it: its disk, and when it holds
        memory, its running processes (the VM resumes where the snapshot stopped it, in the
        snapshot's CPU and RAM shape; ``spec``'s own shape applies from the next start)."""
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

    async def restore(self, sandbox_id: str, directory: Path) -> SandboxInfo:
        _check_id(sandbox_id)
        return await asyncio.shield(self._restore(sandbox_id, directory))

    async def archive(self, sandbox_id: str) -> SandboxInfo:
        _check_id(sandbox_id)
        return await asyncio.shield(self._archive(sandbox_id))

    async def unarchive(self, sandbox_id: str, directory: Path) -> SandboxInfo:
        _check_id(sandbox_id)
        return await asyncio.shield(self._unarchive(sandbox_id, directory))

    async def pause(self, sandbox_id: str) -> SandboxInfo:
        _check_id(sandbox_id)
        async with self._locks[sandbox_id]:
            vm = self._booted(sandbox_id)
            if not vm.paused:
                await self._vmm_pause(vm)
                vm.paused = True
            return self._info(vm)

    async def resume(self, sandbox_id: str) -> SandboxInfo:
        _check_id(sandbox_id)
        async with self._locks[sandbox_id]:
            vm = self._booted(sandbox_id)
            if vm.paused:
                await self._vmm_resume(vm)
                vm.paused = False
                await self._set_clock(vm)
            return self._info(vm)

    async def resize(self, sandbox_id: str, cpu: int, ram_mb: int, disk_gb: int) -> SandboxInfo:
        """Record new limits. A running VM of a ``live_resize`` backend gets its vCPUs and
        memory now (and its cgroup new limits); otherwise they apply at the next boot. A stopped
        sandbox's disk grows now, a booted one's at its next start (a disk never shrinks)."""
        _check_id(sandbox_id)
        if cpu < 1 or ram_mb < 1 or disk_gb < 1:
            raise RuntimeFailure("a sandbox needs at least 1 CPU, 1 MB of memory and 1 GB of disk")
        async with self._locks[sandbox_id]:
            vm = self._get(sandbox_id)
            spec = msgspec.structs.replace(vm.spec, cpu=cpu, ram_mb=ram_mb, disk_gb=disk_gb)
            directory = self._dir(sandbox_id)
            if vm.slot is not None and vm.machine is not None and self.capabilities.live_resize:
                await self._vmm_resize(vm, cpu, ram_mb)
                limits = cgroup.VmLimits(
                    cpu=cpu, memory_mb=ram_mb + self.config.vmm_overhead_mb, pids=self.config.pids_max
                )
                await blocking("resize cgroup", cgroup.apply, self.config.cgroup_parent, sandbox_id, limits)
                vm.machine = msgspec.structs.replace(vm.machine, cpu=cpu, ram_mb=ram_mb)
                await blocking("write machine", directory.write_machine, vm.machine)
                log.info("sandbox resized live", sandbox_id=sandbox_id, cpu=cpu, ram_mb=ram_mb)
            elif vm.slot is None and not vm.archived:
                pool = await self._open_pool()
                await blocking("grow disk", disk.grow, pool.disk(sandbox_id) / disk.DISK_FILE, disk_gb)
            await blocking("write spec", directory.write_spec, spec)
            vm.spec = spec
            return self._info(vm)

    async def snapshot(self, sandbox_id: str, directory: Path) -> None:
        """A ``vm`` snapshot in ``directory`` (inside the storage pool, for the reflink): a
        booted VM's memory state plus its disk, captured while it is paused (a running one
        continues as soon as both are taken); a stopped one's disk alone."""
        _check_id(sandbox_id)
        async with self._locks[sandbox_id]:
            vm = self._with_disk(sandbox_id)
            pool = await self._open_pool()
            image = pool.disk(sandbox_id) / disk.DISK_FILE
            started = time.perf_counter()
            version = await self._vmm_version()
            files = await blocking("make snapshot subvolume", vm_snapshot.begin, directory)
            machine, memory = vm.machine, None
            if vm.slot is None or machine is None:
                await blocking("copy disk", reflink, image, files / disk.DISK_FILE)
                shape = (vm.spec.cpu, vm.spec.ram_mb)
            else:
                async with self._held(vm):
                    memory = await self._vmm_save(vm, files)
                    await blocking("copy disk", reflink, image, files / disk.DISK_FILE)
                shape = (machine.cpu, machine.ram_mb)
            frozen_ms = ms_since(started)
            seal = functools.partial(
                vm_snapshot.seal,
                pool,
                directory,
                sandbox_id=sandbox_id,
                base=vm.base,
                runtime=self.kind,
                vmm_version=version,
                memory_file=memory,
                shape=shape,
            )
            await blocking("seal snapshot", seal)
            log.info("sandbox snapshotted", sandbox_id=sandbox_id, memory=memory is not None,
                     frozen_ms=frozen_ms, total_ms=ms_since(started))  # fmt: skip

    async def export(self, sandbox_id: str, directory: Path) -> None:
        """The disk image as a portable ``archive`` (tar + zstd, hashed) in ``directory``; a
        running VM is paused only for the reflink of its disk into scratch space."""
        _check_id(sandbox_id)
        async with self._locks[sandbox_id]:
            vm = self._with_disk(sandbox_id)
            pool = await self._open_pool()
            image = pool.disk(sandbox_id) / disk.DISK_FILE
            with pool.scratch() as scratch:
                await blocking("make scratch", scratch.mkdir)
                if vm.slot is not None:
                    async with self._held(vm):
                        await blocking("copy disk", reflink, image, scratch / disk.DISK_FILE)
                else:
                    await blocking("copy disk", reflink, image, scratch / disk.DISK_FILE)
                await blocking(
                    "archive disk", _snapshot.write, scratch, directory, sandbox_id, vm.base, self.kind
                )

    async def remove_host_setup(self) -> None:
        """Remove this instance's bridge, nft table and parent cgroups, and unmount the pool's
        image. Sandboxes must all be destroyed first.

        Raises:
            SandboxConflict: sandboxes still exist.
        """
        async with self._host_lock:
            if self._sandboxes:
                raise SandboxConflict(f"{len(self._sandboxes)} sandboxes still exist")
            await blocking("remove host network", self._network.remove_host)
            await blocking("remove cgroups", cgroup.remove_parent, self.config.cgroup_parent)
            if self._pool is not None and self.config.pool.directory is None:
                await blocking(
                    "unmount pool", _loop.detach_image, self.config.pool.image, self.config.pool.mountpoint
                )
            self._pool = None
            self._host_ready = False

    # implementation --------------------------------------------------------------------------

    async def _create(self, spec: SandboxSpec, snapshot: Path | None) -> SandboxInfo:
        found = None if snapshot is None else await self._read_snapshot(snapshot)
        async with self._locks[spec.id]:
            if spec.id in self._sandboxes:
                raise SandboxConflict(f"sandbox {spec.id} already exists")
            started = time.perf_counter()
            if found is None:
                template = await asyncio.to_thread(self.config.templates.get, spec.template)
            elif found.template != spec.template:
                raise SandboxConflict(f"the snapshot is a {found.template} disk, not {spec.template}")
            else:
                template = await asyncio.to_thread(
                    self.config.templates.get, found.template, content_hash=found.content_hash
                )
            image = await self._image(template)
            vm = Vm(spec, DiskBase(template=template.name, content_hash=template.content_hash))
            directory = self._dir(spec.id)
            undo = Undo(spec.id)
            try:
                await blocking("claim sandbox dir", directory.claim)
                undo.push("remove sandbox dir", functools.partial(remove_tree, directory.path))
                await blocking("lay out", directory.populate, spec, vm.base)
                pool = await self._open_pool()
                undo.push("delete disk", functools.partial(self._drop_disk, spec.id))
                memory = None
                if snapshot is None or found is None:
                    source = await self._import(image)
                    await blocking("create disk", disk.create, pool, spec.id, source, spec.disk_gb)
                else:
                    memory = vm_snapshot.memory_of(snapshot, found)
                    grow = None if memory is not None else spec.disk_gb
                    make = functools.partial(_disk_from_snapshot, snapshot, found, grow)
                    await blocking("disk from snapshot", self._fill_disk, spec.id, make)
                machine = self._machine(spec, image, found if memory is not None else None)
                await self._boot(vm, machine, undo, snapshot if memory is not None else None)
            except BaseException:
                await undo.unwind()
                raise
            self._sandboxes[spec.id] = vm
            log.info("sandbox created", sandbox_id=spec.id, from_memory=snapshot is not None,
                     total_ms=ms_since(started))  # fmt: skip
            return self._info(vm)

    async def _start(self, spec: SandboxSpec) -> SandboxInfo:
        async with self._locks[spec.id]:
            vm = self._with_disk(spec.id)
            if vm.slot is not None:
                raise SandboxConflict(f"sandbox {spec.id} is already booted")
            if spec.template != vm.base.template:
                raise SandboxConflict(f"sandbox {spec.id}'s disk is a {vm.base.template} disk")
            pool = await self._open_pool()
            await blocking("grow disk", disk.grow, pool.disk(spec.id) / disk.DISK_FILE, spec.disk_gb)
            await blocking("write spec", self._dir(spec.id).write_spec, spec)
            vm.spec = spec
            template = await asyncio.to_thread(
                self.config.templates.get, vm.base.template, content_hash=vm.base.content_hash
            )
            image = await self._image(template)
            undo = Undo(spec.id)
            try:
                await self._boot(vm, self._machine(spec, image, None), undo, None)
            except BaseException:
                await undo.unwind()
                raise
            return self._info(vm)

    async def _stop(self, sandbox_id: str) -> SandboxInfo:
        async with self._locks[sandbox_id]:
            vm = self._get(sandbox_id)
            if vm.slot is not None:
                started = time.perf_counter()
                await self._halt(vm, clean=True)
                log.info("sandbox stopped", sandbox_id=sandbox_id, total_ms=ms_since(started))
            return self._info(vm)

    async def _destroy(self, sandbox_id: str) -> None:
        async with self._locks[sandbox_id]:
            vm = self._sandboxes.get(sandbox_id)
            if vm is not None and vm.slot is not None:
                await self._halt(vm, clean=False)
            await blocking("tear down", self._teardown, sandbox_id, None)
            await self._open_pool()
            await blocking("delete disk", self._drop_disk, sandbox_id)
            await blocking("remove sandbox dir", remove_tree, self._dir(sandbox_id).path)
            self._sandboxes.pop(sandbox_id, None)
        self._locks.pop(sandbox_id, None)
        log.info("sandbox destroyed", sandbox_id=sandbox_id)

    async def _restore(self, sandbox_id: str, directory: Path) -> SandboxInfo:
        found = await self._read_snapshot(directory)
        async with self._locks[sandbox_id]:
            vm = self._with_disk(sandbox_id)
            base = DiskBase(template=found.template, content_hash=found.content_hash)
            if base != vm.base:
                raise SandboxConflict(f"the snapshot is not of sandbox {sandbox_id}'s disk")
            started = time.perf_counter()
            if vm.slot is not None:
                await self._halt(vm, clean=False)
            memory = vm_snapshot.memory_of(directory, found)
            grow = None if memory is not None else vm.spec.disk_gb
            make = functools.partial(_disk_from_snapshot, directory, found, grow)
            await self._open_pool()
            await blocking("replace disk", self._replace_disk, sandbox_id, make)
            await blocking("drop replaced disk", self._repair_disk, sandbox_id)
            template = await asyncio.to_thread(
                self.config.templates.get, vm.base.template, content_hash=vm.base.content_hash
            )
            image = await self._image(template)
            undo = Undo(sandbox_id)
            try:
                machine = self._machine(vm.spec, image, found if memory is not None else None)
                await self._boot(vm, machine, undo, directory if memory is not None else None)
            except BaseException:
                await undo.unwind()
                raise
            log.info("sandbox restored", sandbox_id=sandbox_id, memory=memory is not None,
                     total_ms=ms_since(started))  # fmt: skip
            return self._info(vm)

    async def _archive(self, sandbox_id: str) -> SandboxInfo:
        async with self._locks[sandbox_id]:
            vm = self._get(sandbox_id)
            if vm.slot is not None:
                raise SandboxConflict(f"sandbox {sandbox_id} is booted; only a stopped one is archived")
            if not vm.archived:
                await blocking("mark archived", self._dir(sandbox_id).archived.touch)
                vm.archived = True
                await self._open_pool()
                await blocking("drop disk", self._drop_disk, sandbox_id)
            return self._info(vm)

    async def _unarchive(self, sandbox_id: str, directory: Path) -> SandboxInfo:
        found = await blocking("read archive", manifest.read, directory, ("archive",))
        async with self._locks[sandbox_id]:
            vm = self._get(sandbox_id)
            if not vm.archived:
                raise SandboxConflict(f"sandbox {sandbox_id} is not archived")
            base = DiskBase(template=found.template, content_hash=found.content_hash)
            if base != vm.base or found.sandbox_id != sandbox_id:
                raise SandboxConflict(f"the archive in {directory} is not sandbox {sandbox_id}'s disk")
            pool = await self._open_pool()
            await blocking(
                "restore disk", self._fill_disk, sandbox_id, functools.partial(_extract, directory)
            )
            await blocking("commit disk", _btrfs.sync, pool.disk(sandbox_id))
            await blocking("unmark archived", self._dir(sandbox_id).archived.unlink, True)
            vm.archived = False
            return self._info(vm)

    async def _boot(self, vm: Vm, machine: Machine, undo: Undo, snapshot: Path | None) -> None:
        """Network, cgroup, the VMM; then the guest cold-booted to its agent's first answer, or
        (``snapshot``: a verified memory snapshot's directory) its memory loaded and run, the
        agent waited for, and a new identity given. Every resource registers its removal in
        ``undo`` before it exists; the caller unwinds it on failure."""
        spec, directory = vm.spec, self._dir(vm.spec.id)
        files = directory.files
        try:
            await self._ensure_host()
            await self._open_pool()
            slot = self._network.slots.allocate()
            undo.push("release slot", functools.partial(self._network.slots.release, slot))
            await blocking("create network", network.create, self._network, spec.id, slot, undo)
            undo.push("remove cgroup", functools.partial(cgroup.remove, self.config.cgroup_parent, spec.id))
            limits = cgroup.VmLimits(
                cpu=machine.cpu,
                memory_mb=machine.ram_mb + self.config.vmm_overhead_mb,
                pids=self.config.pids_max,
            )
            await blocking("create cgroup", cgroup.create, self.config.cgroup_parent, spec.id, limits)
            undo.push("clear boot record", directory.clear_boot)
            await blocking("write boot record", directory.write_boot, BootRecord(slot=slot))
            await blocking("write machine", directory.write_machine, machine)
            address = f"{self._network.address(slot)}/{self._network.subnet.prefixlen}"
            params = vm_contract.BootParams(
                hostname=spec.id,
                address=address,
                gateway=str(self._network.gateway),
                dns=self.config.dns,
                channel=self.channel,
                configure=bool(spec.env),
            )
            argv = self._vmm_argv(vm, machine, params, restoring=snapshot is not None)
            netns = self._network.netns_path(spec.id)
            undo.push("kill a started VMM", functools.partial(process.kill_strays, files.run))
            popen = await blocking("start the VMM", process.spawn, netns, argv, files.stderr)
            undo.push("kill the VMM", functools.partial(_kill, popen))
            await blocking(
                "move the VMM into its cgroup", cgroup.move, self.config.cgroup_parent, spec.id, popen.pid
            )
            vmm = process.watch(popen)
            record = process.VmmRecord(pid=popen.pid, start_time=process.start_time(popen.pid) or 0)
            await blocking("write vmm record", directory.write_vmm, record)
            await or_died(self._vmm_ready(vm), vmm, directory, "starting the VMM")
            if snapshot is None:
                await or_died(self._vmm_boot(vm, machine, params), vmm, directory, "booting the VM")
                if spec.env:
                    configure = vm_contract.Configure(env=spec.env)
                    await or_died(self._configure(files.agent, configure), vmm, directory, "configuring")
                await or_died(self._wait_for_agent(files.agent), vmm, directory, "booting")
            else:
                files_dir = vm_snapshot.files_of(snapshot)
                restoring = self._vmm_restore(vm, machine, files_dir, undo)
                await or_died(restoring, vmm, directory, "restoring memory")
                await or_died(self._wait_for_agent(files.agent), vmm, directory, "waking the agent")
                refresh = new_identity(
                    spec.id, address=address, gateway=str(self._network.gateway), mac=machine.mac
                )
                await or_died(self._refresh(files.agent, refresh), vmm, directory, "refreshing the identity")
        except BaseException:
            await self._vmm_release(vm)
            raise
        vm.slot, vm.paused, vm.machine = slot, False, machine
        self._watch(vm, vmm)

    async def _wait_for_agent(self, agent: Path) -> None:
        try:
            client = await wait_ready(agent, timeout=self.config.boot_timeout)
        except AgentUnavailable as exc:
            raise RuntimeFailure(f"sandbox agent did not come up: {exc}") from exc
        await client.close()

    async def _configure(self, agent: Path, message: vm_contract.Configure) -> None:
        """Send the agent's environment; vminit accepts it once its channel runs, so retry
        until the boot deadline."""
        deadline = time.monotonic() + self.config.boot_timeout
        while True:
            try:
                await control.send(agent, message, timeout=max(0.1, deadline - time.monotonic()))
                return
            except AgentUnavailable:
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.1)

    async def _refresh(self, agent: Path, refresh: vm_contract.IdentityRefresh) -> None:
        """The identity refresh, then the clock once more: the refresh's was read before it
        could be delivered, which a loaded host can make a second late."""
        async with asyncio.timeout(self.config.boot_timeout):
            await refresh_identity(agent, refresh)
            await set_clock(agent)

    async def _set_clock(self, vm: Vm) -> None:
        """The resumed guest's clock set to the host's: it stood still while the VM was paused.
        A guest that does not answer keeps running with its clock behind (logged)."""
        try:
            await set_clock(self.agent_socket(vm.spec.id), timeout=_CLOCK_TIMEOUT)
        except (HostError, OSError) as exc:
            log.warning("the resumed guest's clock was not set", sandbox_id=vm.spec.id, error=str(exc))

    async def _halt(self, vm: Vm, *, clean: bool) -> None:
        """End the VM (a clean guest poweroff first when ``clean``: the VMM exits with its
        guest) and free its network and cgroup; the disk stays. Forgetting ``vm.vmm`` first
        tells the exit watcher it was us."""
        vmm, slot = vm.vmm, vm.slot
        vm.vmm = None
        sandbox_id = vm.spec.id
        if clean and vmm is not None:
            try:
                if vm.paused:
                    await self._vmm_resume(vm)
                    vm.paused = False
                await control.send(
                    self.agent_socket(sandbox_id), vm_contract.Poweroff(), timeout=self.config.stop_timeout
                )
                async with asyncio.timeout(self.config.stop_timeout):
                    await asyncio.shield(vmm.exited)
            except (HostError, OSError, TimeoutError) as exc:
                log.warning("clean poweroff failed; killing the VM", sandbox_id=sandbox_id, error=str(exc))
        await self._vmm_release(vm)
        if vmm is not None:
            await blocking("kill the VMM", vmm.kill)
        await blocking("tear down", self._teardown, sandbox_id, slot)
        vm.slot, vm.paused = None, False
        if slot is not None:
            self._network.slots.release(slot)

    def _teardown(self, sandbox_id: str, slot: int | None) -> None:
        """Remove what a boot creates, by name; absent is fine. The cgroup goes first: removing
        it kills a VMM still in it."""
        directory = self._dir(sandbox_id)
        if slot is None and (record := directory.read_boot()) is not None:
            slot = record.slot
        process.kill_strays(directory.files.run)
        cgroup.remove(self.config.cgroup_parent, sandbox_id)
        self._network.delete_interfaces(sandbox_id, slot)
        if directory.path.exists():
            directory.clear_boot()

    def _watch(self, vm: Vm, vmm: process.Vmm) -> None:
        vm.vmm = vmm
        vmm.exited.add_done_callback(functools.partial(self._on_exit, vm, vmm))

    def _on_exit(self, vm: Vm, vmm: process.Vmm, _done: asyncio.Future[int | None]) -> None:
        """The VMM ended. Unless we ended it, the VM died on its own (the guest powered off or
        panicked, the VMM crashed, the OOM killer chose it): free its resources, report it
        stopped."""
        if vm.vmm is not vmm:
            return
        task = asyncio.ensure_future(self._reap_dead(vm, vmm))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _reap_dead(self, vm: Vm, vmm: process.Vmm) -> None:
        async with self._locks[vm.spec.id]:
            if vm.vmm is not vmm:
                return
            tail = await asyncio.to_thread(self._dir(vm.spec.id).console_tail)
            log.warning("sandbox died", sandbox_id=vm.spec.id, console=tail[-500:])
            await self._halt(vm, clean=False)

    @contextlib.asynccontextmanager
    async def _held(self, vm: Vm) -> AsyncIterator[None]:
        """The booted VM paused for a consistent copy of its memory and disk; a running VM runs
        again afterwards, a paused one stays paused. The marker tells a recovering hostd that
        this pause was ours, to undo."""
        marker = self._dir(vm.spec.id).held
        running = not vm.paused
        if running:
            await blocking("mark held", marker.touch)
            await self._vmm_pause(vm)
        try:
            yield
        finally:
            if running:
                await self._vmm_resume(vm)
                await blocking("unmark held", marker.unlink, True)
                await self._set_clock(vm)

    async def _read_snapshot(self, directory: Path) -> manifest.Manifest:
        """The verified manifest of a snapshot this VMM can use, refused before anything starts
        if it holds another VMM's (or version's) memory."""
        found = await blocking("read snapshot", manifest.read, directory, ("vm",))
        manifest.check_restorable(found, self.kind, await self._vmm_version())
        return found

    async def _vmm_version(self) -> str:
        if self._version is None:
            self._version = await blocking("ask the VMM's version", self._read_vmm_version)
        return self._version

    def _machine(self, spec: SandboxSpec, image: VmImage, snapshot: manifest.Manifest | None) -> Machine:
        """The VM shape to boot: the spec's, or a memory snapshot's (which must match it)."""
        cpu, ram_mb = spec.cpu, spec.ram_mb
        if snapshot is not None and snapshot.vm is not None:
            cpu, ram_mb = snapshot.vm.cpu, snapshot.vm.ram_mb
        return Machine(
            cpu=cpu,
            ram_mb=ram_mb,
            kernel=str(self._kernel(image)),
            initrd=str(image.initrd),
            mac=network.mac_for(spec.id),
            accel=self.config.accel,
            channel=self.channel,
        )

    async def prepare(self, template: Template) -> None:
        """Build ``template``'s guest image and import its rootfs into the pool now."""
        await self._import(await self._image(template))

    async def _image(self, template: Template) -> VmImage:
        return await blocking("guest image", self._images.ensure, template)

    async def _import(self, image: VmImage) -> Path:
        async with self._import_lock:
            pool = await self._open_pool()
            return await blocking("import rootfs", disk.import_rootfs, pool, image.key, image.rootfs)

    # disks -----------------------------------------------------------------------------------

    async def _open_pool(self) -> StoragePool:
        async with self._host_lock:
            if self._pool is None:
                self._pool = await blocking("open storage pool", StoragePool.open, self.config.pool)
            return self._pool

    def _disk_image(self, sandbox_id: str) -> Path:
        """The sandbox's disk image (the pool is open once anything boots)."""
        assert self._pool is not None, "the pool is opened before any disk is touched"
        return self._pool.disk(sandbox_id) / disk.DISK_FILE

    def _fill_disk(self, sandbox_id: str, make: Callable[[Path], None]) -> None:
        """Give a sandbox without a disk the one ``make`` creates (staged, then renamed)."""
        assert self._pool is not None, "the pool is opened before any disk is touched"
        pool = self._pool
        target = pool.disk(sandbox_id)
        staging = target.with_name(target.name + _NEW)
        pool.delete(staging)
        make(staging)
        os.rename(staging, target)

    def _replace_disk(self, sandbox_id: str, make: Callable[[Path], None]) -> None:
        """Swap the disk for the one ``make`` creates; the old one is moved aside first, so a
        crash leaves a whole disk for ``_repair_disk`` to put back."""
        assert self._pool is not None, "the pool is opened before any disk is touched"
        pool = self._pool
        target = pool.disk(sandbox_id)
        staging, old = target.with_name(target.name + _NEW), target.with_name(target.name + _OLD)
        pool.delete(staging)
        make(staging)
        pool.delete(old)
        os.rename(target, old)
        os.rename(staging, target)

    def _repair_disk(self, sandbox_id: str) -> None:
        """Finish or roll back a ``_replace_disk`` that a crash interrupted."""
        if self._pool is None:
            return
        pool = self._pool
        target = pool.disk(sandbox_id)
        staging, old = target.with_name(target.name + _NEW), target.with_name(target.name + _OLD)
        if not os.path.lexists(target) and os.path.lexists(old):
            os.rename(old, target)
        pool.delete(staging)
        pool.delete(old)

    def _drop_disk(self, sandbox_id: str) -> None:
        if self._pool is None:
            return
        pool = self._pool
        target = pool.disk(sandbox_id)
        for path in (target.with_name(target.name + _NEW), target.with_name(target.name + _OLD), target):
            pool.delete(path)

    async def _ensure_host(self) -> None:
        async with self._host_lock:
            if not self._host_ready:
                await blocking("set up host network", self._network.ensure_host)
                self._host_ready = True

    def _dir(self, sandbox_id: str) -> VmDir:
        return VmDir(self.config.state_dir / "sandboxes" / sandbox_id)

    def _get(self, sandbox_id: str) -> Vm:
        vm = self._sandboxes.get(sandbox_id)
        if vm is None:
            raise SandboxNotFound(f"no sandbox {sandbox_id} on this host")
        return vm

    def _with_disk(self, sandbox_id: str) -> Vm:
        vm = self._get(sandbox_id)
        if vm.archived:
            raise SandboxConflict(f"sandbox {sandbox_id} is archived; unarchive it first")
        return vm

    def _booted(self, sandbox_id: str) -> Vm:
        vm = self._get(sandbox_id)
        if vm.slot is None:
            raise SandboxConflict(f"sandbox {sandbox_id} is stopped")
        return vm

    def _info(self, vm: Vm) -> SandboxInfo:
        if vm.archived:
            return SandboxInfo(id=vm.spec.id, state="archived")
        if vm.slot is None:
            return SandboxInfo(id=vm.spec.id, state="stopped")
        state: Literal["running", "paused"] = "paused" if vm.paused else "running"
        return SandboxInfo(id=vm.spec.id, state=state, ip=str(self._network.address(vm.slot)))


async def or_died(step: Awaitable[object], vmm: process.Vmm, directory: VmDir, what: str) -> None:
    """Await ``step``, failing fast (with the console's tail) if the VMM exits first."""
    task = asyncio.ensure_future(step)
    exited = vmm.exited
    waiting: set[asyncio.Future[Any]] = {task, exited}
    try:
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if task.done() and not task.cancelled() and task.exception() is None:
        return
    tail = await asyncio.to_thread(directory.console_tail)
    if exited.done():
        raise RuntimeFailure(f"the VM exited while {what} (status {exited.result()}): {tail[-1500:]}")
    try:
        task.result()
    except HostError as exc:
        raise RuntimeFailure(f"{what}: {exc}; console: {tail[-1500:]}") from exc


def _disk_from_snapshot(directory: Path, found: manifest.Manifest, grow: int | None, target: Path) -> None:
    """A new disk subvolume at ``target`` holding a reflink of the snapshot's disk image,
    grown to ``grow`` GB unless None (a memory snapshot's disk keeps its size: the guest's
    kernel has the filesystem mounted)."""
    _btrfs.create(target)
    reflink(vm_snapshot.disk_of(directory, found), target / disk.DISK_FILE)
    if grow is not None:
        disk.grow(target / disk.DISK_FILE, grow)


def _extract(directory: Path, target: Path) -> None:
    """A new disk subvolume at ``target`` from an ``archive`` of one (holes punched back)."""
    _btrfs.create(target)
    _snapshot.extract(directory, target)
    image = target / disk.DISK_FILE
    if not image.is_file():
        raise RuntimeFailure(f"the archive in {directory} holds no {disk.DISK_FILE}")
    subprocess.run(["fallocate", "--dig-holes", str(image)], check=False, capture_output=True)


def reflink(source: Path, dest: Path) -> None:
    """A copy-on-write copy of ``source`` at ``dest`` (same filesystem; blocking)."""
    done = subprocess.run(
        ["cp", "--reflink=always", str(source), str(dest)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeFailure(f"copying {source.name}: {done.stderr.strip()}")


def _kill(popen: subprocess.Popen[bytes]) -> None:
    """SIGKILL and reap a VMM this hostd started (an undo step)."""
    if popen.poll() is None:
        popen.kill()
    popen.wait()


def ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


async def blocking(what: str, fn: Callable[..., T], *args: object) -> T:
    """Run a blocking step in a thread, turning OS-level failures into ``RuntimeFailure``."""
    try:
        return await asyncio.to_thread(fn, *args)
    except HostError:
        raise
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        raise RuntimeFailure(f"{what}: {exc}") from exc


def _check_id(sandbox_id: str) -> None:
    if not _ID_RE.fullmatch(sandbox_id):
        raise SandboxNotFound(f"no sandbox {sandbox_id!r}")


def _check_spec(spec: SandboxSpec) -> None:
    if not _ID_RE.fullmatch(spec.id):
        raise RuntimeFailure(f"sandbox id {spec.id!r} must be 1-63 letters, digits, '-' or '_'")
    if spec.cpu < 1 or spec.ram_mb < 64:
        raise RuntimeFailure("a VM sandbox needs at least 1 CPU and 64 MB of memory")
