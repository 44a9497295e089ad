"""The QEMU runtime: every sandbox is a ``qemu-system-x86_64 -M microvm`` VM.

A sandbox here is

* a disk: a raw ext4 image in a subvolume of the storage pool, a reflink of its guest image's
  rootfs grown to ``disk_gb`` (``hosts/vm/disk.py``);
* a network namespace whose veth sits on the instance's host bridge like an OCI sandbox's
  (the same nftables isolation and NAT), holding a bridge and the TAP QEMU uses
  (``hosts/vm/network.py``); the guest holds the sandbox's address;
* a cgroup around QEMU: memory = guest RAM + VMM overhead, CPU and pids (``hosts/vm/cgroup.py``);
* one QEMU process (``launcher``), started in that netns and cgroup, with QMP, the serial
  console and the agent's virtio-serial port as Unix sockets in the sandbox's run directory.
  hostd's ``SerialMuxer`` turns that one port into the agent socket every backend exposes.

Lifecycle. ``create`` boots and returns once the agent answers. ``stop`` asks vminit to power
off (``contracts.vm.Poweroff``: agent stopped, disk synced and unmounted) and kills QEMU if it
has not exited by the deadline; the disk stays. ``pause``/``resume`` are QMP ``stop``/``cont``.
``snapshot`` stops the vCPUs, streams the VM's state to ``memory`` in the snapshot directory
(QMP ``migrate`` to ``exec:cat``), reflinks the disk image next to it and lets the VM run on;
the manifest (``hosts/runtime/manifest.py``, kind ``vm``) hashes both and records QEMU's
version. ``restore`` and ``create`` from a snapshot start a new QEMU with the snapshot's disk
copy and ``-incoming defer``, load the memory (``migrate-incoming``), ``cont``, then give the
guest a new identity (hostname, machine id, boot id, entropy, clock, address): a running
process survives, and a fork is a machine of its own. ``resize`` is recorded and applied at
the next boot (no live resize); the disk grows while the sandbox is stopped. ``export`` writes
the disk image as a tar + zstd ``archive`` (what archives are made of); ``archive`` drops the
disk of a stopped sandbox, ``unarchive`` puts it back.

QEMU outlives hostd: ``recover`` adopts every VM whose process still runs (pid and start time
in ``run/vmm.json``) and restarts its muxer; everything else is torn down by name.

Concurrency and cancellation as in the OCI runtime: one lock per sandbox, lifecycle
operations shielded from the caller's cancellation, every create step undone on failure.
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
from contracts.host import SandboxInfo, SandboxSpec
from hosts.agent_client import AgentClient, wait_ready
from hosts.errors import AgentUnavailable, HostError, RuntimeFailure, SandboxConflict, SandboxNotFound
from hosts.runtime import _snapshot, manifest
from hosts.runtime._channel import SerialMuxer
from hosts.runtime._layout import BootRecord, DiskBase
from hosts.runtime._mounts import remove_tree
from hosts.runtime._network import Network
from hosts.runtime._undo import Undo
from hosts.runtime.base import Capabilities
from hosts.runtime.qemu import launcher, process
from hosts.runtime.qemu._layout import VmDir
from hosts.runtime.qemu.config import QemuConfig
from hosts.runtime.qemu.launcher import Machine
from hosts.runtime.qemu.qmp import Qmp
from hosts.storage import _btrfs, _loop
from hosts.storage.pool import StoragePool
from hosts.templates import Template
from hosts.vm import cgroup, control, disk, network
from hosts.vm import snapshot as vm_snapshot
from hosts.vm.identity import new_identity, refresh_identity
from hosts.vm.images import VmImage, VmImageStore

log = structlog.get_logger("hosts.runtime")

T = TypeVar("T")

_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
_MEMORY = "memory"
"""The VM's migration stream in a snapshot directory."""
_NEW, _OLD = ".new", ".old"
_MIGRATE_BANDWIDTH = 8 * 2**30
"""Bytes per second QEMU may stream a snapshot at (its default, 32 MiB/s, would take 8 s
for 256 MiB; the stream goes to a local file)."""
_POLL = 0.01
_QMP_TIMEOUT = 30.0
_RUNTIME = "qemu"


