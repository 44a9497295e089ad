"""Booting the guest image in a real QEMU microvm for tests, without any backend.

``booted`` runs the research note's command line (TCG, a virtio-serial port on a Unix socket,
the disk on virtio-blk, a NIC on an empty hub so eth0 exists and nothing is reachable) with a
private copy of the image's root disk, puts ``SerialMuxer`` in front of the port, and yields a
``GuestVm`` whose ``agent_socket`` speaks the hybrid-vsock handshake. The image comes from the
shared, content-keyed cache (/var/cache/dnah/vm), as templates do.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from contracts.vm import BootParams
from hosts.config import BUILD_SCRIPT, GUEST_DIR
from hosts.runtime._channel import SerialMuxer
from hosts.templates import Template, TemplateStore
from hosts.vm.images import VmImage, VmImageStore
from hosts.vm.tsc import host_tsc_khz

TEMPLATE_CACHE = Path("/var/cache/dnah/templates")
VM_CACHE = Path("/var/cache/dnah/vm")
BOOT_TIMEOUT_S = 180.0
"""Generous: a TCG boot takes 3-6 s alone, far longer while other suites load both cores."""
EXIT_TIMEOUT_S = 60.0


@pytest.fixture(scope="session")
def vm_template() -> Template:
    if os.geteuid() != 0:
        pytest.skip("building a guest image needs root")
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86 is not installed (install/deps.sh)")
    return TemplateStore(TEMPLATE_CACHE, BUILD_SCRIPT).ensure()


@pytest.fixture(scope="session")
def vm_store() -> VmImageStore:
    return VmImageStore(VM_CACHE, GUEST_DIR)


@pytest.fixture(scope="session")
def vm_image(vm_store: VmImageStore, vm_template: Template) -> VmImage:
    return vm_store.ensure(vm_template)


@dataclass
class GuestVm:
    process: asyncio.subprocess.Process
    agent_socket: Path
    console: Path
    disk: Path

    def console_text(self) -> str:
        return self.console.read_text(errors="replace") if self.console.exists() else ""


def qemu_argv(image: VmImage, disk: Path, run: Path, params: BootParams) -> list[str]:
    append = f"{params.to_cmdline()} console=ttyS0 panic=-1"
    if (khz := host_tsc_khz()) is not None:
        append += f" tsc_early_khz={khz}"
    return [
        "qemu-system-x86_64", "-M", "microvm", "-accel", "tcg", "-m", "256", "-smp", "1",
        "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
        "-kernel", str(image.kernel), "-initrd", str(image.initrd), "-append", append,
        "-serial", f"file:{run / 'console.log'}",
        "-device", "virtio-serial-device",
        "-chardev", f"socket,id=c0,path={run / 'serial.sock'},server=on,wait=off",
        "-device", "virtserialport,chardev=c0,name=agent",
        "-drive", f"file={disk},format=raw,if=none,id=d0", "-device", "virtio-blk-device,drive=d0",
        "-netdev", "hubport,id=n0,hubid=0", "-device", "virtio-net-device,netdev=n0",
        "-object", "rng-random,id=rng0,filename=/dev/urandom", "-device", "virtio-rng-device,rng=rng0",
    ]  # fmt: skip


@contextlib.asynccontextmanager
async def booted(image: VmImage, run: Path, params: BootParams) -> AsyncIterator[GuestVm]:
    """A running VM of ``image`` (killed on exit if it is still running)."""
    run.mkdir(parents=True, exist_ok=True)
    disk = run / "disk.img"
    copy = await asyncio.create_subprocess_exec("cp", "--sparse=always", str(image.rootfs), str(disk))
    assert await copy.wait() == 0
    disk.chmod(0o600)
    process = await asyncio.create_subprocess_exec(
        *qemu_argv(image, disk, run, params),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=open(run / "qemu.stderr", "wb"),  # noqa: SIM115 — the child holds it
    )
    muxer = SerialMuxer(run / "serial.sock", run / "agent.sock")
    await muxer.start()
    try:
        yield GuestVm(process, run / "agent.sock", run / "console.log", disk)
    finally:
        await muxer.close()
        if process.returncode is None:
            process.kill()
        await process.wait()


async def wait_exit(vm: GuestVm) -> int:
    """QEMU's exit status once the guest powered off (``-no-reboot``)."""
    async with asyncio.timeout(EXIT_TIMEOUT_S):
        return await vm.process.wait()
