"""The snapshot manifest, shared by every backend: what a snapshot or archive directory holds.

An entry is a directory with ``manifest.json`` and the data it names. The manifest is written
last (``write``), so a directory with a manifest is complete; its bytes are what the core signs
(``hosts/snapshot_store.py``), and ``read`` checks the data against it before anything uses it.
This module knows the format and how to check each kind; how a backend *makes* its data lives
with the backend (``_snapshot.py`` for the OCI and fake runtimes' tars and subvolumes).

Kinds:

* ``archive``: files hashed with sha256, one of them ``rootfs.tar.zst`` (``ARCHIVE``), a
  portable tar + zstd of a disk tree. ``layer`` says whether it holds the whole disk or only
  its difference from the template build the manifest names.
* ``subvolume``: the OCI runtime's host-local snapshot, ``disk/`` (``DISK``), a read-only btrfs
  subvolume. Hashing it would mean reading the whole disk, so the manifest records its identity
  (uuid, ctransid) instead, which any write would move; meaningful only on its own filesystem.
* ``vm``: a VMM's host-local snapshot (``VmState``): the read-only subvolume ``disk/`` (the
  ``subvolume`` kind's, identified the same way) holding the disk image file, and the memory
  state file and any further VMM files when the running VM was captured; the VM's shape (cpu,
  memory, disk) and the VMM's version, since a memory state restores only into the VMM (and
  version) that wrote it (``check_restorable``). Nothing is hashed: a disk image is gigabytes
  (sparse or not, sha256 reads every byte), so hashing it cost seconds on every write and use
  (``hosts/vm/snapshot.py`` says what the identity check guarantees instead).

Every kind records ``runtime`` (the backend that wrote it), ``vmm_version`` (None but for
``vm``) and ``memory`` (whether running processes were captured).

Compatibility: the fields added since the first manifests (``runtime``, ``vmm_version``, ``vm``)
all have defaults, so manifests already on disk decode unchanged and keep their signed bytes;
``runtime`` is None in them (they were written by the OCI or fake runtime, disk only). A
manifest without a ``kind`` at all is the namespace runtime's and is refused (``decode``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import msgspec

from hosts.errors import SnapshotInvalid
from hosts.storage import _btrfs

MANIFEST = "manifest.json"
ARCHIVE = "rootfs.tar.zst"
"""An ``archive``'s tar, among its files."""
DISK = "disk"
"""A ``subvolume`` snapshot's read-only subvolume, inside its directory."""
Kind = Literal["archive", "subvolume", "vm"]
_CHUNK = 1 << 20


class SnapshotFile(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    sha256: str
    size: int


class SubvolumeDisk(msgspec.Struct, frozen=True, kw_only=True):
    """A ``subvolume`` snapshot's disk: which subvolume, in which state, and how much data."""

    name: str
    uuid: str
    ctransid: int
    size: int
    """``subvolume``: bytes the sandbox had written itself (its disk's usage in the pool); the
    template's data it shares is not counted. ``vm``: the files' sizes (the disk image's
    nominal size, sparse or not, plus the memory state), as when ``vm`` files were hashed."""


class VmState(msgspec.Struct, frozen=True, kw_only=True):
    """A ``vm`` snapshot's parts, by file name inside its subvolume (``Manifest.disk``)."""

    disk: str
    """The disk image (raw ext4 here), as the VM saw it when captured."""
    memory_file: str | None = None
    """The VMM's memory/device state (QEMU's migration stream, Cloud Hypervisor's memory
    ranges); None for a disk-only snapshot of a stopped VM."""
    cpu: int
    ram_mb: int
    disk_gb: int
    """The VM's shape when captured: a memory state restores only into the same CPUs and RAM."""


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    sandbox_id: str
    template: str
    content_hash: str
    kind: Kind = "archive"
    runtime: str | None = None
    """The backend that wrote it (``oci``, ``fake``, ``qemu``, ``cloud-hypervisor``); None in
    manifests written before it was recorded (the OCI or fake runtime's)."""
    vmm_version: str | None = None
    """The VMM's version for a ``vm`` snapshot (as the VMM reports it); None otherwise."""
    layer: Literal["disk", "diff"] = "disk"
    """What an ``archive``'s tar holds: the whole disk, or its difference from the template."""
    files: list[SnapshotFile] = msgspec.field(default_factory=list)
    """The files with their digests (an ``archive``'s); empty for the other kinds."""
    disk: SubvolumeDisk | None = None
    """The read-only subvolume of a ``subvolume`` or ``vm`` snapshot; None for an ``archive``."""
    vm: VmState | None = None
    """A ``vm`` snapshot's parts; None for the other kinds."""
    memory: bool = False
    """Whether the sandbox's memory (its running processes) was captured: only a ``vm``'s can be."""

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files) + (self.disk.size if self.disk else 0)


