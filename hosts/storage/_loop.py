"""The default pool: a sparse image file, formatted btrfs, on a loop device, mounted.

Every step is idempotent, because hostd runs it at each start: an image that exists is never
formatted again, a loop device already attached to the image is reused (``losetup -j``) and a
mountpoint that already has the image's filesystem mounted is left as it is. A restart thus
finds the same filesystem with the same data, mounted once.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from hosts.errors import RuntimeFailure

_LOOP_CONTROL = Path("/dev/loop-control")
_MOUNT_OPTIONS = "noatime"
"""Reads must not write: with atime updates, reading a file of a disk would rewrite (CoW) the
metadata its snapshots share."""


def mount_image(image: Path, mountpoint: Path, size_bytes: int) -> None:
    """Make sure ``image`` exists (formatted) and is mounted at ``mountpoint``."""
    mounted = mounted_source(mountpoint)
    if mounted is not None:
        if backing_file(mounted) != image.resolve():
            raise RuntimeFailure(f"{mountpoint} already has {mounted} mounted, not the pool image {image}")
        return
    if not image.exists():
        _format(image, size_bytes)
    device = _attached_loop(image) or _attach(image)
    mountpoint.mkdir(parents=True, exist_ok=True)
    _run("mount", "-t", "btrfs", "-o", _MOUNT_OPTIONS, device, str(mountpoint))


def detach_image(image: Path, mountpoint: Path) -> None:
    """Unmount the pool and free its loop device (tests and tear-down; hostd never does this)."""
    if mounted_source(mountpoint) is not None:
        _run("umount", str(mountpoint))
    while device := _attached_loop(image):
        try:
            _run("losetup", "--detach", device)
        except RuntimeFailure:
            # The kernel frees an autoclear device by itself once its last user (the mount)
            # is gone, which can land between the listing and the detach: only a device that
            # still backs the image is a failure.
            if backing_file(device) == image.resolve():
                raise


def mounted_source(mountpoint: Path) -> str | None:
    """The device mounted exactly at ``mountpoint`` in this mount namespace, if any."""
    target = str(mountpoint.resolve())
    source = None
    with open("/proc/self/mountinfo") as table:
        for line in table:
            fields = line.split()
            if _unescape(fields[4]) == target:
                # The last mount at a path is the visible one; the source is 2 after the "-".
                source = fields[fields.index("-", 6) + 2]
    return source


def backing_file(device: str) -> Path | None:
    """The file behind loop device ``device`` (``/dev/loopN``), or None for anything else."""
    name = os.path.basename(device)
    try:
        return Path(Path(f"/sys/block/{name}/loop/backing_file").read_text().strip()).resolve()
    except OSError:
        return None


def _format(image: Path, size_bytes: int) -> None:
    """Create the sparse image and format it; only a complete image gets the final name."""
    image.parent.mkdir(parents=True, exist_ok=True)
    partial = image.with_name(image.name + ".partial")
    with open(partial, "wb") as f:
        f.truncate(size_bytes)
    try:
        _run("mkfs.btrfs", "--quiet", "--label", "dnah-pool", str(partial))
        os.rename(partial, image)
    finally:
        partial.unlink(missing_ok=True)


def _attach(image: Path) -> str:
    """A free loop device with ``image`` on it; a machine (or container) without loop devices
    gets a message that says what to do instead of losetup's."""
    if not _LOOP_CONTROL.exists():
        raise RuntimeFailure(
            f"cannot attach the storage pool image {image}: this machine has no loop devices "
            f"({_LOOP_CONTROL} is missing). Load the loop module (modprobe loop); in a container, "
            "give it /dev/loop-control and /dev/loop*; or set DNAH_POOL_DIR to a directory on btrfs"
        )
    try:
        return _run("losetup", "--find", "--show", str(image)).strip()
    except RuntimeFailure as exc:
        raise RuntimeFailure(
            f"{exc} (no free loop device? see `losetup -a`; or set DNAH_POOL_DIR to a directory on btrfs)"
        ) from None


def _attached_loop(image: Path) -> str | None:
    out = _run("losetup", "--associated", str(image.resolve()), "--noheadings", "--output", "NAME")
    names = out.split()
    return names[0] if names else None


def _run(*args: str) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeFailure(f"{' '.join(args)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def _unescape(field: str) -> str:
    r"""Undo mountinfo's octal escapes (``\040`` for a space and so on)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)
