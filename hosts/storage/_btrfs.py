"""The btrfs-progs commands the pool uses, each a blocking call that raises ``RuntimeFailure``
quoting btrfs's own message when it fails.

btrfs-progs is the supported interface to subvolumes and qgroups; every call here is one
short-lived process of a few milliseconds. The one exception is ``subvolume_info``, an ioctl,
because the field it is for (``ctransid``) is not printed by btrfs-progs 6.2.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import struct
import subprocess
import uuid
from pathlib import Path
from typing import IO

from hosts.errors import RuntimeFailure

SUBVOLUME_INO = 256
"""The inode number of every subvolume's root directory (BTRFS_FIRST_FREE_OBJECTID)."""
_COPY_CHUNK = 1 << 20

# BTRFS_IOC_GET_SUBVOL_INFO = _IOR(0x94, 60, struct btrfs_ioctl_get_subvol_info_args), the
# struct being 504 bytes; the offsets are its fields' (linux/btrfs.h, checked with offsetof).
_SUBVOL_INFO_SIZE = 504
_IOC_GET_SUBVOL_INFO = (2 << 30) | (_SUBVOL_INFO_SIZE << 16) | (0x94 << 8) | 60
_FLAGS_AT = 288
_UUID_AT = 296
_CTRANSID_AT = 344
_ROOT_SUBVOL_RDONLY = 1 << 0
# BTRFS_IOC_QUOTA_CTL = _IOWR(0x94, 40, struct btrfs_ioctl_quota_ctl_args {u64 cmd; u64 status}),
# cmd BTRFS_QUOTA_CTL_ENABLE_SIMPLE_QUOTA (Linux 6.7+; btrfs-progs 6.2 cannot ask for it).
_IOC_QUOTA_CTL = (3 << 30) | (16 << 16) | (0x94 << 8) | 40
_QUOTA_CTL_ENABLE_SIMPLE = 4
# BTRFS_IOC_FS_INFO = _IOR(0x94, 31, struct btrfs_ioctl_fs_info_args), 1024 bytes, fsid at 16.
_IOC_FS_INFO = (2 << 30) | (1024 << 16) | (0x94 << 8) | 31
_FSID_AT = 16


