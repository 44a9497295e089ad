"""Sandbox networking: one bridge per runtime instance, one netns and veth pair per sandbox.

Host side (``ensure_host``): a bridge holding the subnet's first address (the sandboxes'
gateway), IPv4 forwarding, and an nftables ``inet`` table named after the bridge that

* masquerades the subnet's traffic leaving through any other interface (NAT to the outside);
* drops everything the sandboxes send to the host itself (``input`` from the bridge) except
  replies to connections the host opened and connections hostd's egress table redirected to
  its resolver or egress proxy (``ct status dnat``: only that table translates bridge
  traffic, see ``hosts/egress/nft.py``), so hostd, the core, Postgres or Redis are out of
  reach even when they listen on 0.0.0.0;
* drops everything routed *into* the bridge except replies, so neither another instance's
  sandboxes nor the host's other interfaces can open connections to these sandboxes.

Sandbox to sandbox traffic never leaves the bridge; it is stopped there by marking every
port ``isolated`` (isolated ports only talk to non-isolated ones, i.e. the bridge itself).

Per sandbox: a named netns ``<bridge>@<sandbox id>`` (``@`` cannot occur in a bridge name, so
instances never claim each other's), a veth pair whose host end is named from the sandbox's
slot and attached to the bridge, and whose other end is ``eth0`` inside with the slot's
address and a default route via the gateway.

Everything is done with ``ip -batch`` and ``nft -f``: two processes per boot (the netns and
the veth pair, then the inside of the netns) and one per stop, a few milliseconds in total,
and the same commands an operator would type to inspect it.
Functions block; the runtime calls them from a thread.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import subprocess
import threading
from pathlib import Path

from hosts.errors import RuntimeFailure
from hosts.runtime._undo import Undo

NETNS_DIR = Path("/run/netns")
_IFNAMSIZ = 15
_SYS_NET = Path("/sys/class/net")


class Network:
    """The network of one runtime instance; every name derives from the bridge name."""

    def __init__(self, bridge: str, subnet: ipaddress.IPv4Network, *, egress: bool = True) -> None:
        self.bridge = bridge
        self.egress = egress
        """With egress, sandboxes reach other networks through NAT; without, their packets
        never leave the bridge (the host and the other sandboxes are unreachable either way)."""
        self.subnet = subnet
        self.gateway = subnet.network_address + 1
        self.table = bridge
        self.slots = SlotAllocator(subnet)
        self._veth_prefix = _veth_prefix(bridge, self.slots.last)

    def netns_name(self, sandbox_id: str) -> str:
        return f"{self.bridge}@{sandbox_id}"

    def netns_path(self, sandbox_id: str) -> Path:
        return NETNS_DIR / self.netns_name(sandbox_id)

    def veth_name(self, slot: int) -> str:
        return f"{self._veth_prefix}{slot}"

    @property
    def veth_prefix(self) -> str:
        """What every host-side veth of this instance's name starts with (and no other's)."""
        return self._veth_prefix

    def slot_of(self, address: ipaddress.IPv4Address) -> int:
        return int(address) - int(self.subnet.network_address)

    def address(self, slot: int) -> ipaddress.IPv4Address:
        return self.subnet.network_address + slot

    # host ------------------------------------------------------------------------------------

    def ensure_host(self) -> None:
        """Create the bridge and (re)load the nft table; idempotent."""
        commands = [] if (_SYS_NET / self.bridge).exists() else [f"link add {self.bridge} type bridge"]
        commands += [
            f"addr replace {self.gateway}/{self.subnet.prefixlen} dev {self.bridge}",
            f"link set {self.bridge} up",
        ]
        _run(["ip", "-batch", "-"], "\n".join(commands))
        _run(["nft", "-f", "-"], self._ruleset())
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1")

    def remove_host(self) -> None:
        """Remove the nft tables (the runtime's and hostd's egress tables, ``<table>_egress``,
        see ``hosts/egress/nft.py``) and the bridge; absent is fine. IPv4 forwarding stays on
        (other software on the host may rely on it)."""
        tables = _run(["nft", "list", "tables"]).splitlines()
        for family, table in (
            ("inet", self.table),
            ("inet", f"{self.table}_egress"),
            ("bridge", f"{self.table}_egress"),
        ):
            if f"table {family} {table}" in tables:
                _run(["nft", "delete", "table", family, table])
        if (_SYS_NET / self.bridge).exists():
            _run(["ip", "link", "del", self.bridge])

    def _ruleset(self) -> str:
        # Declaring, deleting and redefining the table in one `nft -f` transaction replaces
        # the rules atomically whether or not the table existed.
        br, t = self.bridge, self.table
        egress = "" if self.egress else f'\n    iifname "{br}" drop'
        return f"""
