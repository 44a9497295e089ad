"""A VM sandbox's disk: a raw ext4 image file, a copy-on-write copy of its guest image's rootfs.

Layout in the storage pool (``hosts/storage``)::

    templates/vm-<digest>/rootfs.img   read-only subvolume: a guest image's rootfs, imported once
    disks/<sandbox id>/disk.img        writable subvolume holding the sandbox's disk

A disk is a reflink of the imported rootfs (``cp --reflink=always``: no data copied; blocks
are shared until the guest writes them), grown to the sandbox's ``disk_gb`` (a sparse
``truncate``, then ``resize2fs`` on the image while no VM has it open). Each disk lives in a
subvolume of its own, so everything the storage pool does with an OCI disk works on it as it
is: a read-only btrfs snapshot for a host-local snapshot (which also holds the VM's memory
file when there is one), a writable copy for restore and clone, qgroup usage for its size.

Growing happens offline only (a stopped sandbox, or before the first boot); a disk never
shrinks. Functions block.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from hosts.errors import RuntimeFailure
from hosts.storage import _btrfs
from hosts.storage.pool import StoragePool

DISK_FILE = "disk.img"
ROOTFS_FILE = "rootfs.img"
_GB = 2**30


def image_subvolume(pool: StoragePool, image_key: str) -> Path:
    """Where the pool keeps the rootfs of the guest image ``image_key``."""
    return pool.templates / f"vm-{hashlib.sha256(image_key.encode()).hexdigest()[:24]}"


def import_rootfs(pool: StoragePool, image_key: str, rootfs: Path) -> Path:
    """The read-only subvolume holding ``rootfs`` (a raw ext4 image) in the pool, imported the
    first time (copied into a scratch subvolume, then snapshotted read-only into place, so it
    appears only whole). Callers serialise imports of one key; a concurrent import from
    another process that wins the race is accepted."""
    final = image_subvolume(pool, image_key)
    if _btrfs.is_subvolume(final):
        return final
    with pool.scratch() as work:
        _btrfs.create(work)
        _run("cp", "--reflink=auto", "--sparse=always", str(rootfs), str(work / ROOTFS_FILE))
        os.chmod(work / ROOTFS_FILE, 0o444)
        try:
            _btrfs.snapshot(work, final, readonly=True)
        except RuntimeFailure:
            if not _btrfs.is_subvolume(final):
                raise
    return final


def create(pool: StoragePool, sandbox_id: str, source: Path, disk_gb: int) -> Path:
    """The disk of ``sandbox_id``: a subvolume with a reflink of ``source``'s rootfs, grown
    to ``disk_gb``. Returns the disk image's path. The caller registered its deletion
    (``pool.delete_disk``) first."""
    disk = pool.disk(sandbox_id)
    _btrfs.create(disk)
    image = disk / DISK_FILE
    _run("cp", "--reflink=always", str(source / ROOTFS_FILE), str(image))
    os.chmod(image, 0o600)
    grow(image, disk_gb)
    return image


def grow(image: Path, disk_gb: int) -> None:
    """Make the filesystem in ``image`` fill ``disk_gb`` (no VM may have it open); a disk at
    or above that size is left alone."""
    size = disk_gb * _GB
    if os.stat(image).st_size >= size:
        return
    os.truncate(image, size)
    # resize2fs wants a checked filesystem; -p repairs only what is safe without asking.
    done = subprocess.run(["e2fsck", "-f", "-p", str(image)], capture_output=True, text=True, check=False)
    if done.returncode >= 4:
        output = (done.stdout + done.stderr).strip()
        raise RuntimeFailure(f"e2fsck {image} failed ({done.returncode}): {output}")
    _run("resize2fs", str(image))


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeFailure(f"{argv[0]} failed: {(done.stderr or done.stdout).strip()}")
