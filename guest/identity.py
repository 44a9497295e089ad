"""Apply an ``IdentityRefresh`` inside a VM (vminit, as root): make a restored or forked VM its own machine.

Every VM restored from one memory snapshot wakes up with the same kernel RNG state, boot id,
hostname, machine id and a clock stopped at the snapshot. Each part is fixed here with the
kernel's own interface: the entropy is mixed into the pool *and credited*
(``RNDADDENTROPY``, unlike a plain write to /dev/urandom), so the next random bytes differ
between forks; ``sethostname``; /etc/machine-id rewritten; the boot id, which the kernel
generates once and never changes, is shown through a bind mount of a file over
/proc/sys/kernel/random/boot_id (rewritten in place on later refreshes, so the mount keeps
showing it); ``clock_settime(CLOCK_REALTIME)``. eth0 takes the VM's own MAC (forks of one
snapshot wake with the snapshotted VM's, and two on one bridge would take each other's frames)
and, when the host gives one, a new address (``guest/vmnet.py``).
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import time
from pathlib import Path

from guest import vmnet, vmsys

RNDADDENTROPY = 0x40085203
"""``_IOW('R', 0x03, int[2])``: ``struct rand_pool_info {int entropy_count; int buf_size; u32 buf[]}``."""
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
BOOT_ID_FILE = Path("/run/dnah-init/boot_id")
"""In a root-only directory: /run/dnah belongs to the agent's user."""
INTERFACE = "eth0"
ETC = Path("/etc")

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def apply(refresh: dict[str, Any], etc: Path = ETC) -> None:
    """Apply a parsed ``IdentityRefresh`` (``guest.vmproto.parse_control``); raises OSError."""
    add_entropy(refresh["entropy"])
    time.clock_settime_ns(time.CLOCK_REALTIME, refresh["unix_time_ns"])
    set_hostname(refresh["hostname"], etc)
    write_machine_id(refresh["machine_id"], etc)
    set_boot_id(refresh["boot_id"])
    if refresh.get("mac"):
        vmnet.set_mac(INTERFACE, refresh["mac"])
    if refresh.get("address"):
        vmnet.configure(INTERFACE, refresh["address"], refresh.get("gateway"))


def add_entropy(data: bytes, device: str = "/dev/urandom") -> None:
    """Mix ``data`` into the kernel's pool, crediting 8 bits per byte (needs CAP_SYS_ADMIN)."""
    info = struct.pack("ii", len(data) * 8, len(data)) + data
    fd = os.open(device, os.O_WRONLY)
    try:
        fcntl.ioctl(fd, RNDADDENTROPY, info)
    finally:
        os.close(fd)


def set_hostname(hostname: str, etc: Path) -> None:
    """The kernel's hostname, /etc/hostname and /etc/hosts (sudo resolves its own host name)."""
    socket.sethostname(hostname)
    write_file(etc / "hostname", f"{hostname}\n")
    write_file(etc / "hosts", hosts_file(hostname))


def hosts_file(hostname: str) -> str:
    return (
        "127.0.0.1\tlocalhost\n"
        f"127.0.1.1\t{hostname}\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        "ff02::1\tip6-allnodes\n"
        "ff02::2\tip6-allrouters\n"
    )


def write_machine_id(machine_id: str, etc: Path) -> None:
    write_file(etc / "machine-id", f"{machine_id}\n", mode=0o444)


def set_boot_id(boot_id: str, source: Path = BOOT_ID_FILE, target: Path = BOOT_ID) -> None:
    """Show ``boot_id`` at ``target``: a file bound over it once, rewritten in place afterwards."""
    bound = source.exists()
    source.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(source, "w") as f:  # in place: a rename would leave the mount on the old inode
        f.write(f"{boot_id}\n")
    os.chmod(source, 0o444)
    if not bound:
        vmsys.mount(str(source), str(target), None, vmsys.MS_BIND)


def write_file(path: Path, text: str, mode: int = 0o644) -> None:
    """Replace ``path`` atomically (a reader never sees half of it)."""
    tmp = path.with_name(f".{path.name}.dnah-tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
