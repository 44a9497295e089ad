"""The snapshot format: a directory holding ``manifest.json`` and the disk, in one of two kinds.

* ``subvolume`` (the OCI runtime's host-local snapshots): the disk is ``disk/``, a read-only
  btrfs snapshot of the sandbox's disk in the storage pool. Hashing it would mean reading the
  whole disk, so the manifest records the subvolume's identity instead (its ``uuid`` and
  ``ctransid``, see ``StoragePool.identity``), and its size: the bytes the sandbox had written
  itself. Any write to the snapshot needs its read-only flag turned off and moves ``ctransid``,
  so "the identity now equals the manifest's, and it is read-only" is what ``read`` checks.
  It only means something on the filesystem that holds it: such a snapshot never leaves its
  host (``docs/runtime.md``, "Snapshots on the pool").
* ``archive`` (archives and the fake runtime's snapshots): ``rootfs.tar.zst``, a portable
  tar + zstd, with the sha256 of every file in the manifest. Its ``layer`` says what the tar
  holds: ``disk``, the whole disk (the fake runtime's, and archives written before diffs), or
  ``diff``, only what differs from the template build the manifest names, as an overlayfs
  upper layer (``_layer``: changed entries, whiteouts, opaque directories), which unarchive
  replays onto a copy of that template.

A manifest without a ``kind`` was written by the namespace runtime, whose snapshots and
archives held only its overlay's upper layer: restoring one onto a whole disk would lose the
template under it, so it is refused (``decode_manifest``).

The manifest is written last, so a directory with a manifest is a complete snapshot; it names
the template build the disk sits on, and is what the core signs (``hosts/snapshot_store.py``).

The archive is GNU tar with numeric owners, permissions and every extended attribute. It is
compressed with zstd as tar produces it and decompressed as tar consumes it (``zstandard`` on
the pipe), so neither the archive nor the disk is ever held whole in memory. Both files are
fsynced before the manifest names them.

Whether the snapshot also holds memory is recorded (``memory``): never, for these backends.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import IO, Literal

import msgspec
import zstandard

from hosts.errors import RuntimeFailure, SnapshotInvalid
from hosts.runtime import _layer
from hosts.runtime._layout import DiskBase
from hosts.storage import _btrfs
from hosts.storage.pool import SubvolumeIdentity

ARCHIVE = "rootfs.tar.zst"
DISK = "disk"
"""The read-only subvolume of a ``subvolume`` snapshot, inside its directory."""
MANIFEST = "manifest.json"
_TAR_COMMON = ["--numeric-owner", "--xattrs", "--xattrs-include=*"]
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
    """Bytes the sandbox had written itself (its disk's usage in the pool); the template's
    data it shares is not counted."""


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    sandbox_id: str
    template: str
    content_hash: str
    kind: Literal["archive", "subvolume"] = "archive"
    layer: Literal["disk", "diff"] = "disk"
    """What an ``archive``'s tar holds: the whole disk, or its difference from the template."""
    files: list[SnapshotFile] = msgspec.field(default_factory=list)
    """An ``archive``'s files with their digests; empty for a ``subvolume`` snapshot."""
    disk: SubvolumeDisk | None = None
    """A ``subvolume`` snapshot's disk; None for an ``archive``."""
    memory: bool = False
    """Whether the snapshot holds the sandbox's memory too (a VMM's); the disk only here."""

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files) + (self.disk.size if self.disk else 0)