def btrfs(*args: str | Path) -> str:
    """Run ``btrfs ARGS`` and return its standard output."""
    proc = subprocess.run(["btrfs", *map(str, args)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeFailure(f"btrfs {' '.join(map(str, args))}: {_last_line(proc.stderr or proc.stdout)}")
    return proc.stdout


def filesystem_type(path: Path) -> str:
    """The name of the filesystem ``path`` is on (``btrfs``, ``ext2/ext3``, ``tmpfs`` …)."""
    proc = subprocess.run(["stat", "--file-system", "--format=%T", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeFailure(f"cannot tell the filesystem of {path}: {_last_line(proc.stderr)}")
    return proc.stdout.strip()


def is_subvolume(path: Path) -> bool:
    """Whether ``path`` is the root of a subvolume (a directory with the subvolume inode)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_ino == SUBVOLUME_INO


def create(path: Path) -> None:
    btrfs("subvolume", "create", path)


def snapshot(source: Path, dest: Path, *, readonly: bool) -> None:
    """Snapshot subvolume ``source`` at ``dest``; the new subvolume appears whole, at once."""
    btrfs("subvolume", "snapshot", *(["-r"] if readonly else []), source, dest)


def delete(path: Path) -> None:
    """Delete subvolume ``path`` (read-only or not); it must hold no nested subvolume."""
    btrfs("subvolume", "delete", path)


def set_readonly(path: Path, readonly: bool) -> None:
    btrfs("property", "set", "-ts", path, "ro", "true" if readonly else "false")


def subvolume_info(path: Path) -> tuple[str, int, bool]:
    """``(uuid, ctransid, readonly)`` of subvolume ``path``, from its root item.

    ``ctransid`` is the transaction that last changed the subvolume's contents (data, inodes,
    xattrs, directories); unlike the root item's ``generation`` it does not move when the
    subvolume is only snapshotted, sent or has its read-only flag toggled. It is set when the
    change is committed: ``sync`` first for changes still in memory.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        args = bytearray(_SUBVOL_INFO_SIZE)
        fcntl.ioctl(fd, _IOC_GET_SUBVOL_INFO, args)
    except OSError as exc:
        raise RuntimeFailure(f"cannot read the subvolume info of {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    (flags,) = struct.unpack_from("<Q", args, _FLAGS_AT)
    (ctransid,) = struct.unpack_from("<Q", args, _CTRANSID_AT)
    subvolume_uuid = str(uuid.UUID(bytes=bytes(args[_UUID_AT : _UUID_AT + 16])))
    return subvolume_uuid, ctransid, bool(flags & _ROOT_SUBVOL_RDONLY)


def sync(path: Path) -> None:
    """Write out dirty data and commit the transaction of the filesystem holding ``path``:
    ``ctransid`` and qgroup numbers are only brought up to date by a commit."""
    btrfs("filesystem", "sync", path)


def enable_quotas(path: Path) -> str:
    """Turn quotas on for the whole filesystem holding ``path``; return the mode in force,
    ``"simple"`` or ``"full"``. Quotas already on are left in their mode.

    Simple quotas (Linux 6.7+) charge each extent to the subvolume that wrote it, once: a
    snapshot costs what it costs without quotas, however many snapshots share the data. Full
    qgroups charge every subvolume for all the data it references, which makes each new
    snapshot slower the more snapshots share data (docs/runtime.md). A kernel without simple
    quotas gets full ones.
    """
    if (mode := quota_mode(path)) is not None:
        return mode
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.ioctl(fd, _IOC_QUOTA_CTL, struct.pack("<QQ", _QUOTA_CTL_ENABLE_SIMPLE, 0))
        return "simple"
    except OSError:
        btrfs("quota", "enable", path)
        return "full"
    finally:
        os.close(fd)


def filesystem_id(path: Path) -> str:
    """The UUID of the btrfs filesystem holding ``path`` (its name under /sys/fs/btrfs)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        args = bytearray(1024)
        fcntl.ioctl(fd, _IOC_FS_INFO, args)
    except OSError as exc:
        raise RuntimeFailure(f"cannot read the filesystem info of {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    return str(uuid.UUID(bytes=bytes(args[_FSID_AT : _FSID_AT + 16])))


def quota_mode(path: Path) -> str | None:
    """``"simple"`` or ``"full"`` when quotas are on for the filesystem holding ``path``, else
    None (read from sysfs, where the kernel says which mode is in force)."""
    mode_file = Path("/sys/fs/btrfs") / filesystem_id(path) / "qgroups" / "mode"
    try:
        mode = mode_file.read_text().strip()
    except FileNotFoundError:
        return None  # no qgroups directory: quotas are off
    return "simple" if mode == "squota" else "full"


def limit_referenced(path: Path, limit_bytes: int | None) -> None:
    btrfs("qgroup", "limit", str(limit_bytes) if limit_bytes is not None else "none", path)


def qgroup_usage(path: Path, *, settle: bool) -> tuple[int, int]:
    """``(referenced, exclusive)`` bytes of the qgroup of the subvolume holding ``path``;
    ``settle`` commits first, so the numbers include writes made since the last commit."""
    out = btrfs("qgroup", "show", "-f", "--raw", *(["--sync"] if settle else []), path)
    for line in out.splitlines():
        cols = line.split()
        if cols and cols[0].startswith("0/"):
            return int(cols[1]), int(cols[2])
    raise RuntimeFailure(f"no qgroup for {path} (are quotas enabled?)")


def send(path: Path, parent: Path | None, out: IO[bytes]) -> None:
    """Stream read-only subvolume ``path`` to ``out``: whole, or only what differs from
    read-only ``parent`` (which the receiving filesystem must then hold as well)."""
    args = ["btrfs", "send", "-q", *(["-p", str(parent)] if parent else []), str(path)]
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        while chunk := proc.stdout.read(_COPY_CHUNK):
            out.write(chunk)
        err = proc.stderr.read().decode(errors="replace")
        if proc.wait() != 0:
            raise RuntimeFailure(f"btrfs send {path}: {_last_line(err)}")


def receive(stream: IO[bytes], dest_dir: Path) -> str:
    """Apply a ``send`` stream under ``dest_dir``; return the name of the subvolume it made."""
    args = ["btrfs", "receive", "-e", str(dest_dir)]
    with subprocess.Popen(
        args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            while chunk := stream.read(_COPY_CHUNK):
                proc.stdin.write(chunk)
        except BrokenPipeError:
            pass  # receive gave up on the stream; its message and exit code say why
        finally:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
        output = proc.stdout.read().decode(errors="replace")
        if proc.wait() != 0:
            raise RuntimeFailure(f"btrfs receive: {_last_line(output)}")
    for line in output.splitlines():
        for prefix in ("At subvol ", "At snapshot "):
            if line.startswith(prefix):
                return line.removeprefix(prefix).strip()
    raise RuntimeFailure(f"btrfs receive did not name the subvolume it made: {_last_line(output)}")


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"
