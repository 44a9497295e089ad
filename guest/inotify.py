"""Linux's inotify, through ``ctypes`` on the C library: the stdlib has no binding, and the
agent may import nothing else. Only what ``guest/watch.py`` needs: one non-blocking instance,
adding and removing watches, and reading the events it has queued.

Stdlib only, like the rest of the agent.
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct

from guest import lazy

IN_MODIFY = 0x0000_0002
IN_ATTRIB = 0x0000_0004
IN_MOVED_FROM = 0x0000_0040
IN_MOVED_TO = 0x0000_0080
IN_CREATE = 0x0000_0100
IN_DELETE = 0x0000_0200
IN_Q_OVERFLOW = 0x0000_4000
"""The kernel's queue for the instance was full: events were lost (``wd`` is -1)."""
IN_IGNORED = 0x0000_8000
"""The watch is gone (removed, or its directory deleted or unmounted)."""
IN_ONLYDIR = 0x0100_0000
IN_DONTFOLLOW = 0x0200_0000
IN_EXCL_UNLINK = 0x0400_0000
IN_ISDIR = 0x4000_0000

_EVENT = struct.Struct("iIII")
"""``struct inotify_event`` without its name: wd, mask, cookie, len (the name's padded size)."""
READ_SIZE = 64 * 1024
"""Bytes read at once; the kernel needs at least one event with a NAME_MAX name (~272)."""


class Event:
    """One event: the watch it came from, what happened, the cookie that pairs a
    ``IN_MOVED_FROM`` with its ``IN_MOVED_TO``, and the entry's name in the watched directory
    ("" for the directory itself). Names that are not UTF-8 have their bad bytes replaced
    by U+FFFD: an event's name is for a person or a JSON reply, not for opening the file."""

    __slots__ = ("cookie", "mask", "name", "wd")

    def __init__(self, wd: int, mask: int, cookie: int, name: str) -> None:
        self.wd, self.mask, self.cookie, self.name = wd, mask, cookie, name

    def __repr__(self) -> str:
        return f"Event(wd={self.wd}, mask={self.mask:#x}, cookie={self.cookie}, name={self.name!r})"


class Inotify:
    """One inotify instance (a file descriptor, non-blocking and close-on-exec). Raises
    ``OSError`` when the kernel has no inotify (``ENOSYS``) or refuses another instance
    (``EMFILE``: the user's ``max_user_instances``)."""

    def __init__(self) -> None:
        lazy.load("ctypes")  # on the agent's import lock: guest/lazy.py
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        self._get_errno = ctypes.get_errno
        self._init = libc.inotify_init1
        self._init.argtypes = [ctypes.c_int]
        self._add = libc.inotify_add_watch
        self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self._rm = libc.inotify_rm_watch
        self._rm.argtypes = [ctypes.c_int, ctypes.c_int]
        fd = self._init(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            raise self._error("inotify_init1")
        self.fd: int = fd

    def add_watch(self, path: str, mask: int) -> int:
        """Watch ``path`` for ``mask``; the watch descriptor. The same inode always gets the
        same descriptor (its mask replaced by ``mask``)."""
        wd = self._add(self.fd, os.fsencode(path), mask)
        if wd < 0:
            raise self._error("inotify_add_watch", path)
        return int(wd)

    def rm_watch(self, wd: int) -> None:
        """Stop a watch; one the kernel already dropped (its directory deleted) is fine."""
        if self._rm(self.fd, wd) < 0 and self._get_errno() != errno.EINVAL:
            raise self._error("inotify_rm_watch")

    def read(self) -> list[Event]:
        """The events queued now (none when there are none: the descriptor does not block)."""
        try:
            data = os.read(self.fd, READ_SIZE)
        except BlockingIOError:
            return []
        return parse(data)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)

    def _error(self, call: str, path: str | None = None) -> OSError:
        code = self._get_errno()
        return OSError(code, f"{call}: {os.strerror(code)}", path)


def parse(data: bytes) -> list[Event]:
    """The events in one ``read`` of an inotify descriptor (always whole events)."""
    events: list[Event] = []
    offset = 0
    while offset + _EVENT.size <= len(data):
        wd, mask, cookie, size = _EVENT.unpack_from(data, offset)
        offset += _EVENT.size
        raw = data[offset : offset + size].split(b"\0", 1)[0]
        offset += size
        events.append(Event(wd, mask, cookie, raw.decode("utf-8", "replace")))
    return events
