"""Filesystem snapshots of a sandbox's disk (the overlay's upper layer).

A snapshot directory holds ``rootfs.tar`` and ``manifest.json``. The manifest is written
last, so a directory with a manifest is a complete snapshot; it names the template build the
disk sits on (a disk restored over any other lower layer would be meaningless) and the
sha256 of every file, checked before a restore touches anything.

The archive is GNU tar with numeric owners, permissions and every extended attribute: the
upper layer encodes deletions as 0:0 character devices and replaced directories as
``trusted.overlay.opaque`` xattrs, and both must survive the round trip.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import msgspec

from hosts.errors import RuntimeFailure
from hosts.runtime._layout import DiskBase

ARCHIVE = "rootfs.tar"
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


def write(upper: Path, directory: Path, sandbox_id: str, base: DiskBase) -> Manifest:
    """Archive ``upper`` into ``directory`` (created if needed) and write the manifest.

    The caller keeps the disk still (sandbox frozen or stopped) while this runs.
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MANIFEST).unlink(missing_ok=True)
    archive = directory / ARCHIVE
    _tar(["--create", "--file", str(archive), "--directory", str(upper), *_TAR_COMMON, "."])
    manifest = Manifest(
        sandbox_id=sandbox_id,
        template=base.template,
        content_hash=base.content_hash,
        files=[_describe(archive)],
    )
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_bytes(msgspec.json.format(msgspec.json.encode(manifest)) + b"\n")
    os.replace(tmp, directory / MANIFEST)
    return manifest


def read(directory: Path) -> Manifest:
    """Load and verify the snapshot in ``directory``.

    Raises:
        RuntimeFailure: no manifest, or a file is missing or differs from its digest.
    """
    try:
        manifest = msgspec.json.decode((directory / MANIFEST).read_bytes(), type=Manifest)
    except (FileNotFoundError, msgspec.DecodeError) as exc:
        raise RuntimeFailure(f"no valid snapshot manifest in {directory}: {exc}") from None
    for expected in manifest.files:
        try:
            actual = _describe(directory / expected.name)
        except FileNotFoundError:
            raise RuntimeFailure(f"snapshot file {expected.name} is missing in {directory}") from None
        if actual != expected:
            raise RuntimeFailure(f"snapshot file {expected.name} in {directory} does not match its manifest")
    if ARCHIVE not in {f.name for f in manifest.files}:
        raise RuntimeFailure(f"snapshot in {directory} has no {ARCHIVE}")
    return manifest


def extract(directory: Path, target: Path) -> None:
    """Unpack the snapshot's archive into the empty directory ``target``."""
    _tar(
        [
            "--extract",
            "--file",
            str(directory / ARCHIVE),
            "--directory",
            str(target),
            "--same-owner",
            "--same-permissions",
            *_TAR_COMMON,
        ]
    )


def _tar(args: list[str]) -> None:
    done = subprocess.run(["tar", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeFailure(f"tar {args[0]} failed: {done.stderr.strip()}")


def _describe(path: Path) -> SnapshotFile:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return SnapshotFile(name=path.name, sha256=digest.hexdigest(), size=path.stat().st_size)
