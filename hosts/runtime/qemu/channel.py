"""Which agent channel a QEMU VM gets, and hostd's end of it.

Two transports carry the agent socket's streams to the guest (docs/runtimes.md, "Agent
channel"); both serve the same hybrid-vsock socket, so nothing above the runtime can tell:

* ``serial``: one virtio-serial port, multiplexed by ``SerialMuxer``. Works on any host;
* ``vsock``: a ``vhost-vsock-device``, one AF_VSOCK connection per stream through
  ``VsockBridge``. Needs the kernel's vhost-vsock (``/dev/vhost-vsock``).

``DNAH_QEMU_CHANNEL`` (``auto``, the default, ``serial`` or ``vsock``) picks: ``auto`` takes
vsock only where ``probe_vhost_vsock`` finds it usable. The choice is recorded in each boot's
``Machine``, so a VM is always served over the channel it booted with (a hostd restarted with
another setting adopts it as it is), and a memory snapshot loads only into a VM with the same
devices.

The guest CID must be unique on the host (the kernel refuses a second VM with the same one)
and known again after a hostd restart. It is the VM's IPv4 address read as a 32-bit number:
addresses come from the booted sandbox's network slot, recorded in its boot record, and hostd
instances sharing a host have subnets of their own, as their routes require anyway.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Literal

from hosts.runtime._channel import AgentChannel, SerialMuxer
from hosts.runtime._vsock import VsockBridge, VsockProbe, probe_vhost_vsock
from hosts.runtime.qemu import launcher
from hosts.vm.layout import RunFiles

Channel = Literal["serial", "vsock"]
_CID_MIN, _CID_ANY = 3, 0xFFFFFFFF
"""CIDs 0-2 are the hypervisor's, the host's and loopback; ``-1`` means any."""


def select_channel(
    requested: str, probe: Callable[[], VsockProbe] = probe_vhost_vsock
) -> tuple[Channel, str]:
    """``DNAH_QEMU_CHANNEL`` resolved to ``serial`` or ``vsock``, with the reason in words.
    Naming one overrides the probe (``vsock`` where it is not usable fails at QEMU's start)."""
    if requested == "serial":
        return "serial", "DNAH_QEMU_CHANNEL=serial"
    if requested == "vsock":
        return "vsock", "DNAH_QEMU_CHANNEL=vsock"
    if requested != "auto":
        raise ValueError(f"the QEMU channel must be auto, serial or vsock, not {requested!r}")
    found = probe()
    return ("vsock" if found.usable else "serial"), found.reason


def guest_cid(address: ipaddress.IPv4Address) -> int:
    """The guest CID of the VM holding ``address`` (see the module doc)."""
    cid = int(address)
    if not _CID_MIN <= cid < _CID_ANY:
        raise ValueError(f"{address} makes no usable guest CID")
    return cid


def open_channel(channel: Channel, files: RunFiles, address: ipaddress.IPv4Address) -> AgentChannel:
    """hostd's end of a VM's channel, serving ``files.agent`` (not started yet)."""
    if channel == "vsock":
        return VsockBridge(guest_cid(address), files.agent)
    return SerialMuxer(launcher.serial_socket(files), files.agent)
