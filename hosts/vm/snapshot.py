"""A VM sandbox's host-local snapshot: a read-only btrfs subvolume of the VM's files, named by identity.

A snapshot directory (made by the snapshot store inside the storage pool)::

    manifest.json   kind ``vm`` (``hosts/runtime/manifest.py``): the subvolume's uuid and
                    ctransid, the VM's shape, the VMM and its version
    disk/           read-only subvolume: ``disk.img``, a reflink of the sandbox's disk image;
                    for a running VM also the VMM's memory state (QEMU: ``memory``; Cloud
                    Hypervisor: ``config.json``, ``state.json``, ``memory-ranges``)

``begin`` makes ``disk/`` writable and empty; the backend has its VMM write the memory state
there and reflinks the disk image in; ``seal`` fsyncs every file, makes the subvolume read-only
and writes the manifest with its identity.

**What integrity a host-local snapshot needs, and why no hashes.** The snapshot never leaves
its host's pool, and only hostd (root) writes there. The core signs the manifest, so a restore
must use exactly the data the manifest was written for, and must notice if it was changed
since. The identity does both: ``uuid`` is never reused, so another subvolume cannot pass for
this one, and ``ctransid`` moves with any committed change to the subvolume's contents, which a
read-only subvolume only allows after its read-only flag is cleared (a change counts once
committed: within btrfs's commit interval, 30 s by default). Corruption underneath (the medium)
is btrfs's own business: every data block has a checksum (the pool is never ``nodatasum``), and
a bad block reads as an I/O error, never as wrong bytes, so a restore fails instead of loading
a damaged memory state. What sha256 would add on top is protection against root on the host,
which can forge anything else too. So nothing is hashed: checking a snapshot is one ioctl
(``manifest.read``), where sha256 over a sparse 1-3 GiB disk image cost 1-3 s each time a
snapshot was written, and again each time it was used (the snapshot store checks it, then the
runtime). Functions block.
"""

from __future__ import annotations

import os
from pathlib import Path

from hosts.runtime import manifest
from hosts.runtime._layout import DiskBase
from hosts.storage import _btrfs
from hosts.storage.pool import StoragePool
from hosts.vm.disk import DISK_FILE

_GB = 2**30


def begin(directory: Path) -> Path:
    """Make ``directory`` (if needed) and the empty, writable subvolume the VM's files go in."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    files = directory / manifest.DISK
    _btrfs.create(files)
    return files


def files_of(directory: Path) -> Path:
    """Where a snapshot's VM files are (``begin``'s subvolume)."""
    return directory / manifest.DISK


def seal(
    pool: StoragePool,
    directory: Path,
    *,
    sandbox_id: str,
    base: DiskBase,
    runtime: str,
    vmm_version: str,
    memory_file: str | None,
    shape: tuple[int, int],
) -> manifest.Manifest:
    """Make ``begin``'s subvolume read-only and write the manifest naming it: the disk image,
    ``memory_file`` (the VMM's memory state, inside it) when the running VM was captured, the
    VM's ``(cpu, ram_mb)``, the VMM and its version."""
    subvolume = files_of(directory)
    size = 0
    for entry in sorted(subvolume.iterdir()):
        # Written data must be on disk before the flag goes on: writeback after the commit
        # that sets it would move ctransid past the identity recorded here.
        with open(entry, "rb") as f:
            os.fsync(f.fileno())
        size += entry.stat().st_size
    _btrfs.set_readonly(subvolume, True)
    identity = pool.identity(subvolume)
    image = subvolume / DISK_FILE
    written = manifest.Manifest(
        sandbox_id=sandbox_id,
        template=base.template,
        content_hash=base.content_hash,
        kind="vm",
        runtime=runtime,
        vmm_version=vmm_version,
        disk=manifest.SubvolumeDisk(
            name=manifest.DISK, uuid=identity.uuid, ctransid=identity.ctransid, size=size
        ),
        vm=manifest.VmState(
            disk=DISK_FILE,
            memory_file=memory_file,
            cpu=shape[0],
            ram_mb=shape[1],
            disk_gb=-(-image.stat().st_size // _GB),
        ),
        memory=memory_file is not None,
    )
    manifest.write(directory, written)
    return written


def memory_of(directory: Path, found: manifest.Manifest) -> Path | None:
    """The memory state file of the verified snapshot ``found`` in ``directory``, if it has one."""
    if found.vm is None or found.vm.memory_file is None:
        return None
    return files_of(directory) / found.vm.memory_file


def disk_of(directory: Path, found: manifest.Manifest) -> Path:
    """The disk image of the verified snapshot ``found`` in ``directory``."""
    assert found.vm is not None
    return files_of(directory) / found.vm.disk
