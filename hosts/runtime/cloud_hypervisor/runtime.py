"""The Cloud Hypervisor runtime: every sandbox is a VM of its own ``cloud-hypervisor`` process.

Everything around the VMM is the QEMU backend's (``hosts/runtime/qemu``, whose runtime this
extends): the sandbox directory and its records, the disk (a reflinked raw ext4 image in the
pool), the network namespace with ``br0`` and ``tap0`` on the instance's bridge, the cgroup
around the VMM, adoption by pid and start time, the guest image (here its PVH ``vmlinux``),
snapshots of kind ``vm``, archives. What differs is how the VMM is driven:

* one ``cloud-hypervisor --api-socket path=<run>/api.sock`` per sandbox, started in the
  sandbox's netns and cgroup, then driven over its REST API (``client``): ``vm.create`` with
  the whole configuration (``_vm_config``), ``vm.boot``;
* the agent channel is the VMM's hybrid vsock: ``agent_socket()`` is the vsock device's Unix
  socket, where Cloud Hypervisor itself answers ``CONNECT <port>`` and relays to the guest's
  vsock port (vminit listens on 52 and 53, ``BootParams.channel = vsock``): no muxer in hostd;
* ``pause``/``resume`` are ``vm.pause``/``vm.resume``; ``resize`` of a running VM is
  ``vm.resize`` (vCPUs up to ``max_vcpus``, memory up to the hotplug size reserved at create),
  plus the cgroup's new limits;
* a memory snapshot is ``vm.pause``, ``vm.snapshot`` to ``file://<snapshot dir>`` (the VMM
  writes ``config.json``, ``state.json`` and ``memory-ranges``), a reflink of the disk, and
  ``vm.resume`` for a VM that was running; the manifest hashes every file and records the
  VMM's version as ``vmm.ping`` reports it (``build_version``), which ``--version`` prints too;
* restore, clone and fork start a new VMM and ``vm.restore`` from a staging directory in the
  sandbox's run directory: the snapshot's files linked, and ``config.json`` rewritten to name
  this sandbox's disk, vsock socket and console (the TAP is ``tap0`` everywhere); then
  ``vm.resume`` and the identity refresh. A snapshot written by another VMM version is
  refused before anything starts: the version is read from ``<binary> --version``.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import structlog

from contracts import vm as vm_contract
from contracts.host import Capabilities, SandboxInfo, SandboxSpec
from hosts.errors import HostError, RuntimeFailure
from hosts.runtime import _snapshot, manifest
from hosts.runtime._layout import BootRecord
from hosts.runtime._mounts import remove_tree
from hosts.runtime._undo import Undo
from hosts.runtime.cloud_hypervisor import api
from hosts.runtime.cloud_hypervisor.client import CloudHypervisorClient, wait_for_api
from hosts.runtime.cloud_hypervisor.config import CloudHypervisorConfig
from hosts.runtime.qemu import launcher, process
from hosts.runtime.qemu.launcher import Machine
from hosts.runtime.qemu.runtime import QemuRuntime, _blocking, _kill, _ms_since, _or_died, _reflink, _Vm
from hosts.vm import cgroup, control, disk, network
from hosts.vm import snapshot as vm_snapshot
from hosts.vm.identity import new_identity, refresh_identity
from hosts.vm.images import VmImage

log = structlog.get_logger("hosts.runtime")

RUNTIME = "cloud-hypervisor"
API_SOCKET = "api.sock"
"""In the sandbox's run directory, next to the vsock socket (``agent_socket``)."""
RESTORE_DIR = "restore"
"""In the run directory while a VM is restored: the snapshot as this sandbox's VMM reads it."""
SNAPSHOT_CONFIG, SNAPSHOT_STATE, SNAPSHOT_MEMORY = "config.json", "state.json", "memory-ranges"
"""The files ``vm.snapshot`` writes (docs/snapshot_restore.md of Cloud Hypervisor)."""
GUEST_CID = 3
"""Every VM has its own vsock device and muxer, so all use the first guest CID."""
_MIB = 2**20


