"""How the OCI and fake runtimes make their snapshots: ``archive`` tars and ``subvolume`` manifests.

The format itself (the manifest, its kinds, and how each is verified) is backend-neutral and
lives in ``hosts/runtime/manifest.py``. This module writes two of its kinds:

* ``subvolume`` (the OCI runtime's host-local snapshots): the caller has made ``disk/``, a
  read-only btrfs snapshot of the sandbox's disk in the storage pool; ``write_subvolume``
  records its identity (``StoragePool.identity``) and size. Such a snapshot never leaves its
  host (``docs/runtime.md``, "Snapshots on the pool").
* ``archive`` (archives and the fake runtime's snapshots): ``write`` tars a disk tree into
  ``rootfs.tar.zst`` — the whole disk (the fake runtime's, and archives written before diffs),
  or only what differs from the template build the manifest names, as an overlayfs upper layer
  (``_layer``: changed entries, whiteouts, opaque directories), which ``extract`` unpacks for
  the caller to replay onto a copy of that template.

The archive is GNU tar with numeric owners, permissions and every extended attribute. It is
compressed with zstd as tar produces it and decompressed as tar consumes it (``zstandard`` on
the pipe), so neither the archive nor the disk is ever held whole in memory. Both files are
fsynced before the manifest names them. Neither kind holds memory.
"""

from __future__ import annotations

import os
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import IO

import zstandard

from hosts.errors import RuntimeFailure, SnapshotInvalid
from hosts.runtime import _layer, manifest
from hosts.runtime._layout import DiskBase
from hosts.runtime.manifest import ARCHIVE, DISK, Manifest, SubvolumeDisk
from hosts.storage.pool import SubvolumeIdentity

_TAR_COMMON = ["--numeric-owner", "--xattrs", "--xattrs-include=*"]
_CHUNK = 1 << 20


def write(
    upper: Path, directory: Path, sandbox_id: str, base: DiskBase, runtime: str, template: Path | None = None
) -> Manifest:
    """Archive ``upper`` into ``directory`` (created if needed) and write the manifest: an
    ``archive`` snapshot of the whole of ``upper``, or, given the ``template`` subvolume it
    was snapshotted from, of its difference from it (``layer: diff``); ``runtime`` is the
    backend writing it.

    The caller keeps the disk still (sandbox frozen or stopped) while this runs.
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / manifest.MANIFEST).unlink(missing_ok=True)
    archive = directory / ARCHIVE
    if template is None:
        _create(["--directory", str(upper), "."], archive)
    else:
        with tempfile.TemporaryDirectory(prefix=".markers-", dir=directory) as markers:
            names = _layer_names(_layer.diff(upper, template), upper, Path(markers))
            _create(
                ["--no-recursion", "--null", "--no-verbatim-files-from", "--files-from", "-"], archive, names
            )
    written = Manifest(
        sandbox_id=sandbox_id,
        template=base.template,
        content_hash=base.content_hash,
        runtime=runtime,
        layer="disk" if template is None else "diff",
        files=[manifest.describe_file(archive)],
    )
    manifest.write(directory, written)
    return written


def write_subvolume(
    directory: Path, sandbox_id: str, base: DiskBase, identity: SubvolumeIdentity, size: int, runtime: str
) -> Manifest:
    """Write the manifest of the ``subvolume`` snapshot whose read-only ``DISK`` is already in
    ``directory``, with ``identity`` read after it was made."""
    if not identity.readonly:
        raise RuntimeFailure(f"the snapshot disk in {directory} is writable")
    written = Manifest(
        sandbox_id=sandbox_id,
        template=base.template,
        content_hash=base.content_hash,
        kind="subvolume",
        runtime=runtime,
        disk=SubvolumeDisk(name=DISK, uuid=identity.uuid, ctransid=identity.ctransid, size=size),
    )
    manifest.write(directory, written)
    return written


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
