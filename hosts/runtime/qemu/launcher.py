"""The QEMU command line of one sandbox VM, and the files it uses in the sandbox's run directory.

One ``qemu-system-x86_64 -M microvm`` per sandbox: no firmware, no PCI, no default devices,
virtio-mmio devices only (found by the guest through ACPI). What it has:

* the guest image's kernel and initramfs, with the sandbox's boot parameters on the kernel
  command line plus the VMM's own flags: ``console=ttyS0`` (the serial console goes to
  ``console.log``), ``panic=-1`` (a kernel panic reboots, which ``-no-reboot`` turns into an
  exit that hostd notices) and ``tsc_early_khz=`` (microvm has neither HPET nor a PM timer;
  without a known TSC rate the kernel calibrates against the PIT, which fails under a loaded
  TCG host and hangs about one boot in four — see the research note) with ``tsc=reliable``
  (without it the kernel's clocksource watchdog, whose only reference on microvm is jiffies,
  finds the TSC "unstable" under TCG and falls back to jiffies, which stop while the VM is
  paused and lag whenever the host is busy: the guest's clock would fall behind the host's);
* the agent channel (``channel.py``): one virtio-serial port named ``agent`` on a chardev Unix
  socket (``serial.sock``, QEMU listening) that hostd's ``SerialMuxer`` connects to, or, with
  ``vsock_cid``, a ``vhost-vsock-device`` with that guest CID that hostd's ``VsockBridge``
  reaches through the kernel;
* virtio-blk for the sandbox's disk image, virtio-net on the netns's TAP, virtio-rng;
* QMP on ``qmp.sock``;
* QEMU's own seccomp filter (``-sandbox``): no obsolete system calls, no setuid/setgid or
  capability changes, no scheduler or CPU-affinity changes — a guest that escaped into the
  emulator cannot use them. ``spawn`` stays allowed because memory snapshots migrate through
  ``exec:`` (``cat`` into the snapshot directory).

The device list is the same for every sandbox and depends only on the ``Machine``, so a
memory snapshot taken from one process loads into another built from the same ``Machine``
(``-incoming defer``, then ``migrate-incoming``).
"""

from __future__ import annotations

from pathlib import Path

from hosts.vm import tsc
from hosts.vm.layout import Machine, RunFiles
from hosts.vm.network import TAP

QMP = "qmp.sock"
SERIAL = "serial.sock"


def qmp_socket(files: RunFiles) -> Path:
    """QEMU's QMP socket, in the run directory."""
    return files.run / QMP


def serial_socket(files: RunFiles) -> Path:
    """The agent's virtio-serial port (QEMU listening), which hostd's ``SerialMuxer`` connects
    to; the muxer serves ``files.agent``."""
    return files.run / SERIAL


def argv(
    binary: str,
    machine: Machine,
    files: RunFiles,
    *,
    disk: Path,
    cmdline: str,
    name: str,
    incoming: bool = False,
    vsock_cid: int | None = None,
) -> list[str]:
    accel = "kvm" if machine.accel == "kvm" else "tcg,tb-size=64"
    if vsock_cid is None:
        channel = [
            "-device", "virtio-serial-device",
            "-chardev", f"socket,id=agent,path={serial_socket(files)},server=on,wait=off",
            "-device", "virtserialport,chardev=agent,name=agent",
        ]  # fmt: skip
    else:
        channel = ["-device", f"vhost-vsock-device,id=vsock0,guest-cid={vsock_cid}"]
    # The order of the devices is their virtio-mmio slots, which a memory snapshot depends on.
    args = [
        binary,
        "-name", f"dnah-{name}",
        "-M", "microvm",
        "-accel", accel,
        "-smp", str(machine.cpu),
        "-m", f"{machine.ram_mb}M",
        "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
        "-kernel", machine.kernel,
        "-initrd", machine.initrd,
        "-append", cmdline,
        "-serial", f"file:{files.console}",
        *channel,
        "-drive", f"file={disk},format=raw,if=none,id=disk0,cache=writeback,discard=unmap",
        "-device", "virtio-blk-device,drive=disk0",
        "-netdev", f"tap,id=net0,ifname={TAP},script=no,downscript=no",
        "-device", f"virtio-net-device,netdev=net0,mac={machine.mac}",
        "-object", "rng-random,id=rng0,filename=/dev/urandom",
        "-device", "virtio-rng-device,rng=rng0",
        "-qmp", f"unix:{qmp_socket(files)},server=on,wait=off",
        "-sandbox", "on,obsolete=deny,elevateprivileges=deny,resourcecontrol=deny",
    ]  # fmt: skip
    if machine.accel == "kvm":
        args += ["-cpu", "host"]
    if incoming:
        args += ["-incoming", "defer"]
    return args


def vmm_flags() -> str:
    """The kernel command-line flags the VMM needs, appended to the boot parameters."""
    flags = "console=ttyS0 panic=-1 tsc=reliable"
    if (khz := tsc.host_tsc_khz()) is not None:
        flags += f" tsc_early_khz={khz}"
    return flags
