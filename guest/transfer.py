"""The agent's file byte streams: ``fs.write`` (upload) and ``fs.read`` (download).

Each runs on a connection of its own (see "Streams" in ``contracts/guest.py``), in the thread
that reads that connection, so the socket's own flow control paces it: the agent reads the
next binary frame only once the previous one is on disk, and sends the next chunk only once
the host took the previous one. Memory stays at one frame whatever the file's size.

An upload is all or nothing. The bytes go to a temporary file next to the target (same
directory, so the final ``rename`` is atomic and never crosses a filesystem); the target is
replaced only after the host's end-of-data frame. A connection that ends early, a protocol
violation or a full disk removes the temporary file and leaves the target as it was.

Paths resolve like every other file operation of the agent (``guest/files.py``): by the
kernel, inside the sandbox, as the sandbox user.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from typing import Protocol

from guest import framing
from guest.files import FsError, octal, os_error, resolve

READ_CHUNK = 256 * 1024
"""Bytes per binary frame of a download: big enough to amortise the per-frame work, small
enough that a slow reader holds little in the socket buffers."""
NEW_FILE_MODE = 0o644


class Channel(Protocol):
    """The stream connection, as a stream handler sees it."""

    def read_frame(self) -> tuple[bytes, bool] | None:
        """The next frame's payload and whether it is binary; None when the host is gone."""

    def send(self, message: dict[str, object]) -> None: ...

    def send_binary(self, data: bytes) -> None:
        """Send one binary frame; raises ``OSError`` when the host is gone."""


class _Aborted(Exception):
    """The host ended the upload without its end-of-data frame, or broke the protocol."""


def write(request: framing.FsWriteRequest, channel: Channel, base_env: dict[str, str]) -> None:
    """Receive a file: ``fs.ready``, binary frames up to an empty one, ``fs.written``."""
    try:
        path, mode = _prepare_write(request, base_env.get("HOME") or "/")
        fd, temporary = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".dnah-upload-")
    except FsError as exc:
        channel.send(framing.error(request.id, exc.code, str(exc)))
        return
    except OSError as exc:
        channel.send(framing.error(request.id, *os_error(exc)))
        return
    try:
        channel.send(framing.fs_ready(request.id))
        size = _receive(fd, channel)
        os.fchmod(fd, mode)
        os.close(fd)
        fd = -1
        os.rename(temporary, path)
    except _Aborted as exc:
        _discard(fd, temporary)
        if str(exc):
            channel.send(framing.error(request.id, "bad_request", str(exc)))
        return
    except OSError as exc:
        _discard(fd, temporary)
        channel.send(framing.error(request.id, *os_error(exc)))
        return
    channel.send(framing.fs_written(request.id, path, size))


def _prepare_write(request: framing.FsWriteRequest, home: str) -> tuple[str, int]:
    """The absolute target and the mode it will get; creates the missing parents."""
    path = resolve(request.path, home)
    if path == "/":
        raise FsError("bad_request", "'/' is a directory")
    try:
        current = os.stat(path)
    except FileNotFoundError:
        current = None
    if current is not None and stat.S_ISDIR(current.st_mode):
        raise FsError("bad_request", f"{path}: is a directory")
    if request.mode is not None:
        mode = octal(request.mode)
    elif current is not None:
        mode = stat.S_IMODE(current.st_mode)
    else:
        mode = NEW_FILE_MODE
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path, mode


def _receive(fd: int, channel: Channel) -> int:
    """Write binary frames to ``fd`` until the empty one; the number of bytes written."""
    size = 0
    while True:
        frame = channel.read_frame()
        if frame is None:
            raise _Aborted("")
        data, binary = frame
        if not binary:
            raise _Aborted("an upload carries binary frames only")
        if not data:
            return size
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        size += len(data)


def _discard(fd: int, temporary: str) -> None:
    if fd >= 0:
        os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(temporary)


def read(request: framing.FsReadRequest, channel: Channel, base_env: dict[str, str]) -> None:
    """Send a file: ``fs.reading``, binary frames, an empty binary frame.

    The file is opened non-blocking, so a FIFO is refused instead of waiting for a writer;
    a host that goes away mid-file ends the stream (``OSError`` from ``send_binary``).
    """
    try:
        path = resolve(request.path, base_env.get("HOME") or "/")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FsError as exc:
        channel.send(framing.error(request.id, exc.code, str(exc)))
        return
    except OSError as exc:
        channel.send(framing.error(request.id, *os_error(exc)))
        return
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            channel.send(framing.error(request.id, "bad_request", f"{path}: is a directory"))
            return
        if not stat.S_ISREG(st.st_mode):
            channel.send(framing.error(request.id, "bad_request", f"{path}: not a regular file"))
            return
        os.set_blocking(fd, True)
        channel.send(framing.fs_reading(request.id, path, st.st_size))
        _send_content(fd, request.id, channel)
    finally:
        os.close(fd)


def _send_content(fd: int, request_id: int, channel: Channel) -> None:
    while True:
        try:
            chunk = os.read(fd, READ_CHUNK)
        except OSError as exc:  # EIO and the like: say so, the bytes sent are incomplete
            channel.send(framing.error(request_id, *os_error(exc)))
            return
        try:
            channel.send_binary(chunk)
        except OSError:
            return  # the host hung up; nothing to tell it
        if not chunk:
            return
