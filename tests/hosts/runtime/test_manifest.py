"""The backend-neutral snapshot manifest: manifests already on disk still read, each kind is
verified against its data, a runtime reads only the kinds it can use, and a memory state is
refused by any VMM but the one (and version) that wrote it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import msgspec
import pytest

from hosts.errors import SnapshotInvalid
from hosts.runtime import manifest
from hosts.runtime.manifest import Manifest, VmState

TAR = b"tar!\n"
OLD_MANIFEST = b"""{
  "sandbox_id": "sb1",
  "template": "dnah-base",
  "content_hash": "abc123",
  "kind": "archive",
  "layer": "disk",
  "files": [
    {
      "name": "rootfs.tar.zst",
      "sha256": "%s",
      "size": 5
    }
  ],
  "disk": null,
  "memory": false
}
""" % hashlib.sha256(TAR).hexdigest().encode()
"""A manifest byte for byte as hostd wrote it before the format was shared (no ``runtime``,
``vmm_version`` nor ``vm``): the core signed these bytes, so they are read as they are."""


def test_a_manifest_written_before_the_neutral_format_still_reads(tmp_path: Path) -> None:
    (tmp_path / "rootfs.tar.zst").write_bytes(TAR)
    (tmp_path / "manifest.json").write_bytes(OLD_MANIFEST)

    old = manifest.read(tmp_path)

    assert (old.kind, old.runtime, old.vmm_version, old.vm) == ("archive", None, None, None)
    assert old.memory is False
    assert old.size == len(TAR)
    assert (tmp_path / "manifest.json").read_bytes() == OLD_MANIFEST  # never rewritten
    # A runtime that uses only VM snapshots refuses it by kind, before anything else.
    with pytest.raises(SnapshotInvalid, match="holds a archive snapshot, which this runtime cannot use"):
        manifest.read(tmp_path, ["vm"])


def test_the_namespace_runtimes_manifest_is_still_refused() -> None:
    with pytest.raises(SnapshotInvalid, match="namespace runtime"):
        manifest.decode(b'{"sandbox_id": "sb1", "template": "t", "content_hash": "h", "files": []}')


def _vm_snapshot(directory: Path, *, memory: bool = True) -> Manifest:
    """What a VM backend writes: a disk image, a memory state, a VMM file, then the manifest."""
    (directory / "disk.img").write_bytes(b"ext4" * 100)
    names = ["disk.img"]
    if memory:
        (directory / "memory.bin").write_bytes(b"pages" * 100)
        (directory / "vmm.json").write_bytes(b"{}")
        names += ["memory.bin", "vmm.json"]
    written = Manifest(
        sandbox_id="sb1",
        template="dnah-base",
        content_hash="abc123",
        kind="vm",
        runtime="qemu",
        vmm_version="7.2.0",
        files=[manifest.describe_file(directory / name) for name in names],
        vm=VmState(
            disk="disk.img", memory_file="memory.bin" if memory else None, cpu=2, ram_mb=512, disk_gb=4
        ),
        memory=memory,
    )
    manifest.write(directory, written)
    return written


def test_a_vm_snapshot_round_trips_and_is_checked_file_by_file(tmp_path: Path) -> None:
    written = _vm_snapshot(tmp_path)

    assert manifest.read(tmp_path) == written == manifest.read(tmp_path, ["vm"])
    assert written.size == 400 + 500 + 2
    with pytest.raises(SnapshotInvalid, match="vm snapshot, which this runtime cannot use"):
        manifest.read(tmp_path, ["subvolume", "archive"])  # the OCI runtime's kinds
    (tmp_path / "memory.bin").write_bytes(b"pages" * 99 + b"pagez")
    with pytest.raises(SnapshotInvalid, match=r"memory\.bin in .* does not match its manifest"):
        manifest.read(tmp_path)
    (tmp_path / "memory.bin").unlink()
    with pytest.raises(SnapshotInvalid, match=r"memory\.bin is missing"):
        manifest.read(tmp_path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"memory": False}, "contradicts itself about memory"),
        ({"vmm_version": None}, "lacks its VM part, runtime or VMM version"),
        ({"files": []}, "does not hash its disk.img"),
    ],
)
def test_an_inconsistent_vm_manifest_is_refused(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    written = _vm_snapshot(tmp_path)
    manifest.write(tmp_path, msgspec.structs.replace(written, **change))
    with pytest.raises(SnapshotInvalid, match=message):
        manifest.read(tmp_path)


def test_a_memory_state_restores_only_into_the_vmm_and_version_that_wrote_it(tmp_path: Path) -> None:
    with_memory = _vm_snapshot(tmp_path)
    manifest.check_restorable(with_memory, "qemu", "7.2.0")
    with pytest.raises(SnapshotInvalid, match=r"memory of a qemu 7\.2\.0 VM; this host runs qemu 8\.0\.0"):
        manifest.check_restorable(with_memory, "qemu", "8.0.0")
    with pytest.raises(SnapshotInvalid, match=r"this host runs cloud-hypervisor 41\.0"):
        manifest.check_restorable(with_memory, "cloud-hypervisor", "41.0")
    # The disk alone goes anywhere its kind is understood.
    (tmp_path / "d").mkdir()
    disk_only = _vm_snapshot(tmp_path / "d", memory=False)
    manifest.check_restorable(disk_only, "cloud-hypervisor", "41.0")
    assert manifest.read(tmp_path / "d").memory is False