class CloudHypervisorRuntime(QemuRuntime):
    """``SandboxRuntime`` on Cloud Hypervisor microVMs (see the module doc)."""

    kind = RUNTIME
    capabilities = Capabilities(memory_snapshot=True, live_resize=True, fork=True)
    config: CloudHypervisorConfig

    # the VMM's API -----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _api(self, sandbox_id: str) -> AsyncIterator[CloudHypervisorClient]:
        async with CloudHypervisorClient(
            self._api_socket(sandbox_id), timeout=self.config.api_timeout
        ) as client:
            yield client

    def _api_socket(self, sandbox_id: str) -> Path:
        return self._dir(sandbox_id).files.run / API_SOCKET

    async def _vmm_version(self) -> str:
        if self._version is None:
            self._version = await _blocking("ask the VMM's version", _ch_version, self.config.binary)
        return self._version

    async def _read_snapshot(self, directory: Path) -> manifest.Manifest:
        found = await _blocking("read snapshot", manifest.read, directory, ("vm",))
        manifest.check_restorable(found, RUNTIME, await self._vmm_version())
        return found

    # lifecycle the VMM does ------------------------------------------------------------------

    async def recover(self) -> builtins.list[SandboxInfo]:
        """Adopt every VMM that still runs (pid and start time in ``run/vmm.json``, its API
        answering); the state comes from ``vm.info``. Anything else is torn down by name."""
        await self._ensure_host()
        await self._open_pool()
        found = await _blocking("recover", self._scan)
        for vm, record in found:
            self._sandboxes[vm.spec.id] = vm
            if record is None:
                continue
            try:
                vmm = process.adopt(record, self._dir(vm.spec.id).files.run)
                async with self._api(vm.spec.id) as client:
                    state = (await client.info()).state
                if state not in ("Running", "Paused"):
                    raise RuntimeFailure(f"the VM is {state}")
            except (ProcessLookupError, HostError, OSError) as exc:
                log.warning("running VM not adopted", sandbox_id=vm.spec.id, error=str(exc))
                vm.slot = None
                await _blocking("tear down", self._teardown, vm.spec.id, None)
                continue
            assert vm.slot is not None
            self._network.slots.claim(vm.slot)
            vm.paused = state == "Paused"
            self._watch(vm, vmm)
        running = sum(vm.slot is not None for vm in self._sandboxes.values())
        log.info("recovered", running=running, total=len(found))
        return self.list()

    async def pause(self, sandbox_id: str) -> SandboxInfo:
        async with self._locks[sandbox_id]:
            vm = self._booted(sandbox_id)
            if not vm.paused:
                async with self._api(sandbox_id) as client:
                    await client.pause()
                vm.paused = True
            return self._info(vm)

    async def resume(self, sandbox_id: str) -> SandboxInfo:
        async with self._locks[sandbox_id]:
            vm = self._booted(sandbox_id)
            if vm.paused:
                async with self._api(sandbox_id) as client:
                    await client.resume()
                vm.paused = False
            return self._info(vm)

    async def resize(self, sandbox_id: str, cpu: int, ram_mb: int, disk_gb: int) -> SandboxInfo:
        """A booted VM gets its new vCPUs and memory now (``vm.resize``, within the ceilings
        fixed at create) and its cgroup new limits; the disk grows at the next stop or start.
        A stopped one is the QEMU backend's case: recorded, disk grown."""
        vm = self._get(sandbox_id)
        if vm.slot is None or vm.machine is None:
            return await super().resize(sandbox_id, cpu, ram_mb, disk_gb)
        if cpu < 1 or ram_mb < 1 or disk_gb < 1:
            raise RuntimeFailure("a sandbox needs at least 1 CPU, 1 MB of memory and 1 GB of disk")
        async with self._locks[sandbox_id]:
            vm = self._booted(sandbox_id)
            machine = vm.machine
            assert machine is not None
            if cpu > self.config.vcpu_ceiling or ram_mb > machine.ram_mb + self.config.memory_hotplug_mb:
                raise RuntimeFailure(
                    f"{cpu} CPUs / {ram_mb} MB is beyond what this VM can grow to live "
                    f"({self.config.vcpu_ceiling} CPUs, {machine.ram_mb + self.config.memory_hotplug_mb} MB)"
                )
            if (cpu, ram_mb) != (machine.cpu, machine.ram_mb):
                async with self._api(sandbox_id) as client:
                    await client.resize(
                        vcpus=cpu if cpu != machine.cpu else None,
                        ram_bytes=ram_mb * _MIB if ram_mb != machine.ram_mb else None,
                    )
            limits = cgroup.VmLimits(
                cpu=cpu, memory_mb=ram_mb + self.config.vmm_overhead_mb, pids=self.config.pids_max
            )
            await _blocking("resize cgroup", cgroup.apply, self.config.cgroup_parent, sandbox_id, limits)
            spec = msgspec.structs.replace(vm.spec, cpu=cpu, ram_mb=ram_mb, disk_gb=disk_gb)
            directory = self._dir(sandbox_id)
            vm.machine = msgspec.structs.replace(machine, cpu=cpu, ram_mb=ram_mb)
            await _blocking("write machine", directory.write_machine, vm.machine)
            await _blocking("write spec", directory.write_spec, spec)
            vm.spec = spec
            log.info("sandbox resized live", sandbox_id=sandbox_id, cpu=cpu, ram_mb=ram_mb)
            return self._info(vm)

    async def snapshot(self, sandbox_id: str, directory: Path) -> None:
        """A ``vm`` snapshot: a booted VM paused, ``vm.snapshot`` into ``directory`` and the
        disk reflinked beside it, then resumed if it was running; a stopped VM's disk alone."""
        async with self._locks[sandbox_id]:
            vm = self._with_disk(sandbox_id)
            pool = await self._open_pool()
            image = pool.disk(sandbox_id) / disk.DISK_FILE
            started = time.perf_counter()
            version = await self._vmm_version()
            files = await _blocking("make snapshot subvolume", vm_snapshot.begin, directory)
            machine, memory = vm.machine, None
            if vm.slot is None or machine is None:
                await _blocking("copy disk", _reflink, image, files / disk.DISK_FILE)
                machine = None
            else:
                async with self._paused(vm) as client:
                    running = (await client.ping()).build_version or version
                    if running != version:
                        raise RuntimeFailure(
                            f"the VMM runs {running}, but {self.config.binary} is {version} now"
                        )
                    await client.snapshot(files)
                    await _blocking("copy disk", _reflink, image, files / disk.DISK_FILE)
                memory = SNAPSHOT_MEMORY
            frozen_ms = _ms_since(started)
            shape = (machine.cpu, machine.ram_mb) if machine else (vm.spec.cpu, vm.spec.ram_mb)
            seal = functools.partial(
                vm_snapshot.seal,
                pool,
                directory,
                sandbox_id=sandbox_id,
                base=vm.base,
                runtime=RUNTIME,
                vmm_version=version,
                memory_file=memory,
                shape=shape,
            )
            await _blocking("seal snapshot", seal)
            log.info("sandbox snapshotted", sandbox_id=sandbox_id, memory=memory is not None,
                     frozen_ms=frozen_ms, total_ms=_ms_since(started))  # fmt: skip

    async def export(self, sandbox_id: str, directory: Path) -> None:
        """The QEMU backend's export, with a running VM paused through the API meanwhile."""
        async with self._locks[sandbox_id]:
            vm = self._with_disk(sandbox_id)
            pool = await self._open_pool()
            image = pool.disk(sandbox_id) / disk.DISK_FILE
            with pool.scratch() as scratch:
                await _blocking("make scratch", scratch.mkdir)
                if vm.slot is not None:
                    async with self._paused(vm):
                        await _blocking("copy disk", _reflink, image, scratch / disk.DISK_FILE)
                else:
                    await _blocking("copy disk", _reflink, image, scratch / disk.DISK_FILE)
                await _blocking(
                    "archive disk", _snapshot.write, scratch, directory, sandbox_id, vm.base, RUNTIME
                )

    @contextlib.asynccontextmanager
    async def _paused(self, vm: _Vm) -> AsyncIterator[CloudHypervisorClient]:
        """The VM paused for the block's duration (as it was, if it was paused already)."""
        async with self._api(vm.spec.id) as client:
            running = not vm.paused
            if running:
                await client.pause()
            try:
                yield client
            finally:
                if running:
                    await client.resume()

    def _machine(self, spec: SandboxSpec, image: VmImage, snapshot: manifest.Manifest | None) -> Machine:
        machine = super()._machine(spec, image, snapshot)
        return msgspec.structs.replace(machine, kernel=str(image.vmlinux), accel="kvm")

    async def _boot(self, vm: _Vm, machine: Machine, undo: Undo, memory: Path | None) -> None:
        """Network, cgroup, the VMM; then ``vm.create`` + ``vm.boot`` and the agent's first
        answer, or (``memory``: the snapshot's ``memory-ranges``) ``vm.restore`` from a staging
        copy of the snapshot, ``vm.resume`` and a new identity. Every resource registers its
        removal in ``undo`` before it exists; the caller unwinds it on failure."""
        spec, directory = vm.spec, self._dir(vm.spec.id)
        files = directory.files
        await self._ensure_host()
        pool = await self._open_pool()
        slot = self._network.slots.allocate()
        undo.push("release slot", functools.partial(self._network.slots.release, slot))
        await _blocking("create network", network.create, self._network, spec.id, slot, undo)
        undo.push("remove cgroup", functools.partial(cgroup.remove, self.config.cgroup_parent, spec.id))
        limits = cgroup.VmLimits(
            cpu=machine.cpu, memory_mb=machine.ram_mb + self.config.vmm_overhead_mb, pids=self.config.pids_max
        )
        await _blocking("create cgroup", cgroup.create, self.config.cgroup_parent, spec.id, limits)
        undo.push("clear boot record", functools.partial(self._clear_boot, spec.id))
        await _blocking("write boot record", directory.write_boot, BootRecord(slot=slot))
        await _blocking("write machine", directory.write_machine, machine)
        address = self._network.address(slot)
        socket = self._api_socket(spec.id)
        argv = [self.config.binary, "--api-socket", f"path={socket}"]
        popen = await _blocking(
            "start the VMM", process.spawn, self._network.netns_path(spec.id), argv, files.stderr
        )
        undo.push("kill the VMM", functools.partial(_kill, popen))
        await _blocking(
            "move the VMM into its cgroup", cgroup.move, self.config.cgroup_parent, spec.id, popen.pid
        )
        vmm = process.watch(popen)
        record = process.VmmRecord(pid=popen.pid, start_time=process.start_time(popen.pid) or 0)
        await _blocking("write vmm record", directory.write_vmm, record)
        await _or_died(
            wait_for_api(socket, timeout=self.config.boot_timeout), vmm, directory, "starting the VMM"
        )
        if memory is None:
            params = vm_contract.BootParams(
                hostname=spec.id,
                address=f"{address}/{self._network.subnet.prefixlen}",
                gateway=str(self._network.gateway),
                dns=self.config.dns,
                channel="vsock",
                configure=bool(spec.env),
            )
            config = _vm_config(self.config, machine, files, pool.disk(spec.id) / disk.DISK_FILE, params)
            await _or_died(self._create_and_boot(spec.id, config), vmm, directory, "booting the VM")
            if spec.env:
                configure = vm_contract.Configure(env=spec.env)
                await _or_died(self._configure(files.agent, configure), vmm, directory, "configuring")
            await _or_died(self._wait_for_agent(files.agent), vmm, directory, "booting")
        else:
            staging = files.run / RESTORE_DIR
            undo.push("remove restore staging", functools.partial(remove_tree, staging))
            await _blocking(
                "stage the snapshot", _stage_restore, memory.parent, staging, pool.disk(spec.id), files
            )
            await _or_died(self._restore_vm(spec.id, staging, address), vmm, directory, "restoring memory")
            await _blocking("remove restore staging", remove_tree, staging)
        vm.slot, vm.paused, vm.muxer, vm.machine = slot, False, None, machine
        self._watch(vm, vmm)

    async def _create_and_boot(self, sandbox_id: str, config: api.VmConfig) -> None:
        async with self._api(sandbox_id) as client:
            await client.create(config)
            await client.boot()

    async def _restore_vm(self, sandbox_id: str, staging: Path, address: Any) -> None:
        """``vm.restore`` + ``vm.resume``, then the identity refresh. The guest's channel is
        waited for first (an agent ping): the refresh sets the guest's clock to the time it
        carries, so it is stamped only once it can be delivered at once (stamped before the
        channel was back, a fork here lagged the host's clock by 1.5 s under TCG)."""
        agent = self._dir(sandbox_id).files.agent
        async with self._api(sandbox_id) as client:
            await client.restore(staging)
            await client.resume()
        await self._wait_for_agent(agent)
        refresh = new_identity(
            sandbox_id,
            address=f"{address}/{self._network.subnet.prefixlen}",
            gateway=str(self._network.gateway),
        )
        async with asyncio.timeout(self.config.boot_timeout):
            await refresh_identity(agent, refresh)

    async def _halt(self, vm: _Vm, *, clean: bool) -> None:
        """End the VM (a clean guest poweroff first when ``clean``: Cloud Hypervisor exits when
        its guest powers off) and free its network and cgroup; the disk stays."""
        vmm, slot = vm.vmm, vm.slot
        vm.vmm = vm.muxer = None
        sandbox_id = vm.spec.id
        if clean and vmm is not None:
            try:
                if vm.paused:
                    async with self._api(sandbox_id) as client:
                        await client.resume()
                    vm.paused = False
                await control.send(
                    self.agent_socket(sandbox_id), vm_contract.Poweroff(), timeout=self.config.stop_timeout
                )
                async with asyncio.timeout(self.config.stop_timeout):
                    await asyncio.shield(vmm.exited)
            except (HostError, OSError, TimeoutError) as exc:
                log.warning("clean poweroff failed; killing the VM", sandbox_id=sandbox_id, error=str(exc))
        if vmm is not None:
            await _blocking("kill the VMM", vmm.kill)
        await _blocking("tear down", self._teardown, sandbox_id, slot)
        vm.slot, vm.paused = None, False
        if slot is not None:
            self._network.slots.release(slot)

    def _teardown(self, sandbox_id: str, slot: int | None) -> None:
        super()._teardown(sandbox_id, slot)
        self._clear_boot(sandbox_id)

    def _clear_boot(self, sandbox_id: str) -> None:
        """The QEMU backend's records, plus the API socket and a restore's staging directory."""
        directory = self._dir(sandbox_id)
        directory.clear_boot()
        with contextlib.suppress(FileNotFoundError):
            self._api_socket(sandbox_id).unlink()
        remove_tree(directory.files.run / RESTORE_DIR)


