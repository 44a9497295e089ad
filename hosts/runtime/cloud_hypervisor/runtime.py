"""The Cloud Hypervisor runtime: every sandbox is a VM of its own ``cloud-hypervisor`` process.

The sandbox, its lifecycle and its snapshots are ``hosts.vm.runtime.VmRuntime``'s (the disk,
the network namespace with ``br0`` and ``tap0``, the cgroup, adoption, ``vm`` snapshots,
archives); this is how Cloud Hypervisor fills in the VMM hooks:

* one ``cloud-hypervisor --api-socket path=<run>/api.sock`` per sandbox, started in the
  sandbox's netns and cgroup, then driven over its REST API (``client``): ``vm.create`` with
  the whole configuration (``_vm_config``, the image's PVH ``vmlinux``), ``vm.boot``;
* the agent channel is the VMM's hybrid vsock: ``agent_socket()`` is the vsock device's Unix
  socket, where Cloud Hypervisor itself answers ``CONNECT <port>`` and relays to the guest's
  vsock port (vminit listens on 52 and 53, ``BootParams.channel = vsock``): no muxer in hostd;
* ``pause``/``resume`` are ``vm.pause``/``vm.resume``; ``resize`` of a running VM is
  ``vm.resize`` (vCPUs up to ``max_vcpus``, memory up to the hotplug size reserved at create);
* the memory state is what ``vm.snapshot`` writes into the snapshot's subvolume
  (``config.json``, ``state.json``, ``memory-ranges``), after a ``vmm.ping`` confirms the
  running VMM is still the binary's version. A restore goes through a staging directory in the
  run directory: the snapshot's files linked, ``config.json`` rewritten to name this sandbox's
  disk, vsock socket, console and MAC (the TAP is ``tap0`` everywhere); then ``vm.restore``
  and ``vm.resume``. A snapshot written by another VMM version is refused before anything
  starts: the version is read from ``<binary> --version``;
* adoption asks ``vm.info`` whether the VM is running or paused.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from contracts.host import Capabilities
from contracts.vm import BootParams
from hosts.errors import RuntimeFailure
from hosts.runtime._mounts import remove_tree
from hosts.runtime._undo import Undo
from hosts.runtime.cloud_hypervisor import api
from hosts.runtime.cloud_hypervisor.client import CloudHypervisorClient, wait_for_api
from hosts.runtime.cloud_hypervisor.config import CloudHypervisorConfig
from hosts.vm import disk, network
from hosts.vm.images import VmImage
from hosts.vm.layout import Machine, RunFiles
from hosts.vm.runtime import Vm, VmRuntime, blocking

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


class CloudHypervisorRuntime(VmRuntime):
    """``SandboxRuntime`` on Cloud Hypervisor microVMs (see the module doc)."""

    kind = RUNTIME
    capabilities = Capabilities(memory_snapshot=True, live_resize=True, fork=True)
    channel = "vsock"
    config: CloudHypervisorConfig

    def _vmm_argv(self, vm: Vm, machine: Machine, params: BootParams, *, restoring: bool) -> list[str]:
        return [self.config.binary, "--api-socket", f"path={self._api_socket(vm.spec.id)}"]

    async def _vmm_ready(self, vm: Vm) -> None:
        await wait_for_api(self._api_socket(vm.spec.id), timeout=self.config.boot_timeout)

    async def _vmm_boot(self, vm: Vm, machine: Machine, params: BootParams) -> None:
        files = self._dir(vm.spec.id).files
        config = _vm_config(self.config, machine, files, self._disk_image(vm.spec.id), params)
        async with self._api(vm.spec.id) as client:
            await client.create(config)
            await client.boot()

    async def _vmm_restore(self, vm: Vm, machine: Machine, snapshot_files: Path, undo: Undo) -> None:
        files = self._dir(vm.spec.id).files
        staging = files.run / RESTORE_DIR
        undo.push("remove restore staging", functools.partial(remove_tree, staging))
        stage = functools.partial(
            _stage_restore, snapshot_files, staging, self._disk_image(vm.spec.id), files, machine.mac
        )
        await blocking("stage the snapshot", stage)
        async with self._api(vm.spec.id) as client:
            await client.restore(staging)
            await client.resume()
        await blocking("remove restore staging", remove_tree, staging)

    async def _vmm_pause(self, vm: Vm) -> None:
        async with self._api(vm.spec.id) as client:
            await client.pause()

    async def _vmm_resume(self, vm: Vm) -> None:
        async with self._api(vm.spec.id) as client:
            await client.resume()

    async def _vmm_save(self, vm: Vm, files: Path) -> str:
        version = await self._vmm_version()
        async with self._api(vm.spec.id) as client:
            running = (await client.ping()).build_version or version
            if running != version:
                raise RuntimeFailure(f"the VMM runs {running}, but {self.config.binary} is {version} now")
            await client.snapshot(files)
        return SNAPSHOT_MEMORY

    async def _vmm_adopt(self, vm: Vm) -> bool:
        async with self._api(vm.spec.id) as client:
            state = (await client.info()).state
        if state not in ("Running", "Paused"):
            raise RuntimeFailure(f"the VM is {state}")
        return state == "Paused"

    async def _vmm_resize(self, vm: Vm, cpu: int, ram_mb: int) -> None:
        """``vm.resize`` within the ceilings fixed at create: ``max_vcpus`` and the RAM booted
        with plus the hotplug size."""
        machine = vm.machine
        assert machine is not None
        most_ram = machine.ram_mb + self.config.memory_hotplug_mb
        if cpu > self.config.vcpu_ceiling or ram_mb > most_ram:
            raise RuntimeFailure(
                f"{cpu} CPUs / {ram_mb} MB is beyond what this VM can grow to live "
                f"({self.config.vcpu_ceiling} CPUs, {most_ram} MB)"
            )
        if (cpu, ram_mb) != (machine.cpu, machine.ram_mb):
            async with self._api(vm.spec.id) as client:
                await client.resize(
                    vcpus=cpu if cpu != machine.cpu else None,
                    ram_bytes=ram_mb * _MIB if ram_mb != machine.ram_mb else None,
                )

    def _read_vmm_version(self) -> str:
        return ch_version(self.config.binary)

    def _kernel(self, image: VmImage) -> Path:
        return image.vmlinux

    @contextlib.asynccontextmanager
    async def _api(self, sandbox_id: str) -> AsyncIterator[CloudHypervisorClient]:
        async with CloudHypervisorClient(
            self._api_socket(sandbox_id), timeout=self.config.api_timeout
        ) as client:
            yield client

    def _api_socket(self, sandbox_id: str) -> Path:
        return self._dir(sandbox_id).files.run / API_SOCKET


def _vm_config(
    config: CloudHypervisorConfig, machine: Machine, files: RunFiles, disk_image: Path, params: BootParams
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


def _stage_restore(snapshot: Path, staging: Path, disk_image: Path, files: RunFiles, mac: str) -> None:
    """What this sandbox's VMM restores from: the snapshot's state and memory linked from its
    subvolume (``snapshot``), and its ``config.json`` with this sandbox's disk, vsock socket,
    console and MAC in place of the snapshotted VM's (Cloud Hypervisor documents editing it
    between snapshot and restore). Unknown fields are kept as they are."""
    remove_tree(staging)
    staging.mkdir(mode=0o700)
    config: dict[str, Any] = json.loads((snapshot / SNAPSHOT_CONFIG).read_text())
    disks = config.get("disks") or []
    if len(disks) != 1:
        raise RuntimeFailure(f"the snapshot's VM has {len(disks)} disks; this backend gives VMs one")
    disks[0]["path"] = str(disk_image)
    if config.get("vsock") is None:
        raise RuntimeFailure("the snapshot's VM has no vsock device")
    config["vsock"]["socket"] = str(files.agent)
    if (config.get("serial") or {}).get("mode") == "File":
        config["serial"]["file"] = str(files.console)
    for net in config.get("net") or []:
        net["mac"] = mac
    (staging / SNAPSHOT_CONFIG).write_text(json.dumps(config))
    for name in sorted(os.listdir(snapshot)):
        if name not in (SNAPSHOT_CONFIG, disk.DISK_FILE):
            os.symlink(snapshot / name, staging / name)


def ch_version(binary: str) -> str:
    """The VMM's build version from ``<binary> --version`` (``cloud-hypervisor v43.0``): what
    ``vmm.ping`` reports as ``build_version`` and the manifest records."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True, timeout=30).stdout
    words = out.splitlines()[0].split() if out.strip() else []
    if len(words) < 2:
        raise RuntimeFailure(f"cannot read {binary}'s version from {out!r}")
    return words[1]
