"""A VM's network setup (loopback up, eth0's address, the default route, its MAC) with ioctls, stdlib only.

vminit could run the template's ``ip`` (iproute2), but it also changes the address later, from
the control handler's thread while its main thread reaps every child with ``waitpid(-1)``:
a child's exit status could be stolen there and a failed ``ip`` look like a success. The
classic socket ioctls (``SIOCSIFADDR``, ``SIOCSIFNETMASK``, ``SIOCSIFFLAGS``, ``SIOCADDRT``)
need no child process and do all a sandbox needs: one address and a default route, and
(``SIOCSIFHWADDR``) the MAC a fork must not share with its siblings.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import socket
import struct

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCSIFADDR = 0x8916
SIOCSIFNETMASK = 0x891C
SIOCSIFHWADDR = 0x8924
ARPHRD_ETHER = 1
SIOCADDRT = 0x890B
SIOCDELRT = 0x890C
IFF_UP = 0x1
RTF_UP = 0x1
RTF_GATEWAY = 0x2
_IFREQ_SIZE = 40
_RTENTRY = "@L16s16s16sHhLPhPLLH0L"
"""``struct rtentry`` on LP64: pad, dst, gateway, genmask, flags, pad, pad, pad, metric, dev,
mtu, window, irtt; the trailing ``0L`` adds the struct's tail padding."""


def configure(interface: str, address: str | None, gateway: str | None) -> None:
    """Bring up ``lo`` and ``interface``; give ``interface`` ``address`` (``a.b.c.d/len``,
    replacing its primary address) and make ``gateway`` the only default route."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        _up(sock, "lo")
        if address is None:
            return
        iface = ipaddress.IPv4Interface(address)
        _ioctl(sock, SIOCSIFADDR, _ifreq_addr(interface, str(iface.ip)))
        _ioctl(sock, SIOCSIFNETMASK, _ifreq_addr(interface, str(iface.netmask)))
        _up(sock, interface)
        # Replacing the address dropped the routes through the old one; a default route
        # that survived (same subnet) goes too, so exactly one remains.
        while True:
            try:
                _ioctl(sock, SIOCDELRT, _rtentry(None, 0))
            except OSError as exc:
                if exc.errno != errno.ESRCH:
                    raise
                break
        if gateway is not None:
            _ioctl(sock, SIOCADDRT, _rtentry(gateway, RTF_UP | RTF_GATEWAY))


def set_mac(interface: str, mac: str) -> None:
    """Give ``interface`` the MAC ``mac`` (``aa:bb:cc:dd:ee:ff``) while it stays up. virtio-net
    allows a live change and tells the device (QEMU's filters frames by it) through its control
    queue where the device offers that; Cloud Hypervisor's does not filter."""
    raw = bytes.fromhex(mac.replace(":", ""))
    request = struct.pack("16sH6s", interface.encode(), ARPHRD_ETHER, raw).ljust(_IFREQ_SIZE, b"\0")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        _ioctl(sock, SIOCSIFHWADDR, request)


def _up(sock: socket.socket, interface: str) -> None:
    raw = _ioctl(sock, SIOCGIFFLAGS, struct.pack("16sh", interface.encode(), 0).ljust(_IFREQ_SIZE, b"\0"))
    flags = struct.unpack_from("16sh", raw)[1]
    _ioctl(
        sock, SIOCSIFFLAGS, struct.pack("16sh", interface.encode(), flags | IFF_UP).ljust(_IFREQ_SIZE, b"\0")
    )


def _sockaddr_in(ip: str) -> bytes:
    return struct.pack("=H2s4s8x", socket.AF_INET, b"\0\0", socket.inet_aton(ip))


def _ifreq_addr(interface: str, ip: str) -> bytes:
    return (interface.encode().ljust(16, b"\0") + _sockaddr_in(ip)).ljust(_IFREQ_SIZE, b"\0")


def _rtentry(gateway: str | None, flags: int) -> bytes:
    any_addr = _sockaddr_in("0.0.0.0")
    gw = _sockaddr_in(gateway) if gateway else any_addr
    return struct.pack(_RTENTRY, 0, any_addr, gw, any_addr, flags, 0, 0, 0, 0, 0, 0, 0, 0)


def _ioctl(sock: socket.socket, request: int, arg: bytes) -> bytes:
    return fcntl.ioctl(sock.fileno(), request, arg)