table inet {t} {{}}
delete table inet {t}
table inet {t} {{
  chain input {{
    type filter hook input priority filter; policy accept;
    iifname "{br}" ct state established,related accept
    iifname "{br}" ct status dnat accept
    iifname "{br}" drop
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    oifname "{br}" ct state established,related accept
    oifname "{br}" drop{egress}
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {self.subnet} oifname != "{br}" masquerade
  }}
}}
"""

    # per sandbox -----------------------------------------------------------------------------

    def create_interfaces(self, sandbox_id: str, slot: int, undo: Undo) -> None:
        """Create the netns and the veth pair in one ``ip -batch``: ``eth0`` already inside
        the netns, the host end an isolated port of the bridge."""
        veth = self.veth_name(slot)
        undo.push("delete netns", functools.partial(self.delete_netns, sandbox_id))
        undo.push("delete veth", functools.partial(self.delete_veth, slot))
        commands = [
            f"netns add {self.netns_name(sandbox_id)}",
            f"link add {veth} type veth peer name eth0 netns {self.netns_name(sandbox_id)}",
            f"link set {veth} master {self.bridge}",
            f"link set dev {veth} type bridge_slave isolated on",
            f"link set {veth} up",
        ]
        _run(["ip", "-batch", "-"], "\n".join(commands))

    def configure_inside(self, sandbox_id: str, slot: int) -> None:
        commands = [
            "link set lo up",
            f"addr add {self.address(slot)}/{self.subnet.prefixlen} dev eth0",
            "link set eth0 up",
            f"route add default via {self.gateway}",
        ]
        _run(["ip", "-n", self.netns_name(sandbox_id), "-batch", "-"], "\n".join(commands))

    def delete_interfaces(self, sandbox_id: str, slot: int | None) -> None:
        """``delete_veth`` and ``delete_netns`` in one ``ip -batch`` (a sandbox's stop)."""
        veth = None if slot is None else self.veth_name(slot)
        commands = []
        if veth is not None and (_SYS_NET / veth).exists():
            commands.append(f"link del {veth}")
        if self.netns_path(sandbox_id).exists():
            commands.append(f"netns del {self.netns_name(sandbox_id)}")
        if not commands:
            return
        try:
            _run(["ip", "-batch", "-"], "\n".join(commands))
        except RuntimeFailure:
            # One of them vanished meanwhile, which stops the batch: finish one by one.
            if slot is not None:
                self.delete_veth(slot)
            self.delete_netns(sandbox_id)

    def delete_veth(self, slot: int) -> None:
        """Delete the pair (both ends go together); absent is fine."""
        veth = self.veth_name(slot)
        if (_SYS_NET / veth).exists():
            _run(["ip", "link", "del", veth], unless_gone=_SYS_NET / veth)

    def delete_netns(self, sandbox_id: str) -> None:
        """Drop the netns name; the kernel frees the netns once no process is left in it."""
        if self.netns_path(sandbox_id).exists():
            _run(["ip", "netns", "del", self.netns_name(sandbox_id)], unless_gone=self.netns_path(sandbox_id))

    # inventory (for recovery) ----------------------------------------------------------------

    def netns_ids(self) -> set[str]:
        """Ids of the sandboxes that have a named netns of this instance."""
        prefix = self.netns_name("")
        if not NETNS_DIR.is_dir():
            return set()
        return {p.name[len(prefix) :] for p in NETNS_DIR.iterdir() if p.name.startswith(prefix)}

    def veth_slots(self) -> set[int]:
        """Slots whose veth is attached to the bridge."""
        ports = _SYS_NET / self.bridge / "brif"
        if not ports.is_dir():
            return set()
        names = (p.name for p in ports.iterdir())
        return {int(n[len(self._veth_prefix) :]) for n in names if n.startswith(self._veth_prefix)}


class SlotAllocator:
    """Hands out host offsets in the subnet: 2 … broadcast−1 (1 is the gateway).

    Allocation walks on from the last slot handed out, so a freed address is reused as late
    as possible (a peer's stale ARP entry for it then has long expired). Thread-safe.
    """

    def __init__(self, subnet: ipaddress.IPv4Network) -> None:
        self.first = 2
        self.last = subnet.num_addresses - 2
        self._used: set[int] = set()
        self._next = self.first
        self._lock = threading.Lock()

    def allocate(self) -> int:
        with self._lock:
            for offset in range(self.last - self.first + 1):
                slot = self.first + (self._next - self.first + offset) % (self.last - self.first + 1)
                if slot not in self._used:
                    self._used.add(slot)
                    self._next = slot + 1 if slot < self.last else self.first
                    return slot
        raise RuntimeFailure("no free address left in the sandbox subnet")

    def claim(self, slot: int) -> None:
        """Mark ``slot`` used (a sandbox adopted at recovery holds it)."""
        with self._lock:
            self._used.add(slot)

    def release(self, slot: int) -> None:
        with self._lock:
            self._used.discard(slot)


def _veth_prefix(bridge: str, last_slot: int) -> str:
    """``<bridge>-`` when ``<bridge>-<slot>`` fits in an interface name, else a short hash of
    the bridge name, so veths of different instances never collide either way."""
    readable = f"{bridge}-"
    if len(readable) + len(str(last_slot)) <= _IFNAMSIZ:
        return readable
    return "v" + hashlib.sha256(bridge.encode()).hexdigest()[:7] + "-"


def _run(argv: list[str], stdin: str | None = None, *, unless_gone: Path | None = None) -> str:
    """Run ``argv``; raise ``RuntimeFailure`` quoting its stderr when it fails, except for a
    deletion whose object (``unless_gone``) has disappeared anyway: someone else removed it
    between our check and our command, which is the outcome we wanted."""
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if done.returncode != 0 and not (unless_gone and not unless_gone.exists()):
        raise RuntimeFailure(f"{' '.join(argv[:3])} failed: {done.stderr.strip()}")
    return done.stdout