def _capabilities() -> Capabilities:
    fields: dict[str, bool] = {"memory_snapshot": True, "live_resize": False}
    if "fork" in Capabilities.__struct_fields__:
        fields["fork"] = True
    return Capabilities(**fields)


@dataclass(eq=False)
class _Vm:
    spec: SandboxSpec
    base: DiskBase
    slot: int | None = None
    """The network slot while booted; None when stopped."""
    paused: bool = False
    archived: bool = False
    vmm: process.Vmm | None = None
    """The QEMU process while booted; None when stopped (or being stopped on purpose)."""
    muxer: SerialMuxer | None = None
    machine: Machine | None = None


class QemuRuntime:
    """``SandboxRuntime`` on QEMU microVMs (see the module doc)."""

    kind = _RUNTIME
    capabilities = _capabilities()

    def __init__(self, config: QemuConfig) -> None:
        self.config = config
        self._network = Network(config.bridge, config.subnet, egress=config.egress)
        self._images = VmImageStore(config.image_cache, config.guest_dir)
        self._pool: StoragePool | None = None
        self._sandboxes: dict[str, _Vm] = {}
        self._locks: collections.defaultdict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)
        self._host_ready = False
        self._host_lock = asyncio.Lock()
        self._import_lock = asyncio.Lock()
        self._version: str | None = None
        self._background: set[asyncio.Task[None]] = set()

    # inventory -------------------------------------------------------------------------------

    def list(self) -> list[SandboxInfo]:
        return [self._info(vm) for _, vm in sorted(self._sandboxes.items())]

    def spec(self, sandbox_id: str) -> SandboxSpec:
        _check_id(sandbox_id)
        return self._get(sandbox_id).spec

    def agent_socket(self, sandbox_id: str) -> Path:
        _check_id(sandbox_id)
        return self._dir(sandbox_id).files.agent

    async def disk_used_bytes(self, sandbox_id: str) -> int:
        """The bytes the sandbox's disk image references in the pool (its template's shared
        blocks included, like a real disk's used space); 0 when archived. A running guest is
        asked to ``sync`` first, so writes still in its page cache count."""
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
        return await _blocking("measure disk", pool.usage, pool.disk(sandbox_id))

    async def recover(self) -> builtins.list[SandboxInfo]:
        """Adopt what a previous hostd left: VMs whose QEMU still runs are running or paused
        (as QMP says), with a new muxer on their serial port; the others are stopped, and what
        a crash can leave (a QEMU of a sandbox whose records are gone, netns, veths, cgroups,
        half-made directories and disks) is removed."""
        await self._ensure_host()
        await self._open_pool()
        found = await _blocking("recover", self._scan)
        for vm, record in found:
            self._sandboxes[vm.spec.id] = vm
            if record is None:
                continue
            files = self._dir(vm.spec.id).files
            try:
                vmm = process.adopt(record, files.run)
                async with self._qmp(vm.spec.id) as qmp:
                    status = (await qmp.execute("query-status"))["status"]
                muxer = SerialMuxer(files.serial, files.agent)
                await muxer.start()
            except (ProcessLookupError, HostError, OSError) as exc:
                log.warning("running VM not adopted", sandbox_id=vm.spec.id, error=str(exc))
                vm.slot = None
                await _blocking("tear down", self._teardown, vm.spec.id, None)
                continue
            assert vm.slot is not None
            self._network.slots.claim(vm.slot)
            held = self._dir(vm.spec.id).held
            if held.exists() and status != "running":
                # A snapshot held it stopped and the hostd taking it died: let it run again.
                async with self._qmp(vm.spec.id) as qmp:
                    await qmp.execute("cont")
                status = "running"
            held.unlink(missing_ok=True)
            vm.paused, vm.muxer = status != "running", muxer
            self._watch(vm, vmm)
        running = sum(vm.slot is not None for vm in self._sandboxes.values())
        log.info("recovered", running=running, total=len(found))
        return self.list()

    def _scan(self) -> builtins.list[tuple[_Vm, process.VmmRecord | None]]:
        """Read every sandbox directory back, with the QEMU record of each booted one; clean up
        the rest."""
        root = self.config.state_dir / "sandboxes"
        root.mkdir(parents=True, exist_ok=True)
        found: builtins.list[tuple[_Vm, process.VmmRecord | None]] = []
        for path in sorted(root.iterdir()):
            directory = VmDir(path)
            try:
                vm = _Vm(directory.read_spec(), directory.read_base())
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
        """Let go of every VM without touching it, as this hostd's death would: close the
        muxers (freeing the serial ports for a successor) and stop watching the processes.
        For tests that start a successor in the same process."""
        for vm in self._sandboxes.values():
            if vm.muxer is not None:
                task = asyncio.ensure_future(vm.muxer.close())
                self._background.add(task)
                task.add_done_callback(self._background.discard)
                vm.muxer = None
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
                async with self._qmp(sandbox_id) as qmp:
                    await qmp.execute("stop")
                vm.paused = True
            return self._info(vm)

    async def resume(self, sandbox_id: str) -> SandboxInfo:
        _check_id(sandbox_id)
        async with self._locks[sandbox_id]:
            vm = self._booted(sandbox_id)
            if vm.paused:
                async with self._qmp(sandbox_id) as qmp:
                    await qmp.execute("cont")
                vm.paused = False
            return self._info(vm)

    async def resize(self, sandbox_id: str, cpu: int, ram_mb: int, disk_gb: int) -> SandboxInfo:
        """Record new limits, applied at the next boot (``live_resize`` is False); a stopped
        sandbox's disk grows now (a disk never shrinks)."""
        _check_id(sandbox_id)
        if cpu < 1 or ram_mb < 1 or disk_gb < 1:
            raise RuntimeFailure("a sandbox needs at least 1 CPU, 1 MB of memory and 1 GB of disk")
        async with self._locks[sandbox_id]:
            vm = self._get(sandbox_id)
            spec = msgspec.structs.replace(vm.spec, cpu=cpu, ram_mb=ram_mb, disk_gb=disk_gb)
            if vm.slot is None and not vm.archived:
                pool = await self._open_pool()
                await _blocking("grow disk", disk.grow, pool.disk(sandbox_id) / disk.DISK_FILE, disk_gb)
            await _blocking("write spec", self._dir(sandbox_id).write_spec, spec)
            vm.spec = spec
            return self._info(vm)

    async def snapshot(self, sandbox_id: str, directory: Path) -> None:
        """A ``vm`` snapshot in ``directory`` (inside the storage pool, for the reflink): a
        booted VM's memory and device state plus its disk, captured with the vCPUs stopped (a
        running one continues as soon as both are taken); a stopped one's disk alone."""
        _check_id(sandbox_id)
        async with self._locks[sandbox_id]:
            vm = self._with_disk(sandbox_id)
            pool = await self._open_pool()
            image = pool.disk(sandbox_id) / disk.DISK_FILE
            started = time.perf_counter()
            files = await _blocking("make snapshot subvolume", vm_snapshot.begin, directory)
            machine = vm.machine
            memory: Path | None = None
            if vm.slot is None or machine is None:
                await _blocking("copy disk", _reflink, image, files / disk.DISK_FILE)
                machine = None
            else:
                memory = files / _MEMORY
                async with self._held(vm) as qmp:
                    await _migrate_out(qmp, memory)
                    await _blocking("copy disk", _reflink, image, files / disk.DISK_FILE)
            frozen_ms = _ms_since(started)
            version = await self._vmm_version()
            shape = (machine.cpu, machine.ram_mb) if machine else (vm.spec.cpu, vm.spec.ram_mb)
            seal = functools.partial(
                vm_snapshot.seal,
                pool,
                directory,
                sandbox_id=sandbox_id,
                base=vm.base,
                runtime=_RUNTIME,
                vmm_version=version,
                memory_file=memory.name if memory is not None else None,
                shape=shape,
            )
            await _blocking("seal snapshot", seal)
            log.info("sandbox snapshotted", sandbox_id=sandbox_id, memory=memory is not None,
                     frozen_ms=frozen_ms, total_ms=_ms_since(started))  # fmt: skip

    async def export(self, sandbox_id: str, directory: Path) -> None:
        """The disk image as a portable ``archive`` (tar + zstd, hashed) in ``directory``; a
        running VM is stopped only for the reflink of its disk into scratch space."""
        _check_id(sandbox_id)
        async with self._locks[sandbox_id]:
            vm = self._with_disk(sandbox_id)
            pool = await self._open_pool()
            image = pool.disk(sandbox_id) / disk.DISK_FILE
            with pool.scratch() as scratch:
                await _blocking("make scratch", scratch.mkdir)
                if vm.slot is not None:
                    async with self._held(vm):
                        await _blocking("copy disk", _reflink, image, scratch / disk.DISK_FILE)
                else:
                    await _blocking("copy disk", _reflink, image, scratch / disk.DISK_FILE)
                await _blocking(
                    "archive disk", _snapshot.write, scratch, directory, sandbox_id, vm.base, _RUNTIME
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
            await _blocking("remove host network", self._network.remove_host)
            await _blocking("remove cgroups", cgroup.remove_parent, self.config.cgroup_parent)
            if self._pool is not None and self.config.pool.directory is None:
                await _blocking(
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
            vm = _Vm(spec, DiskBase(template=template.name, content_hash=template.content_hash))
            directory = self._dir(spec.id)
            undo = Undo(spec.id)
            try:
                await _blocking("claim sandbox dir", directory.claim)
                undo.push("remove sandbox dir", functools.partial(remove_tree, directory.path))
                await _blocking("lay out", directory.populate, spec, vm.base)
                pool = await self._open_pool()
                undo.push("delete disk", functools.partial(self._drop_disk, spec.id))
                memory = None
                if snapshot is None or found is None:
                    source = await self._import(image)
                    await _blocking("create disk", disk.create, pool, spec.id, source, spec.disk_gb)
                else:
                    memory = vm_snapshot.memory_of(snapshot, found)
                    grow = None if memory is not None else spec.disk_gb
                    make = functools.partial(_disk_from_snapshot, snapshot, found, grow)
                    await _blocking("disk from snapshot", self._fill_disk, spec.id, make)
                machine = self._machine(spec, image, found if memory is not None else None)
                await self._boot(vm, machine, undo, memory)
            except BaseException:
                await undo.unwind()
                raise
            self._sandboxes[spec.id] = vm
            log.info("sandbox created", sandbox_id=spec.id, from_memory=snapshot is not None,
                     total_ms=_ms_since(started))  # fmt: skip
            return self._info(vm)

    async def _start(self, spec: SandboxSpec) -> SandboxInfo:
        async with self._locks[spec.id]:
            vm = self._with_disk(spec.id)
            if vm.slot is not None:
                raise SandboxConflict(f"sandbox {spec.id} is already booted")
            if spec.template != vm.base.template:
                raise SandboxConflict(f"sandbox {spec.id}'s disk is a {vm.base.template} disk")
            pool = await self._open_pool()
            await _blocking("grow disk", disk.grow, pool.disk(spec.id) / disk.DISK_FILE, spec.disk_gb)
            await _blocking("write spec", self._dir(spec.id).write_spec, spec)
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
                log.info("sandbox stopped", sandbox_id=sandbox_id, total_ms=_ms_since(started))
            return self._info(vm)

    async def _destroy(self, sandbox_id: str) -> None:
        async with self._locks[sandbox_id]:
            vm = self._sandboxes.get(sandbox_id)
            if vm is not None and vm.slot is not None:
                await self._halt(vm, clean=False)
            await _blocking("tear down", self._teardown, sandbox_id, None)
            await self._open_pool()
            await _blocking("delete disk", self._drop_disk, sandbox_id)
            await _blocking("remove sandbox dir", remove_tree, self._dir(sandbox_id).path)
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
            await _blocking("replace disk", self._replace_disk, sandbox_id, make)
            await _blocking("drop replaced disk", self._repair_disk, sandbox_id)
            template = await asyncio.to_thread(
                self.config.templates.get, vm.base.template, content_hash=vm.base.content_hash
            )
            image = await self._image(template)
            undo = Undo(sandbox_id)
            try:
                machine = self._machine(vm.spec, image, found if memory is not None else None)
                await self._boot(vm, machine, undo, memory)
            except BaseException:
                await undo.unwind()
                raise
            log.info("sandbox restored", sandbox_id=sandbox_id, memory=memory is not None,
                     total_ms=_ms_since(started))  # fmt: skip
            return self._info(vm)

    async def _archive(self, sandbox_id: str) -> SandboxInfo:
        async with self._locks[sandbox_id]:
            vm = self._get(sandbox_id)
            if vm.slot is not None:
                raise SandboxConflict(f"sandbox {sandbox_id} is booted; only a stopped one is archived")
            if not vm.archived:
                await _blocking("mark archived", self._dir(sandbox_id).archived.touch)
                vm.archived = True
                await self._open_pool()
                await _blocking("drop disk", self._drop_disk, sandbox_id)
            return self._info(vm)

    async def _unarchive(self, sandbox_id: str, directory: Path) -> SandboxInfo:
        found = await _blocking("read archive", manifest.read, directory, ("archive",))
        async with self._locks[sandbox_id]:
            vm = self._get(sandbox_id)
            if not vm.archived:
                raise SandboxConflict(f"sandbox {sandbox_id} is not archived")
            base = DiskBase(template=found.template, content_hash=found.content_hash)
            if base != vm.base or found.sandbox_id != sandbox_id:
                raise SandboxConflict(f"the archive in {directory} is not sandbox {sandbox_id}'s disk")
            pool = await self._open_pool()
            await _blocking(
                "restore disk", self._fill_disk, sandbox_id, functools.partial(_extract, directory)
            )
            await _blocking("commit disk", _btrfs.sync, pool.disk(sandbox_id))
            await _blocking("unmark archived", self._dir(sandbox_id).archived.unlink, True)
            vm.archived = False
            return self._info(vm)

    async def _boot(self, vm: _Vm, machine: Machine, undo: Undo, memory: Path | None) -> None:
        """Network, cgroup, QEMU, muxer; then the agent's first answer (a cold boot) or the
        memory loaded, resumed and given a new identity (``memory``). Every resource registers
        its removal in ``undo`` before it exists; the caller unwinds it on failure."""
        spec, directory = vm.spec, self._dir(vm.spec.id)
        files = directory.files
        muxer: SerialMuxer | None = None
        try:
            await self._ensure_host()
            pool = await self._open_pool()
            slot = self._network.slots.allocate()
            undo.push("release slot", functools.partial(self._network.slots.release, slot))
            await _blocking("create network", network.create, self._network, spec.id, slot, undo)
            undo.push("remove cgroup", functools.partial(cgroup.remove, self.config.cgroup_parent, spec.id))
            limits = cgroup.VmLimits(
                cpu=machine.cpu,
                memory_mb=machine.ram_mb + self.config.vmm_overhead_mb,
                pids=self.config.pids_max,
            )
            await _blocking("create cgroup", cgroup.create, self.config.cgroup_parent, spec.id, limits)
            undo.push("clear boot record", directory.clear_boot)
            await _blocking("write boot record", directory.write_boot, BootRecord(slot=slot))
            await _blocking("write machine", directory.write_machine, machine)
            address = self._network.address(slot)
            params = vm_contract.BootParams(
                hostname=spec.id,
                address=f"{address}/{self._network.subnet.prefixlen}",
                gateway=str(self._network.gateway),
                dns=self.config.dns,
                channel="serial",
                configure=bool(spec.env),
            )
            argv = launcher.argv(
                self.config.binary,
                machine,
                files,
                disk=pool.disk(spec.id) / disk.DISK_FILE,
                cmdline=f"{params.to_cmdline()} {launcher.vmm_flags()}",
                name=spec.id,
                incoming=memory is not None,
            )
            netns = self._network.netns_path(spec.id)
            undo.push("kill a started qemu", functools.partial(process.kill_strays, files.run))
            popen = await _blocking("start qemu", process.spawn, netns, argv, files.stderr)
            undo.push("kill qemu", functools.partial(_kill, popen))
            await _blocking(
                "move qemu into its cgroup", cgroup.move, self.config.cgroup_parent, spec.id, popen.pid
            )
            vmm = process.watch(popen)
            record = process.VmmRecord(pid=popen.pid, start_time=process.start_time(popen.pid) or 0)
            await _blocking("write vmm record", directory.write_vmm, record)
            muxer = SerialMuxer(files.serial, files.agent)
            await _or_died(muxer.start(), vmm, directory, "starting the agent channel")
            if memory is not None:
                await _or_died(
                    self._resume_from(spec.id, memory, address), vmm, directory, "restoring memory"
                )
            else:
                if spec.env:
                    configure = vm_contract.Configure(env=spec.env)
                    await _or_died(self._configure(files.agent, configure), vmm, directory, "configuring")
                await _or_died(self._wait_for_agent(files.agent), vmm, directory, "booting")
        except BaseException:
            if muxer is not None:
                await muxer.close()
            raise
        vm.slot, vm.paused, vm.muxer, vm.machine = slot, False, muxer, machine
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

    async def _resume_from(self, sandbox_id: str, memory: Path, address: Any) -> None:
        """Load ``memory`` into the QEMU started with ``-incoming defer``, run it, and make it
        a machine of its own."""
        async with self._qmp(sandbox_id) as qmp:
            await qmp.execute("migrate-incoming", {"uri": f"exec:cat {memory}"})
            status = await _settled(qmp, "query-status", "inmigrate")
            if status not in ("paused", "postmigrate", "prelaunch"):
                raise RuntimeFailure(f"loading the snapshot's memory left the VM {status}")
            await qmp.execute("cont")
        refresh = new_identity(
            sandbox_id,
            address=f"{address}/{self._network.subnet.prefixlen}",
            gateway=str(self._network.gateway),
        )
        async with asyncio.timeout(self.config.boot_timeout):
            await refresh_identity(self._dir(sandbox_id).files.agent, refresh)

    async def _halt(self, vm: _Vm, *, clean: bool) -> None:
        """End the VM (a clean guest poweroff first when ``clean``) and free its network and
        cgroup; the disk stays. Forgetting ``vm.vmm`` first tells the exit watcher it was us."""
        vmm, muxer, slot = vm.vmm, vm.muxer, vm.slot
        vm.vmm = vm.muxer = None
        sandbox_id = vm.spec.id
        if clean and vmm is not None:
            try:
                if vm.paused:
                    async with self._qmp(sandbox_id) as qmp:
                        await qmp.execute("cont")
                    vm.paused = False
                await control.send(
                    self.agent_socket(sandbox_id), vm_contract.Poweroff(), timeout=self.config.stop_timeout
                )
                async with asyncio.timeout(self.config.stop_timeout):
                    await asyncio.shield(vmm.exited)
            except (HostError, OSError, TimeoutError) as exc:
                log.warning("clean poweroff failed; killing the VM", sandbox_id=sandbox_id, error=str(exc))
        if muxer is not None:
            await muxer.close()
        if vmm is not None:
            await _blocking("kill qemu", vmm.kill)
        await _blocking("tear down", self._teardown, sandbox_id, slot)
        vm.slot, vm.paused = None, False
        if slot is not None:
            self._network.slots.release(slot)

    def _teardown(self, sandbox_id: str, slot: int | None) -> None:
        """Remove what a boot creates, by name; absent is fine. The cgroup goes first: removing
        it kills a QEMU still in it."""
        directory = self._dir(sandbox_id)
        if slot is None and (record := directory.read_boot()) is not None:
            slot = record.slot
        process.kill_strays(directory.files.run)
        cgroup.remove(self.config.cgroup_parent, sandbox_id)
        self._network.delete_interfaces(sandbox_id, slot)
        if directory.path.exists():
            directory.clear_boot()

    def _watch(self, vm: _Vm, vmm: process.Vmm) -> None:
        vm.vmm = vmm
        vmm.exited.add_done_callback(functools.partial(self._on_exit, vm, vmm))

    def _on_exit(self, vm: _Vm, vmm: process.Vmm, _done: asyncio.Future[int | None]) -> None:
        """QEMU ended. Unless we ended it, the VM died on its own (the guest powered off or
        panicked, QEMU crashed, the OOM killer chose it): free its resources, report it stopped."""
        if vm.vmm is not vmm:
            return
        task = asyncio.ensure_future(self._reap_dead(vm, vmm))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _reap_dead(self, vm: _Vm, vmm: process.Vmm) -> None:
        async with self._locks[vm.spec.id]:
            if vm.vmm is not vmm:
                return
            tail = await asyncio.to_thread(self._dir(vm.spec.id).console_tail)
            log.warning("sandbox died", sandbox_id=vm.spec.id, console=tail[-500:])
            await self._halt(vm, clean=False)

    @contextlib.asynccontextmanager
    async def _held(self, vm: _Vm) -> AsyncIterator[Qmp]:
        """A QMP session with the booted VM's vCPUs stopped, for a consistent copy of its
        memory and disk; a running VM runs again afterwards, a paused one stays paused. The
        marker tells a recovering hostd that this stop was ours, to undo."""
        marker = self._dir(vm.spec.id).held
        async with self._qmp(vm.spec.id) as qmp:
            running = not vm.paused
            if running:
                await _blocking("mark held", marker.touch)
                await qmp.execute("stop")
            try:
                yield qmp
            finally:
                if running:
                    await qmp.execute("cont")
                    await _blocking("unmark held", marker.unlink, True)

    @contextlib.asynccontextmanager
    async def _qmp(self, sandbox_id: str) -> AsyncIterator[Qmp]:
        """A QMP session for one operation. QEMU serves one client at a time, so none is kept
        open: a successor hostd (or an operator's ``qmp-shell``) can always get in."""
        qmp = await Qmp.connect(self._dir(sandbox_id).files.qmp, timeout=10.0)
        try:
            yield qmp
        finally:
            await qmp.close()

    async def _read_snapshot(self, directory: Path) -> manifest.Manifest:
        found = await _blocking("read snapshot", manifest.read, directory, ("vm",))
        manifest.check_restorable(found, _RUNTIME, await self._vmm_version())
        return found

    async def _vmm_version(self) -> str:
        if self._version is None:
            self._version = await _blocking("ask QEMU's version", _qemu_version, self.config.binary)
        return self._version

    def _machine(self, spec: SandboxSpec, image: VmImage, snapshot: manifest.Manifest | None) -> Machine:
        """The VM shape to boot: the spec's, or a memory snapshot's (which must match it)."""
        cpu, ram_mb = spec.cpu, spec.ram_mb
        if snapshot is not None and snapshot.vm is not None:
            cpu, ram_mb = snapshot.vm.cpu, snapshot.vm.ram_mb
        return Machine(
            cpu=cpu,
            ram_mb=ram_mb,
            kernel=str(image.kernel),
            initrd=str(image.initrd),
            mac=launcher.mac_for(spec.id),
            accel=self.config.accel,
        )

    async def _image(self, template: Template) -> VmImage:
        return await _blocking("guest image", self._images.ensure, template)

    async def _import(self, image: VmImage) -> Path:
        async with self._import_lock:
            pool = await self._open_pool()
            return await _blocking("import rootfs", disk.import_rootfs, pool, image.key, image.rootfs)

    # disks -----------------------------------------------------------------------------------

    async def _open_pool(self) -> StoragePool:
        async with self._host_lock:
            if self._pool is None:
                self._pool = await _blocking("open storage pool", StoragePool.open, self.config.pool)
            return self._pool

    def _pool_now(self) -> StoragePool:
        assert self._pool is not None, "the pool is opened before any disk is touched"
        return self._pool

    def _fill_disk(self, sandbox_id: str, make: Callable[[Path], None]) -> None:
        """Give a sandbox without a disk the one ``make`` creates (staged, then renamed)."""
        pool = self._pool_now()
        target = pool.disk(sandbox_id)
        staging = target.with_name(target.name + _NEW)
        pool.delete(staging)
        make(staging)
        os.rename(staging, target)

    def _replace_disk(self, sandbox_id: str, make: Callable[[Path], None]) -> None:
        """Swap the disk for the one ``make`` creates; the old one is moved aside first, so a
        crash leaves a whole disk for ``_repair_disk`` to put back."""
        pool = self._pool_now()
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
                await _blocking("set up host network", self._network.ensure_host)
                self._host_ready = True

    def _dir(self, sandbox_id: str) -> VmDir:
        return VmDir(self.config.state_dir / "sandboxes" / sandbox_id)

    def _get(self, sandbox_id: str) -> _Vm:
        vm = self._sandboxes.get(sandbox_id)
        if vm is None:
            raise SandboxNotFound(f"no sandbox {sandbox_id} on this host")
        return vm

    def _with_disk(self, sandbox_id: str) -> _Vm:
        vm = self._get(sandbox_id)
        if vm.archived:
            raise SandboxConflict(f"sandbox {sandbox_id} is archived; unarchive it first")
        return vm

    def _booted(self, sandbox_id: str) -> _Vm:
        vm = self._get(sandbox_id)
        if vm.slot is None:
            raise SandboxConflict(f"sandbox {sandbox_id} is stopped")
        return vm

    def _info(self, vm: _Vm) -> SandboxInfo:
        if vm.archived:
            return SandboxInfo(id=vm.spec.id, state="archived")
        if vm.slot is None:
            return SandboxInfo(id=vm.spec.id, state="stopped")
        state: Literal["running", "paused"] = "paused" if vm.paused else "running"
        return SandboxInfo(id=vm.spec.id, state=state, ip=str(self._network.address(vm.slot)))


async def _or_died(step: Awaitable[object], vmm: process.Vmm, directory: VmDir, what: str) -> None:
    """Await ``step``, failing fast (with the console's tail) if QEMU exits first."""
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


async def _migrate_out(qmp: Qmp, memory: Path) -> None:
    """Stream the stopped VM's state to ``memory`` and wait until QEMU says it is complete."""
    await qmp.execute("migrate-set-parameters", {"max-bandwidth": _MIGRATE_BANDWIDTH})
    await qmp.execute("migrate", {"uri": f"exec:cat > {memory}"})
    status = await _settled(qmp, "query-migrate", "setup", "active", "device", "pre-switchover", None)
    if status != "completed":
        raise RuntimeFailure(f"writing the VM's memory to {memory}: {status}")


async def _settled(qmp: Qmp, query: str, *passing: str | None) -> str | None:
    """Poll ``query`` until its ``status`` is none of ``passing`` (QEMU 7.2 sends no event at
    the end of an incoming migration); return that status."""
    while True:
        status: str | None = (await qmp.execute(query)).get("status")
        if status not in passing:
            return status
        await asyncio.sleep(_POLL)


def _disk_from_snapshot(directory: Path, found: manifest.Manifest, grow: int | None, target: Path) -> None:
    """A new disk subvolume at ``target`` holding a reflink of the snapshot's disk image,
    grown to ``grow`` GB unless None (a memory snapshot's disk keeps its size: the guest's
    kernel has the filesystem mounted)."""
    _btrfs.create(target)
    _reflink(vm_snapshot.disk_of(directory, found), target / disk.DISK_FILE)
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


def _reflink(source: Path, dest: Path) -> None:
    done = subprocess.run(
        ["cp", "--reflink=always", str(source), str(dest)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeFailure(f"copying {source.name}: {done.stderr.strip()}")


def _kill(popen: subprocess.Popen[bytes]) -> None:
    """SIGKILL and reap a QEMU this hostd started (an undo step)."""
    if popen.poll() is None:
        popen.kill()
    popen.wait()


def _qemu_version(binary: str) -> str:
    """QEMU's version as its QMP greeting spells it (``7.2.22 Debian 1:7.2+dfsg-…``), from
    ``--version`` (``QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-…)``)."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"version (\S+)(?: \((.*?)\))?", out.splitlines()[0])
    if match is None:
        raise RuntimeFailure(f"cannot read {binary}'s version from {out!r}")
    number, package = match.group(1), (match.group(2) or "").strip()
    return f"{number} {package}" if package else number


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


async def _blocking(what: str, fn: Callable[..., T], *args: object) -> T:
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
