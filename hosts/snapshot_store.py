"""hostd's snapshot and archive stores: directories of snapshot-format entries on the host.

Both stores hold one directory per entry, ``<root>/<id>/``, in the format of
``hosts/runtime/manifest.py`` (backend-neutral: this module imports no backend): a
``manifest.json`` that says which kind the entry is, and the data. The OCI runtime's snapshots
are ``subvolume`` entries (``disk/``, a read-only btrfs subvolume) and the VM runtimes' are
``vm`` entries (disk image and memory state, reflinked within the pool), so the snapshot store
of such a hostd lives inside the storage pool (by default its ``snapshots/``); the fake
runtime's snapshots and every archive are ``archive`` entries (``rootfs.tar.zst``), which may
live anywhere. A snapshot also gets ``signature.json`` (a
``contracts.snapshots.SignedSnapshot``) once the core seals it; an archive (keyed by sandbox
id) is hostd's own copy of a stopped sandbox's disk and is not signed, only hash-checked.

Nothing is ever written under its final name: an entry is built in ``<root>/.tmp-<id>``
and renamed into place once complete (a directory holding a subvolume renames like any other
within its filesystem; only the read-only subvolume itself could not be moved), a deletion
renames it back to a ``.tmp-`` name before removing it, and ``sweep`` (at hostd start)
removes every ``.tmp-`` directory. So a directory under its final name was complete when it
got there; whether it is still *intact* is what ``trusted_snapshot`` checks (signature, then
claim ↔ manifest, then manifest ↔ data) before any disk is touched. The runtime checks the
data once more as it uses it.

Functions here block (hashing, renames, removals); the controller calls them in a thread.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path

import msgspec
from nacl.signing import VerifyKey

from contracts.host import SnapshotTaken
from contracts.snapshots import SignedSnapshot, SnapshotRejected, decode_signed, verify
from hosts.errors import SandboxConflict, SnapshotInvalid, SnapshotNotFound
from hosts.runtime import manifest
from hosts.runtime._mounts import remove_tree
from hosts.storage import _btrfs

SIGNATURE = "signature.json"
_TMP = ".tmp-"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")


class EntryStore:
    """One store directory (snapshots or archives)."""

    def __init__(self, root: Path, what: str) -> None:
        self.root = root
        self._what = what

    def sweep(self) -> list[str]:
        """Remove what a crash left half-written or half-deleted; return the names removed."""
        self.root.mkdir(parents=True, exist_ok=True)
        removed = []
        for path in self.root.iterdir():
            if path.name.startswith(_TMP):
                _remove_entry(path)
                removed.append(path.name)
        return removed

    def path(self, entry_id: str) -> Path:
        """Where entry ``entry_id`` lives, whether or not it exists.

        Raises:
            SnapshotNotFound: ``entry_id`` cannot name an entry (it would address another path).
        """
        if not _ID.fullmatch(entry_id):
            raise SnapshotNotFound(f"{entry_id!r} is not a {self._what} id")
        return self.root / entry_id

    def existing(self, entry_id: str) -> Path:
        path = self.path(entry_id)
        if not path.is_dir():
            raise SnapshotNotFound(f"no {self._what} {entry_id} on this host")
        return path

    def staging(self, entry_id: str) -> Path:
        """A fresh, empty directory to build ``entry_id`` in (see ``publish``)."""
        self.path(entry_id)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f"{_TMP}{entry_id}"
        _remove_entry(tmp)
        tmp.mkdir(mode=0o700)
        return tmp

    def publish(self, entry_id: str, staging: Path, *, replace: bool) -> Path:
        """Rename a complete ``staging`` directory to its final name.

        Raises:
            SandboxConflict: the entry exists and ``replace`` is false.
        """
        final = self.path(entry_id)
        if final.exists():
            if not replace:
                raise SandboxConflict(f"{self._what} {entry_id} already exists")
            self.delete(entry_id)
        _fsync_dir(staging)
        os.rename(staging, final)
        _fsync_dir(self.root)
        return final

    def discard(self, staging: Path) -> None:
        """Remove a staging directory whose entry failed to build."""
        _remove_entry(staging)

    def delete(self, entry_id: str) -> None:
        """Remove the entry; absent is fine. Renamed away first, so a crash mid-way leaves a
        ``.tmp-`` directory for ``sweep``, never a partial entry under its real name."""
        final = self.path(entry_id)
        if not final.exists():
            return
        doomed = self.root / f"{_TMP}del-{entry_id}"
        _remove_entry(doomed)
        os.rename(final, doomed)
        _remove_entry(doomed)


def describe(snapshot_id: str, directory: Path) -> SnapshotTaken:
    """What the core needs to sign: the manifest's hash and the data's size (an archive's
    files; a subvolume's bytes written by the sandbox itself)."""
    data = (directory / manifest.MANIFEST).read_bytes()
    written = manifest.decode(data)
    return SnapshotTaken(
        snapshot_id=snapshot_id,
        sandbox_id=written.sandbox_id,
        manifest_hash=hashlib.sha256(data).hexdigest(),
        size=written.size,
        memory=written.memory,
    )


def seal(snapshot_id: str, directory: Path, signed: SignedSnapshot) -> None:
    """Store ``signed`` as the snapshot's signature, if its claim describes this snapshot.

    hostd holds no verify key: the signature itself is checked when the snapshot is used.

    Raises:
        SnapshotInvalid: the claim names another snapshot, sandbox, manifest or size.
    """
    taken = describe(snapshot_id, directory)
    claim = signed.claim
    expected = (taken.snapshot_id, taken.sandbox_id, taken.manifest_hash, taken.size)
    if (claim.snapshot_id, claim.sandbox_id, claim.manifest_hash, claim.size) != expected:
        raise SnapshotInvalid(f"the signed claim does not describe snapshot {snapshot_id} as stored")
    _write_atomically(directory / SIGNATURE, msgspec.json.encode(signed))


def trusted_snapshot(
    snapshot_id: str, directory: Path, verify_keys: Mapping[str, VerifyKey], sandbox_id: str | None
) -> manifest.Manifest:
    """The manifest of the snapshot in ``directory``, once everything about it checks out:
    a signature by one of ``verify_keys`` over a claim naming this snapshot (and
    ``sandbox_id``, when given), this manifest byte for byte, and data matching it (an
    archive's files by sha256, a subvolume by its identity, read-only).

    Raises:
        SnapshotInvalid: the first check that failed, named in the message.
    """
    try:
        signature = (directory / SIGNATURE).read_bytes()
    except FileNotFoundError:
        raise SnapshotInvalid(f"snapshot {snapshot_id} is not signed") from None
    try:
        claim = verify(decode_signed(signature), verify_keys)
    except SnapshotRejected as exc:
        raise SnapshotInvalid(f"snapshot {snapshot_id} rejected: {exc.reason}") from None
    if claim.snapshot_id != snapshot_id:
        raise SnapshotInvalid(f"snapshot {snapshot_id} carries the signature of {claim.snapshot_id}")
    if sandbox_id is not None and claim.sandbox_id != sandbox_id:
        raise SnapshotInvalid(f"snapshot {snapshot_id} is of sandbox {claim.sandbox_id}, not {sandbox_id}")
    try:
        data = (directory / manifest.MANIFEST).read_bytes()
    except FileNotFoundError:
        raise SnapshotInvalid(f"snapshot {snapshot_id} has no manifest") from None
    if hashlib.sha256(data).hexdigest() != claim.manifest_hash:
        raise SnapshotInvalid(f"snapshot {snapshot_id}'s manifest does not match its signature")
    verified = manifest.read(directory)  # the data against the manifest
    if verified.sandbox_id != claim.sandbox_id:
        raise SnapshotInvalid(f"snapshot {snapshot_id}'s manifest names another sandbox")
    return verified


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_entry(path: Path) -> None:
    """Delete an entry directory (absent is fine). A ``subvolume`` entry's disk goes first:
    ``rm`` cannot delete a subvolume, and stops at it (another device)."""
    if _btrfs.is_subvolume(path / manifest.DISK):
        _btrfs.delete(path / manifest.DISK)
    remove_tree(path)
