"""What the host tells a microVM's init (``guest/vminit.py``): boot parameters and control messages.

Two channels, chosen by size and timing:

* **Boot parameters** ride on the kernel command line (``BootParams.to_cmdline``): what vminit
  needs before anything else runs — hostname, the sandbox's address, the channel kind, the
  agent's ids. The command line is at most 2 KiB (x86 ``COMMAND_LINE_SIZE``) and shared with
  the VMM's own flags (``console=``, ``tsc_early_khz=``), so only short, fixed-shape values go
  there. Every key starts with ``dnah.``: the kernel treats a dotted ``a.b=c`` as a module
  parameter and neither passes it to init's environment nor complains; vminit reads
  ``/proc/cmdline``. Values are restricted to characters that need no quoting.
* **Control messages** travel on ``CONTROL_PORT`` through the same channel as the agent (the
  hybrid-vsock ``CONNECT 53`` handshake, then one JSON object per line each way). vminit
  answers them as root, which the agent (uid 1000) is not. ``Configure`` carries what may not
  fit the command line — the sandbox's environment variables (up to ``COMMAND_MAX_BYTES``) —
  and is sent once after boot when ``BootParams.configure`` is set: vminit starts the agent only
  after it, so the agent's environment is exactly what the OCI runtime gives its agent.
  ``IdentityRefresh`` makes a restored or forked VM a distinct machine; ``SetClock`` sets the
  guest's clock after every resume (a paused VM's clock stands still) and last in a restore;
  ``Poweroff`` is a clean shutdown the VMM cannot ask for otherwise (microvm has no power
  button the guest listens to).

The guest parses all of this by hand (``guest/vmproto.py``, stdlib only);
``tests/guest/test_vminit.py`` proves both ends agree.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

import msgspec

from contracts.fields import EnvMap, check_command_size

CONTROL_PORT = 53
"""The channel port of vminit's control handler (the agent's is ``contracts.guest.AGENT_PORT``)."""
CMDLINE_PREFIX = "dnah."
MAX_CONTROL_LINE = 8 * 2**20
"""Longest control line either end accepts (a ``Configure`` with the largest allowed environment
fits with room to spare)."""
ENTROPY_MIN_BYTES = 32

HOSTNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
"""What a sandbox id may be (hostd's ids), so a sandbox's hostname is its id."""
HEX32_RE = re.compile(r"[0-9a-f]{32}")
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
MAC_RE = re.compile(r"[0-9a-f][02468ace](:[0-9a-f]{2}){5}")
"""A unicast MAC, lowercase, colon-separated."""


class BootParams(msgspec.Struct, frozen=True, kw_only=True):
    """vminit's settings for one boot, as ``dnah.<key>=<value>`` words on the kernel command line."""

    hostname: str
    address: str | None = None
    """The sandbox's IPv4 address with prefix (``10.214.0.5/24``) on ``eth0``; None: no NIC."""
    gateway: str | None = None
    """The default route's next hop; None: no default route."""
    dns: tuple[str, ...] = ()
    """Name servers for /etc/resolv.conf, in order."""
    channel: Literal["serial", "vsock"] = "serial"
    """``serial``: the multiplexed virtio-serial port (QEMU); ``vsock``: one vsock stream per
    connection (Cloud Hypervisor)."""
    agent_uid: int = 1000
    agent_gid: int = 1000
    configure: bool = False
    """Wait for a ``Configure`` on ``CONTROL_PORT`` before starting the agent."""

    def __post_init__(self) -> None:
        if not HOSTNAME_RE.fullmatch(self.hostname):
            raise ValueError(f"hostname {self.hostname!r} is not 1-63 letters, digits, '_', '-', '.'")
        _check_network(self.address, self.gateway)
        for server in self.dns:
            ipaddress.ip_address(server)
        for uid in (self.agent_uid, self.agent_gid):
            if not 0 < uid < 2**31:
                raise ValueError(f"agent id {uid} out of range")

    def to_cmdline(self) -> str:
        """The ``dnah.*`` words, space-separated, for the VMM to append its own flags to."""
        words = [f"hostname={self.hostname}"]
        if self.address is not None:
            words.append(f"address={self.address}")
        if self.gateway is not None:
            words.append(f"gateway={self.gateway}")
        if self.dns:
            words.append("dns=" + ",".join(self.dns))
        words += [f"channel={self.channel}", f"uid={self.agent_uid}", f"gid={self.agent_gid}"]
        if self.configure:
            words.append("configure=1")
        return " ".join(CMDLINE_PREFIX + word for word in words)

    @classmethod
    def from_cmdline(cls, cmdline: str) -> BootParams:
        """The parameters in a whole kernel command line (other words are ignored)."""
        values: dict[str, str] = {}
        for word in cmdline.split():
            key, sep, value = word.partition("=")
            if sep and key.startswith(CMDLINE_PREFIX):
                values[key[len(CMDLINE_PREFIX) :]] = value
        return cls(
            hostname=values["hostname"],
            address=values.get("address"),
            gateway=values.get("gateway"),
            dns=tuple(s for s in values.get("dns", "").split(",") if s),
            channel="vsock" if values.get("channel") == "vsock" else "serial",
            agent_uid=int(values.get("uid", "1000")),
            agent_gid=int(values.get("gid", "1000")),
            configure=values.get("configure") == "1",
        )


class _Control(msgspec.Struct, frozen=True, kw_only=True, tag_field="t"):
    pass


class Configure(_Control, frozen=True, tag="configure"):
    """The agent's environment on top of the base (PATH, HOME, LANG), as ``SandboxSpec.env``."""

    env: EnvMap = {}

    def __post_init__(self) -> None:
        check_command_size([], self.env)


class IdentityRefresh(_Control, frozen=True, tag="identity"):
    """Make a restored or forked VM a machine of its own: new hostname, machine id, boot id,
    fresh kernel entropy, the host's clock, its own MAC; and, when it moved, a new address."""

    hostname: str
    machine_id: str
    """32 lowercase hex digits (/etc/machine-id)."""
    boot_id: str
    """A lowercase UUID, shown at /proc/sys/kernel/random/boot_id."""
    entropy: Annotated[str, msgspec.Meta(pattern=r"^([0-9a-f]{2}){32,512}$")]
    """Hex of ``ENTROPY_MIN_BYTES`` or more random bytes, mixed into the kernel's pool (credited)."""
    unix_time_ns: Annotated[int, msgspec.Meta(ge=0)]
    address: str | None = None
    """A new IPv4 address with prefix for eth0; None keeps the current one."""
    gateway: str | None = None
    mac: str | None = None
    """eth0's new MAC (the VM's own; every fork of one snapshot wakes with the snapshotted
    VM's); None keeps the current one."""

    def __post_init__(self) -> None:
        if not HOSTNAME_RE.fullmatch(self.hostname):
            raise ValueError(f"hostname {self.hostname!r} is not 1-63 letters, digits, '_', '-', '.'")
        if not HEX32_RE.fullmatch(self.machine_id):
            raise ValueError("machine_id must be 32 lowercase hex digits")
        if not UUID_RE.fullmatch(self.boot_id):
            raise ValueError("boot_id must be a lowercase UUID")
        if self.mac is not None and not MAC_RE.fullmatch(self.mac):
            raise ValueError(f"mac {self.mac!r} is not a lowercase unicast MAC")
        _check_network(self.address, self.gateway)


class SetClock(_Control, frozen=True, tag="clock"):
    """Set the guest's clock (``CLOCK_REALTIME``) to the host's, read just before sending."""

    unix_time_ns: Annotated[int, msgspec.Meta(ge=0)]


class Poweroff(_Control, frozen=True, tag="poweroff"):
    """Stop the agent, sync, unmount, power off. Answered before the power goes."""


ControlMessage = Configure | IdentityRefresh | SetClock | Poweroff


class ControlReply(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool
    error: str = ""


def _check_network(address: str | None, gateway: str | None) -> None:
    """An IPv4 address with an explicit prefix, and an IPv4 gateway (ValueError otherwise)."""
    if address is not None:
        if "/" not in address:
            raise ValueError(f"address {address!r} needs a prefix length")
        ipaddress.IPv4Interface(address)
    if gateway is not None:
        ipaddress.IPv4Address(gateway)


def encode_control(message: ControlMessage) -> bytes:
    """One control line, newline included."""
    return msgspec.json.encode(message) + b"\n"


def decode_reply(line: bytes) -> ControlReply:
    return msgspec.json.decode(line, type=ControlReply)
