"""Filesystem snapshots of a sandbox's disk (the overlay's upper layer).

A snapshot directory holds ``rootfs.tar.zst`` and ``manifest.json``. The manifest is written
last, so a directory with a manifest is a complete snapshot; it names the template build the
disk sits on (a disk restored over any other lower layer would be meaningless) and the
sha256 of every file, checked before a restore touches anything.

The archive is GNU tar with numeric owners, permissions and every extended attribute: the
upper layer encodes deletions as 0:0 character devices and replaced directories as
``trusted.overlay.opaque`` xattrs, and both must survive the round trip. It is compressed
with zstd as tar produces it and decompressed as tar consumes it (``zstandard`` on the pipe),
so neither the archive nor the disk is ever held whole in memory. Both files are fsynced
before the manifest names them.

Whether the snapshot also holds memory is recorded (``memory``): never, for this backend.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from pathlib import Path
from typing import IO

import msgspec
import zstandard

from hosts.errors import RuntimeFailure, SnapshotInvalid
from hosts.runtime._layout import DiskBase

ARCHIVE = "rootfs.tar.zst"
MANIFEST = "manifest.json"
_TAR_COMMON = ["--numeric-owner", "--xattrs", "--xattrs-include=*"]
_CHUNK = 1 << 20


class SnapshotFile(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    sha256: str
    size: int


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    sandbox_id: str
    template: str
    content_hash: str
    files: list[SnapshotFile]
    memory: bool = False
    """Whether the snapshot holds the sandbox's memory too (a VMM's); the disk only here."""

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


def write(upper: Path, directory: Path, sandbox_id: str, base: DiskBase) -> Manifest:
    """Archive ``upper`` into ``directory`` (created if needed) and write the manifest.

    The caller keeps the disk still (sandbox frozen or stopped) while this runs.
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MANIFEST).unlink(missing_ok=True)
    archive = directory / ARCHIVE
    _create(upper, archive)
    manifest = Manifest(
        sandbox_id=sandbox_id,
        template=base.template,
        content_hash=base.content_hash,
        files=[_describe(archive)],
    )
    tmp = directory / (MANIFEST + ".tmp")
    with open(tmp, "wb") as f:
        f.write(msgspec.json.format(msgspec.json.encode(manifest)) + b"\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / MANIFEST)
    return manifest


def read(directory: Path) -> Manifest:
    """Load and verify the snapshot in ``directory``.

    Raises:
        SnapshotInvalid: no manifest, or a file is missing or differs from its digest.
    """
    try:
        manifest = decode_manifest((directory / MANIFEST).read_bytes())
    except FileNotFoundError:
        raise SnapshotInvalid(f"no snapshot manifest in {directory}") from None
    for expected in manifest.files:
        if "/" in expected.name or expected.name in ("", ".", ".."):
            raise SnapshotInvalid(f"snapshot manifest names a file outside it: {expected.name!r}")
        try:
            actual = _describe(directory / expected.name)
        except FileNotFoundError:
            raise SnapshotInvalid(f"snapshot file {expected.name} is missing in {directory}") from None
        if actual != expected:
            raise SnapshotInvalid(f"snapshot file {expected.name} in {directory} does not match its manifest")
    if ARCHIVE not in {f.name for f in manifest.files}:
        raise SnapshotInvalid(f"snapshot in {directory} has no {ARCHIVE}")
    return manifest


def decode_manifest(data: bytes) -> Manifest:
    """Parse a manifest's bytes.

    Raises:
        SnapshotInvalid: not a manifest.
    """
    try:
        return msgspec.json.decode(data, type=Manifest)
    except msgspec.DecodeError as exc:
        raise SnapshotInvalid(f"invalid snapshot manifest: {exc}") from None


def extract(directory: Path, target: Path) -> None:
    """Unpack the snapshot's archive into the empty directory ``target``."""
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


def _create(upper: Path, archive: Path) -> None:
    """tar ``upper`` into ``archive``, zstd-compressed on the way, and fsync it."""
    args = ["--create", "--file", "-", "--directory", str(upper), *_TAR_COMMON, "."]
    # tar's messages go to a file, not a pipe: a pipe nobody drains could block it.
    with tempfile.TemporaryFile() as errors, open(archive, "wb") as out:
        tar = subprocess.Popen(["tar", *args], stdout=subprocess.PIPE, stderr=errors)
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