def _vm_config(
    config: CloudHypervisorConfig,
    machine: Machine,
    files: launcher.RunFiles,
    disk_image: Path,
    params: vm_contract.BootParams,
) -> api.VmConfig:
    """The whole VM for ``vm.create``: direct kernel boot of the PVH ``vmlinux`` with the
    initramfs, the boot parameters and the serial console on ttyS0 (to ``console.log``),
    virtio-blk, virtio-net on ``tap0``, virtio-rng, and the vsock device whose host side is
    the agent socket."""
    memory_size = machine.ram_mb * _MIB
    return api.VmConfig(
        payload=api.PayloadConfig(
            kernel=str(machine.kernel),
            initramfs=str(machine.initrd),
            cmdline=f"{params.to_cmdline()} console=ttyS0 panic=-1",
        ),
        cpus=api.CpusConfig(boot_vcpus=machine.cpu, max_vcpus=max(machine.cpu, config.vcpu_ceiling)),
        memory=api.MemoryConfig(
            size=memory_size,
            hotplug_size=config.memory_hotplug_mb * _MIB or None,
            shared=config.shared_memory or None,
            hugepages=config.hugepages or None,
        ),
        disks=[api.DiskConfig(path=str(disk_image), id="disk0")],
        net=[api.NetConfig(tap=network.TAP, mac=machine.mac, id="net0")],
        rng=api.RngConfig(src="/dev/urandom"),
        serial=api.ConsoleConfig(mode="File", file=str(files.console)),
        console=api.ConsoleConfig(mode="Off"),
        vsock=api.VsockConfig(cid=GUEST_CID, socket=str(files.agent), id="vsock0"),
    )