def write(
    upper: Path, directory: Path, sandbox_id: str, base: DiskBase, template: Path | None = None
) -> Manifest:
    """Archive ``upper`` into ``directory`` (created if needed) and write the manifest: an
    ``archive`` snapshot of the whole of ``upper``, or, given the ``template`` subvolume it
    was snapshotted from, of its difference from it (``layer: diff``).

    The caller keeps the disk still (sandbox frozen or stopped) while this runs.
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MANIFEST).unlink(missing_ok=True)
    archive = directory / ARCHIVE
    if template is None:
        _create(["--directory", str(upper), "."], archive)
    else:
        with tempfile.TemporaryDirectory(prefix=".markers-", dir=directory) as markers:
            names = _layer_names(_layer.diff(upper, template), upper, Path(markers))
            _create(
                ["--no-recursion", "--null", "--no-verbatim-files-from", "--files-from", "-"], archive, names
            )
    manifest = Manifest(
        sandbox_id=sandbox_id,
        template=base.template,
        content_hash=base.content_hash,
        layer="disk" if template is None else "diff",
        files=[_describe(archive)],
    )
    _write_manifest(directory, manifest)
    return manifest


def write_subvolume(
    directory: Path, sandbox_id: str, base: DiskBase, identity: SubvolumeIdentity, size: int
) -> Manifest:
    """Write the manifest of the ``subvolume`` snapshot whose read-only ``DISK`` is already in
    ``directory``, with ``identity`` read after it was made."""
    if not identity.readonly:
        raise RuntimeFailure(f"the snapshot disk in {directory} is writable")
    manifest = Manifest(
        sandbox_id=sandbox_id,
        template=base.template,
        content_hash=base.content_hash,
        kind="subvolume",
        disk=SubvolumeDisk(name=DISK, uuid=identity.uuid, ctransid=identity.ctransid, size=size),
    )
    _write_manifest(directory, manifest)
    return manifest


def _write_manifest(directory: Path, manifest: Manifest) -> None:
    tmp = directory / (MANIFEST + ".tmp")
    with open(tmp, "wb") as f:
        f.write(msgspec.json.format(msgspec.json.encode(manifest)) + b"\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / MANIFEST)


def read(directory: Path) -> Manifest:
    """Load and verify the snapshot in ``directory``: an archive's files against their digests,
    a subvolume's identity against the manifest's.

    Raises:
        SnapshotInvalid: no manifest, or the data is missing or differs from the manifest.
    """
    try:
        manifest = decode_manifest((directory / MANIFEST).read_bytes())
    except FileNotFoundError:
        raise SnapshotInvalid(f"no snapshot manifest in {directory}") from None
    if manifest.kind == "subvolume":
        _check_subvolume(directory, manifest)
    else:
        _check_archive(directory, manifest)
    return manifest


def read_archive(directory: Path) -> Manifest:
    """``read``, for a caller that can only use an ``archive`` (unarchive; the fake runtime).

    Raises:
        SnapshotInvalid: as ``read``, or the directory holds a ``subvolume`` snapshot.
    """
    manifest = read(directory)
    if manifest.kind != "archive":
        raise SnapshotInvalid(f"{directory} holds a host-local {manifest.kind} snapshot, not an archive")
    return manifest


def _check_archive(directory: Path, manifest: Manifest) -> None:
    if manifest.disk is not None:
        raise SnapshotInvalid(f"the archive manifest in {directory} describes a subvolume")
    for expected in manifest.files:
        _check_name(expected.name)
        try:
            actual = _describe(directory / expected.name)
        except FileNotFoundError:
            raise SnapshotInvalid(f"snapshot file {expected.name} is missing in {directory}") from None
        if actual != expected:
            raise SnapshotInvalid(f"snapshot file {expected.name} in {directory} does not match its manifest")
    if ARCHIVE not in {f.name for f in manifest.files}:
        raise SnapshotInvalid(f"snapshot in {directory} has no {ARCHIVE}")


def _check_subvolume(directory: Path, manifest: Manifest) -> None:
    disk = manifest.disk
    if disk is None or manifest.files:
        raise SnapshotInvalid(f"the subvolume manifest in {directory} has no disk, or has files")
    _check_name(disk.name)
    path = directory / disk.name
    if not _btrfs.is_subvolume(path):
        raise SnapshotInvalid(f"snapshot disk {disk.name} is missing in {directory}")
    # No commit first (unlike ``subvolume_identity``): a read-only subvolume cannot have been
    # written since its last commit, because making it read-only again after a write commits
    # (the set-flags ioctl does), and one that is not read-only fails the check anyway. A
    # commit here would flush every sandbox's pending writes on each clone and restore.
    now_uuid, now_ctransid, now_readonly = _btrfs.subvolume_info(path)
    if (now_uuid, now_ctransid, now_readonly) != (disk.uuid, disk.ctransid, True):
        raise SnapshotInvalid(f"snapshot disk {disk.name} in {directory} does not match its manifest")


def _check_name(name: str) -> None:
    if "/" in name or name in ("", ".", ".."):
        raise SnapshotInvalid(f"snapshot manifest names a file outside it: {name!r}")


def decode_manifest(data: bytes) -> Manifest:
    """Parse a manifest's bytes.

    Raises:
        SnapshotInvalid: not a manifest.
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


