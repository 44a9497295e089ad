"""The few system calls vminit needs that Python's os module lacks: mount, umount2, reboot.

Called through libc with ctypes (stdlib); each raises OSError with the errno, like ``os``.
"""

from __future__ import annotations

import ctypes
import os

MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_RDONLY = 0x1
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MNT_DETACH = 0x2
RB_POWER_OFF = 0x4321FEDC
RB_DISABLE_CAD = 0
"""Ctrl-Alt-Del then sends SIGINT to PID 1 instead of rebooting at once."""

_libc = None


def _c() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source: str, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    def enc(s: str | None) -> bytes | None:
        return None if s is None else s.encode()

    _check(
        _c().mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}"
    )


def umount(target: str, flags: int = 0) -> None:
    _check(_c().umount2(target.encode(), flags), f"umount {target}")


def reboot(command: int) -> None:
    _check(_c().reboot(ctypes.c_int(command)), "reboot")
