"""A VM sandbox's network: the container runtime's netns and veth, with a TAP bridged in.

``hosts.runtime._network.Network`` gives every sandbox a named netns whose ``eth0`` is the
peer of a veth on the instance's host bridge (an isolated port, behind the same nftables
table: NAT out, nothing to the host, nothing between sandboxes). For a VM, the address
belongs to the guest, not to the netns: inside the netns ``eth0`` keeps no address and joins
a bridge ``br0`` together with the TAP ``tap0`` that QEMU's virtio-net opens, so the guest's
frames reach the host bridge unchanged. The guest configures the address and route itself
from its boot parameters.

The TAP's name is fixed (every netns has its own namespace of interface names), so the
QEMU command line is the same for every sandbox and a memory snapshot restores into any
netns. Deleting the netns deletes ``br0`` and ``tap0`` with it. Functions block.
"""

from __future__ import annotations

import hashlib
import subprocess

from hosts.errors import RuntimeFailure
from hosts.runtime._network import Network
from hosts.runtime._undo import Undo

TAP = "tap0"
BRIDGE = "br0"


def create(network: Network, sandbox_id: str, slot: int, undo: Undo) -> None:
    """The netns and veth (``Network.create_interfaces``, which registers their removal in
    ``undo``), then the bridge and TAP inside the netns."""
    network.create_interfaces(sandbox_id, slot, undo)
    configure_inside(network, sandbox_id)


def configure_inside(network: Network, sandbox_id: str) -> None:
    """Inside the netns: ``lo`` up, ``br0`` joining ``eth0`` and a new ``tap0``, all up."""
    commands = [
        "link set lo up",
        f"link add {BRIDGE} type bridge",
        f"tuntap add dev {TAP} mode tap",
        f"link set eth0 master {BRIDGE}",
        f"link set {TAP} master {BRIDGE}",
        "link set eth0 up",
        f"link set {TAP} up",
        f"link set {BRIDGE} up",
    ]
    netns = network.netns_name(sandbox_id)
    script = "\n".join(commands)
    done = subprocess.run(
        ["ip", "-n", netns, "-batch", "-"], input=script, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeFailure(f"configuring the VM network in {netns} failed: {done.stderr.strip()}")


def mac_for(sandbox_id: str) -> str:
    """The sandbox's MAC: locally administered, unicast, derived from its id (so a sandbox keeps
    its MAC across boots and restores, and no two sandboxes on a bridge share one)."""
    digest = hashlib.sha256(sandbox_id.encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in digest[:5])