def _stage_restore(snapshot: Path, staging: Path, disk_dir: Path, files: launcher.RunFiles) -> None:
    """What this sandbox's VMM restores from: the snapshot's state and memory linked, and its
    ``config.json`` with this sandbox's disk, vsock socket and console in place of the
    snapshotted VM's (Cloud Hypervisor documents editing it between snapshot and restore).
    Unknown fields are kept as they are."""
    remove_tree(staging)
    staging.mkdir(mode=0o700)
    config: dict[str, Any] = json.loads((snapshot / SNAPSHOT_CONFIG).read_text())
    disks = config.get("disks") or []
    if len(disks) != 1:
        raise RuntimeFailure(f"the snapshot's VM has {len(disks)} disks; this backend gives VMs one")
    disks[0]["path"] = str(disk_dir / disk.DISK_FILE)
    if config.get("vsock") is None:
        raise RuntimeFailure("the snapshot's VM has no vsock device")
    config["vsock"]["socket"] = str(files.agent)
    if (config.get("serial") or {}).get("mode") == "File":
        config["serial"]["file"] = str(files.console)
    (staging / SNAPSHOT_CONFIG).write_text(json.dumps(config))
    for name in sorted(os.listdir(snapshot)):
        if name not in (SNAPSHOT_CONFIG, disk.DISK_FILE):
            os.symlink(snapshot / name, staging / name)


def _ch_version(binary: str) -> str:
    """The VMM's build version from ``<binary> --version`` (``cloud-hypervisor v43.0``): what
    ``vmm.ping`` reports as ``build_version`` and the manifest records."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True, timeout=30).stdout
    words = out.splitlines()[0].split() if out.strip() else []
    if len(words) < 2:
        raise RuntimeFailure(f"cannot read {binary}'s version from {out!r}")
    return words[1]