def extract(directory: Path, target: Path) -> None:
    """Unpack the ``archive`` snapshot's tar into the empty directory ``target``."""
    args = ["--extract", "--file", "-", "--directory", str(target), "--same-owner", "--same-permissions"]
    with tempfile.TemporaryFile() as errors:
        tar = subprocess.Popen(["tar", *args, *_TAR_COMMON], stdin=subprocess.PIPE, stderr=errors)
        assert tar.stdin is not None
        try:
            with tar.stdin, open(directory / ARCHIVE, "rb") as source:
                zstandard.ZstdDecompressor().copy_stream(source, tar.stdin, write_size=_CHUNK)
        except BrokenPipeError:
            pass  # tar gave up early; its status and message say why
        except zstandard.ZstdError as exc:
            tar.kill()
            tar.wait()
            raise SnapshotInvalid(f"snapshot archive does not decompress: {exc}") from None
        _check(tar, "extract", errors)


def _layer_names(layer: _layer.Layer, disk: Path, markers: Path) -> bytes:
    """tar's NUL-separated file list for ``layer``, in its order: opaque directories and
    whiteouts are made in ``markers`` (copies of the disk's directories carrying the opaque
    xattr; character devices 0:0) and listed from there, everything else from ``disk``. Names
    start with ``./``, so none reads as an option."""
    names, source = [], None
    for relative, kind in layer.entries:
        where = disk if kind == "copy" else markers
        if where != source:
            names.append(f"--directory={where}")
            source = where
        names.append(f"./{relative}")
        if kind == "copy":
            continue
        made = markers / relative
        made.parent.mkdir(parents=True, exist_ok=True)
        if kind == "opaque":
            made.mkdir()
            _copy_dir_metadata(disk / relative, made)
        else:
            os.mknod(made, stat.S_IFCHR | 0o600, _layer.WHITEOUT_DEVICE)
    return b"".join(os.fsencode(name) + b"\0" for name in names)


def _copy_dir_metadata(source: Path, target: Path) -> None:
    """``target`` takes directory ``source``'s owner, mode, xattrs and times, and is opaque."""
    for name in os.listxattr(source, follow_symlinks=False):
        os.setxattr(target, name, os.getxattr(source, name, follow_symlinks=False), follow_symlinks=False)
    os.setxattr(target, _layer.OPAQUE, b"y")
    st = os.lstat(source)
    os.chown(target, st.st_uid, st.st_gid)
    os.chmod(target, stat.S_IMODE(st.st_mode))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))


def _create(what: list[str], archive: Path, names: bytes | None = None) -> None:
    """tar ``what`` (arguments naming the files, the list of them in ``names`` if given) into
    ``archive``, zstd-compressed on the way, and fsync it."""
    args = ["--create", "--file", "-", *_TAR_COMMON, *what]
    # tar's messages go to a file, not a pipe: a pipe nobody drains could block it. The file
    # list is small (a few MB at most for a changed disk) and goes in through a file too, so
    # tar never waits on us while we wait on it.
    with tempfile.TemporaryFile() as errors, tempfile.TemporaryFile() as listing, open(archive, "wb") as out:
        listing.write(names or b"")
        listing.seek(0)
        tar = subprocess.Popen(["tar", *args], stdin=listing, stdout=subprocess.PIPE, stderr=errors)
        assert tar.stdout is not None
        with tar.stdout:
            zstandard.ZstdCompressor(level=3).copy_stream(tar.stdout, out, read_size=_CHUNK)
        _check(tar, "create", errors)
        out.flush()
        os.fsync(out.fileno())


def _check(tar: subprocess.Popen[bytes], what: str, errors: IO[bytes]) -> None:
    if tar.wait() != 0:
        errors.seek(0)
        message = errors.read().decode(errors="replace").strip()
        raise RuntimeFailure(f"tar --{what} failed: {message}")


def _describe(path: Path) -> SnapshotFile:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return SnapshotFile(name=path.name, sha256=digest.hexdigest(), size=path.stat().st_size)
