"""A VM snapshot on a real btrfs pool (``hosts/vm/snapshot.py``): sealed into a read-only
subvolume whose identity the ``vm`` manifest records, verified by that identity (no hashing),
and refused once anything in it changed, went missing or contradicts the manifest."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from hosts.errors import SnapshotInvalid
from hosts.runtime import manifest
from hosts.runtime._layout import DiskBase
from hosts.storage import _btrfs, _loop
from hosts.storage.pool import PoolConfig, StoragePool
from hosts.vm import snapshot

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="btrfs pools need root (mount, losetup)")

BASE = DiskBase(template="dnah-base", content_hash="abc123")


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoragePool]:
    base = tmp_path_factory.mktemp("vm-snapshot-pool")
    config = PoolConfig(image=base / "pool.img", size_bytes=2 * 2**30, mountpoint=base / "mnt")
    try:
        yield StoragePool.open(config)
    finally:
        _loop.detach_image(config.image, config.mountpoint)


@pytest.fixture
def directory(pool: StoragePool, request: pytest.FixtureRequest) -> Iterator[Path]:
    path = pool.snapshots / request.node.name.replace("[", "-").replace("]", "")
    yield path
    pool.delete(path)


def _write(pool: StoragePool, directory: Path, *, memory: bool = True) -> manifest.Manifest:
    """What a VM backend does: the VMM's files and the disk image into ``begin``'s subvolume,
    then ``seal``."""
    files = snapshot.begin(directory)
    with open(files / "disk.img", "wb") as f:
        f.truncate(3 * 2**30)  # sparse, like a disk image: hashing it would read 3 GiB
        f.write(b"ext4")
    if memory:
        (files / "memory").write_bytes(b"pages" * 1000)
        (files / "state.json").write_bytes(b"{}")
    return snapshot.seal(
        pool,
        directory,
        sandbox_id="sb1",
        base=BASE,
        runtime="qemu",
        vmm_version="7.2.0",
        memory_file="memory" if memory else None,
        shape=(2, 512),
    )


def test_a_sealed_snapshot_is_a_read_only_subvolume_verified_by_identity(
    pool: StoragePool, directory: Path
) -> None:
    written = _write(pool, directory)

    assert manifest.read(directory) == written == manifest.read(directory, ["vm"])
    assert written.files == [] and written.disk is not None
    assert _btrfs.subvolume_info(directory / "disk")[2] is True  # read-only
    assert written.vm == manifest.VmState(disk="disk.img", memory_file="memory", cpu=2, ram_mb=512, disk_gb=3)
    assert written.memory and written.size == 3 * 2**30 + 5000 + 2
    assert snapshot.memory_of(directory, written) == directory / "disk" / "memory"
    assert snapshot.disk_of(directory, written) == directory / "disk" / "disk.img"
    with pytest.raises(SnapshotInvalid, match="vm snapshot, which this runtime cannot use"):
        manifest.read(directory, ["subvolume", "archive"])  # the OCI runtime's kinds
    with pytest.raises(OSError, match="Read-only file system"):  # nothing writes it by accident
        (directory / "disk" / "memory").write_bytes(b"other")


def test_a_changed_snapshot_is_refused(pool: StoragePool, directory: Path) -> None:
    _write(pool, directory)
    # The only way to change it: clear the read-only flag, write, set it again.
    _btrfs.set_readonly(directory / "disk", False)
    with open(directory / "disk" / "memory", "r+b") as f:
        f.write(b"P")
        os.fsync(f.fileno())
    with pytest.raises(SnapshotInvalid, match="does not match its manifest"):
        manifest.read(directory)  # writable now
    _btrfs.set_readonly(directory / "disk", True)
    # ctransid moves when the write is committed: setting the flag again does not commit (on
    # this kernel), the next transaction does (at most the commit interval later; now here).
    _btrfs.sync(directory / "disk")
    with pytest.raises(SnapshotInvalid, match="does not match its manifest"):
        manifest.read(directory)  # read-only again, but another state


def test_a_disk_only_snapshot_and_a_missing_part(pool: StoragePool, directory: Path) -> None:
    written = _write(pool, directory, memory=False)
    assert manifest.read(directory) == written
    assert (written.memory, snapshot.memory_of(directory, written)) == (False, None)
    manifest.check_restorable(written, "cloud-hypervisor", "41.0")  # the disk goes anywhere
    # A manifest naming a part the subvolume does not hold.
    vm = msgspec.structs.replace(written.vm, memory_file="memory")
    manifest.write(directory, msgspec.structs.replace(written, vm=vm, memory=True))
    with pytest.raises(SnapshotInvalid, match="snapshot file memory is missing"):
        manifest.read(directory)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"memory": False}, "contradicts itself about memory"),
        ({"vmm_version": None}, "lacks its VM part, runtime or VMM version"),
        ({"disk": None}, "has no subvolume, or has files"),
        ({"files": [manifest.SnapshotFile(name="disk.img", sha256="0" * 64, size=1)]}, "has files"),
    ],
)
def test_an_inconsistent_vm_manifest_is_refused(
    pool: StoragePool, directory: Path, change: dict[str, object], message: str
) -> None:
    written = _write(pool, directory)
    manifest.write(directory, msgspec.structs.replace(written, **change))
    with pytest.raises(SnapshotInvalid, match=message):
        manifest.read(directory)


def test_a_memory_state_restores_only_into_the_vmm_and_version_that_wrote_it(
    pool: StoragePool, directory: Path
) -> None:
    with_memory = _write(pool, directory)
    manifest.check_restorable(with_memory, "qemu", "7.2.0")
    with pytest.raises(SnapshotInvalid, match=r"memory of a qemu 7\.2\.0 VM; this host runs qemu 8\.0\.0"):
        manifest.check_restorable(with_memory, "qemu", "8.0.0")
    with pytest.raises(SnapshotInvalid, match=r"this host runs cloud-hypervisor 41\.0"):
        manifest.check_restorable(with_memory, "cloud-hypervisor", "41.0")
