"""The QEMU runtime: every sandbox is a ``qemu-system-x86_64 -M microvm`` VM.

The sandbox, its lifecycle and its snapshots are ``hosts.vm.runtime.VmRuntime``'s; this is
how QEMU fills in the VMM hooks:

* the command line (``launcher``) boots the guest: kernel, initramfs and boot parameters,
  virtio-mmio devices, QMP as a Unix socket in the run directory, and the agent channel: a
  virtio-serial port that hostd's ``SerialMuxer`` multiplexes, or a vhost-vsock device that
  hostd's ``VsockBridge`` reaches (``channel.py``; the boot's ``Machine`` records which). Either
  turns into the agent socket every backend exposes; it runs from the VMM's start until hostd
  lets go of the VM;
* pause and resume are QMP ``stop``/``cont``, one QMP session per operation (QEMU serves one
  client at a time, so nothing is held that a restarted hostd would need);
* the memory state is QEMU's migration stream: ``migrate`` to ``exec:cat > <file>``
  (``memory`` in the snapshot's subvolume), and a restore starts QEMU with ``-incoming
  defer`` and loads it with ``migrate-incoming``, then ``cont``;
* adoption restarts the channel (the guest resynchronises) and asks QMP whether it is paused.

No live resize: a new size is recorded and applies at the next boot.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import structlog

from contracts.host import Capabilities
from contracts.vm import BootParams
from hosts.errors import RuntimeFailure
from hosts.runtime._channel import AgentChannel
from hosts.runtime._undo import Undo
from hosts.runtime.qemu import channel, launcher
from hosts.runtime.qemu.config import QemuConfig
from hosts.runtime.qemu.qmp import Qmp
from hosts.vm.layout import Machine
from hosts.vm.runtime import Vm, VmRuntime

log = structlog.get_logger("hosts.runtime")

MEMORY = "memory"
"""The VM's migration stream in a snapshot's subvolume."""
CHANNEL = "channel"
"""Next to it: the agent channel the VM had (absent in snapshots from before there were two),
which the restoring VM must have too (its devices, and what vminit serves)."""
_MIGRATE_BANDWIDTH = 8 * 2**30
"""Bytes per second QEMU may stream a snapshot at (its default, 32 MiB/s, would take 8 s
for 256 MiB; the stream goes to a local file)."""
_POLL = 0.01


class QemuRuntime(VmRuntime):
    """``SandboxRuntime`` on QEMU microVMs (see the module doc)."""

    kind = "qemu"
    capabilities = Capabilities(memory_snapshot=True, live_resize=False, fork=True)
    config: QemuConfig

    def __init__(self, config: QemuConfig) -> None:
        super().__init__(config)
        self.channel = config.channel
        self._channels: dict[str, AgentChannel] = {}
        log.info("QEMU agent channel", channel=config.channel, reason=config.channel_reason)

    def _vmm_argv(self, vm: Vm, machine: Machine, params: BootParams, *, restoring: bool) -> list[str]:
        return launcher.argv(
            self.config.binary,
            machine,
            self._dir(vm.spec.id).files,
            disk=self._disk_image(vm.spec.id),
            cmdline=f"{params.to_cmdline()} {launcher.vmm_flags()}",
            name=vm.spec.id,
            incoming=restoring,
            vsock_cid=_cid(params) if machine.channel == "vsock" else None,
        )

    async def _vmm_ready(self, vm: Vm) -> None:
        await self._start_channel(vm)

    async def _vmm_boot(self, vm: Vm, machine: Machine, params: BootParams) -> None:
        """Nothing: QEMU booted the guest as it started."""

    async def _vmm_restore(self, vm: Vm, machine: Machine, snapshot_files: Path, undo: Undo) -> None:
        saved = await asyncio.to_thread(_read_channel, snapshot_files / CHANNEL)
        if saved != machine.channel:
            raise RuntimeFailure(
                f"the snapshot's memory is of a VM with the {saved} agent channel; this host gives "
                f"VMs the {machine.channel} one (DNAH_QEMU_CHANNEL)"
            )
        async with self._qmp(vm.spec.id) as qmp:
            await qmp.execute("migrate-incoming", {"uri": f"exec:cat {snapshot_files / MEMORY}"})
            status = await _settled(qmp, "query-status", "inmigrate")
            if status not in ("paused", "postmigrate", "prelaunch"):
                raise RuntimeFailure(f"loading the snapshot's memory left the VM {status}")
            await qmp.execute("cont")

    async def _vmm_pause(self, vm: Vm) -> None:
        async with self._qmp(vm.spec.id) as qmp:
            await qmp.execute("stop")

    async def _vmm_resume(self, vm: Vm) -> None:
        async with self._qmp(vm.spec.id) as qmp:
            await qmp.execute("cont")

    async def _vmm_save(self, vm: Vm, files: Path) -> str:
        """Stream the stopped VM's state to ``memory`` in ``files`` until QEMU says it is complete."""
        memory = files / MEMORY
        async with self._qmp(vm.spec.id) as qmp:
            await qmp.execute("migrate-set-parameters", {"max-bandwidth": _MIGRATE_BANDWIDTH})
            await qmp.execute("migrate", {"uri": f"exec:cat > {memory}"})
            status = await _settled(qmp, "query-migrate", "setup", "active", "device", "pre-switchover", None)
        if status != "completed":
            raise RuntimeFailure(f"writing the VM's memory to {memory}: {status}")
        channel_used = vm.machine.channel if vm.machine is not None else self.channel
        await asyncio.to_thread((files / CHANNEL).write_text, channel_used)
        return MEMORY

    async def _vmm_adopt(self, vm: Vm) -> bool:
        async with self._qmp(vm.spec.id) as qmp:
            status = (await qmp.execute("query-status"))["status"]
        await self._start_channel(vm)
        return bool(status != "running")

    async def _vmm_release(self, vm: Vm) -> None:
        served = self._channels.pop(vm.spec.id, None)
        if served is not None:
            await served.close()

    def _read_vmm_version(self) -> str:
        return qemu_version(self.config.binary)

    async def _start_channel(self, vm: Vm) -> None:
        """The agent socket, served over the channel this boot's ``Machine`` names to the
        VM's address (both recorded before the VMM started, so a successor reads them too)."""
        directory = self._dir(vm.spec.id)
        machine, boot = await asyncio.to_thread(lambda: (directory.read_machine(), directory.read_boot()))
        if machine is None or boot is None:
            raise RuntimeFailure(f"sandbox {vm.spec.id} has no boot records to serve its channel from")
        address = self._network.address(boot.slot)
        served = channel.open_channel(machine.channel, directory.files, address)
        self._channels[vm.spec.id] = served
        await served.start()

    @contextlib.asynccontextmanager
    async def _qmp(self, sandbox_id: str) -> AsyncIterator[Qmp]:
        """A QMP session for one operation. QEMU serves one client at a time, so none is kept
        open: a successor hostd (or an operator's ``qmp-shell``) can always get in."""
        qmp = await Qmp.connect(launcher.qmp_socket(self._dir(sandbox_id).files), timeout=10.0)
        try:
            yield qmp
        finally:
            await qmp.close()


def _read_channel(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return "serial"


def _cid(params: BootParams) -> int:
    """The guest CID of the VM booted with ``params``: its address's (``channel.guest_cid``)."""
    return channel.guest_cid(ipaddress.IPv4Interface(params.address).ip)


async def _settled(qmp: Qmp, query: str, *passing: str | None) -> str | None:
    """Poll ``query`` until its ``status`` is none of ``passing`` (QEMU 7.2 sends no event at
    the end of an incoming migration); return that status."""
    while True:
        status: str | None = (await qmp.execute(query)).get("status")
        if status not in passing:
            return status
        await asyncio.sleep(_POLL)


def qemu_version(binary: str) -> str:
    """QEMU's version as its QMP greeting spells it (``7.2.22 Debian 1:7.2+dfsg-…``), from
    ``--version`` (``QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-…)``)."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"version (\S+)(?: \((.*?)\))?", out.splitlines()[0])
    if match is None:
        raise RuntimeFailure(f"cannot read {binary}'s version from {out!r}")
    number, package = match.group(1), (match.group(2) or "").strip()
    return f"{number} {package}" if package else number