def write(directory: Path, manifest: Manifest) -> None:
    """Write ``manifest`` into ``directory`` atomically and durably: the last step of making an
    entry, once every file it names is fsynced."""
    tmp = directory / (MANIFEST + ".tmp")
    with open(tmp, "wb") as f:
        f.write(msgspec.json.format(msgspec.json.encode(manifest)) + b"\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / MANIFEST)


def describe_file(path: Path) -> SnapshotFile:
    """``path``'s entry for ``Manifest.files``: its name, size and sha256 (read in chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return SnapshotFile(name=path.name, sha256=digest.hexdigest(), size=path.stat().st_size)


def decode(data: bytes) -> Manifest:
    """Parse a manifest's bytes (no check of the data it names).

    Raises:
        SnapshotInvalid: not a manifest, or the namespace runtime's.
    """
    try:
        manifest = msgspec.json.decode(data, type=Manifest)
        named_kind = "kind" in msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise SnapshotInvalid(f"invalid snapshot manifest: {exc}") from None
    if not named_kind:  # every manifest written since the pool names its kind
        raise SnapshotInvalid(
            "snapshot made by the namespace runtime: an overlay layer, not a whole disk, so it cannot "
            "be restored here (docs/runtime.md, 'Migrating from the namespace runtime')"
        )
    return manifest


def read(directory: Path, kinds: Iterable[Kind] = ("archive", "subvolume", "vm")) -> Manifest:
    """Load the manifest in ``directory`` and verify the data against it: an archive's files by
    sha256, a subvolume (a ``vm``'s too) by its identity. ``kinds`` are the ones the caller can use.

    Raises:
        SnapshotInvalid: no manifest, another kind, or data missing or differing from it.
    """
    try:
        manifest = decode((directory / MANIFEST).read_bytes())
    except FileNotFoundError:
        raise SnapshotInvalid(f"no snapshot manifest in {directory}") from None
    if manifest.kind not in tuple(kinds):
        raise SnapshotInvalid(f"{directory} holds a {manifest.kind} snapshot, which this runtime cannot use")
    if manifest.kind == "subvolume":
        _check_subvolume(directory, manifest)
    elif manifest.kind == "vm":
        _check_vm(directory, manifest)
    else:
        _check_archive(directory, manifest)
    return manifest


def check_restorable(manifest: Manifest, runtime: str, vmm_version: str | None) -> None:
    """Refuse a memory state that ``runtime`` at ``vmm_version`` cannot load: one written by
    another VMM or another version of it (VMMs do not promise to read each other's states, and
    a mismatch fails late and obscurely). A disk-only snapshot passes.

    Raises:
        SnapshotInvalid: naming both sides.
    """
    if not manifest.memory:
        return
    written = (manifest.runtime, manifest.vmm_version)
    if written != (runtime, vmm_version):
        raise SnapshotInvalid(
            f"the snapshot holds the memory of a {written[0]} {written[1]} VM; "
            f"this host runs {runtime} {vmm_version}, which cannot restore it"
        )


def _check_files(directory: Path, manifest: Manifest) -> None:
    for expected in manifest.files:
        check_name(expected.name)
        try:
            actual = describe_file(directory / expected.name)
        except FileNotFoundError:
            raise SnapshotInvalid(f"snapshot file {expected.name} is missing in {directory}") from None
        if actual != expected:
            raise SnapshotInvalid(f"snapshot file {expected.name} in {directory} does not match its manifest")


def _check_archive(directory: Path, manifest: Manifest) -> None:
    if manifest.disk is not None or manifest.vm is not None or manifest.memory:
        raise SnapshotInvalid(f"the archive manifest in {directory} describes a subvolume or a VM")
    _check_files(directory, manifest)
    if ARCHIVE not in {f.name for f in manifest.files}:
        raise SnapshotInvalid(f"snapshot in {directory} has no {ARCHIVE}")


def _check_vm(directory: Path, manifest: Manifest) -> None:
    vm = manifest.vm
    if vm is None or manifest.runtime is None or manifest.vmm_version is None:
        raise SnapshotInvalid(f"the vm manifest in {directory} lacks its VM part, runtime or VMM version")
    if manifest.disk is None or manifest.files:
        raise SnapshotInvalid(f"the vm manifest in {directory} has no subvolume, or has files")
    if manifest.memory != (vm.memory_file is not None):
        raise SnapshotInvalid(f"the vm manifest in {directory} contradicts itself about memory")
    _check_identity(directory, manifest.disk)
    for part in (vm.disk, vm.memory_file):
        if part is not None:
            check_name(part)
            if not (directory / manifest.disk.name / part).is_file():
                raise SnapshotInvalid(f"snapshot file {part} is missing in {directory}")


def _check_subvolume(directory: Path, manifest: Manifest) -> None:
    disk = manifest.disk
    if disk is None or manifest.files or manifest.vm is not None or manifest.memory:
        raise SnapshotInvalid(f"the subvolume manifest in {directory} has no disk, or has files")
    _check_identity(directory, disk)


def _check_identity(directory: Path, disk: SubvolumeDisk) -> None:
    """The subvolume ``disk`` names is there, read-only, and unchanged since the manifest."""
    check_name(disk.name)
    path = directory / disk.name
    if not _btrfs.is_subvolume(path):
        raise SnapshotInvalid(f"snapshot disk {disk.name} is missing in {directory}")
    # No commit first (unlike ``subvolume_identity``): a commit here would flush every
    # sandbox's pending writes on each clone and restore. A read-only subvolume is written
    # only after its flag was cleared (one still writable fails the check); such a write moves
    # ctransid when it is committed, which setting the flag again does not do (kernel 6.18,
    # tests/hosts/vm/test_snapshot.py): at the latest the next transaction, within the commit
    # interval (30 s by default). Only root can clear the flag, and root can forge anything.
    now_uuid, now_ctransid, now_readonly = _btrfs.subvolume_info(path)
    if (now_uuid, now_ctransid, now_readonly) != (disk.uuid, disk.ctransid, True):
        raise SnapshotInvalid(f"snapshot disk {disk.name} in {directory} does not match its manifest")


def check_name(name: str) -> None:
    """Refuse a file name that would reach outside the entry's directory."""
    if "/" in name or name in ("", ".", ".."):
        raise SnapshotInvalid(f"snapshot manifest names a file outside it: {name!r}")
