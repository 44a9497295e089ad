"""``StoragePool``: templates, sandbox disks and snapshots as subvolumes of one btrfs filesystem.

Layout under the pool's root (an operator's btrfs directory, or the mounted image)::

    templates/<name>-<hash>   read-only subvolume: an imported template, ids shifted
    disks/<sandbox id>        writable snapshot of a template or snapshot: a sandbox's root
    snapshots/…               read-only snapshots; the caller names them (``snapshot(src, dest)``)
    .staging/<key>/lock       serialises the work on <key> across threads and processes
    .staging/<key>/<token>    work in progress (an import, a receive); junk once its lock is free

Invariant: a subvolume only appears under its final name complete, because it appears there
by one ``btrfs subvolume snapshot`` of finished work (a read-only subvolume cannot be renamed
into another directory, and a snapshot is as cheap as a rename). Anything in ``.staging`` whose
lock nobody holds is what an interrupted process left; ``open`` and the next import remove it.

Quotas: a disk's limit is on its *referenced* bytes — everything the sandbox can see on its
disk, template included, like the size of a real disk — not its exclusive bytes, which would
grow (and hit the limit) when some other subvolume sharing its data is deleted. See
docs/runtime.md, "Storage pool", for that decision and for what a host-local snapshot's
signature covers (``identity``).

Blocking throughout (each call runs btrfs-progs or walks a tree): callers run it in threads.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING

import msgspec

from hosts.errors import InvalidRequest, RuntimeFailure, SandboxConflict
from hosts.storage import _btrfs, _import, _loop

if TYPE_CHECKING:
    from hosts.config import HostdConfig

_GB = 2**30
_SANDBOX_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
_TEMPLATE_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")
_CONTENT_HASH = re.compile(r"[0-9a-f]{1,64}")
_LOCK = "lock"
_RECEIVE = "receive-"
_SCRATCH = "scratch-"
_ONE_OFF = (_RECEIVE, _SCRATCH)


class PoolConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Where the pool lives: ``directory`` when the operator gives one, else ``image``
    (``size_bytes``, sparse) mounted at ``mountpoint``."""

    directory: Path | None = None
    image: Path
    size_bytes: int
    mountpoint: Path

    @classmethod
    def from_hostd(cls, config: HostdConfig) -> PoolConfig:
        return cls(
            directory=config.pool_dir,
            image=config.pool_image,
            size_bytes=config.pool_size_gb * _GB,
            mountpoint=config.pool_mount,
        )

    @property
    def root(self) -> Path:
        return self.directory if self.directory is not None else self.mountpoint


class SubvolumeIdentity(msgspec.Struct, frozen=True):
    """Which subvolume, and which state of its contents: ``uuid`` is never reused, ``ctransid``
    is the transaction that last changed anything in it (data, metadata, xattrs) and moves
    forward with any write; snapshotting, sending or reading it, or toggling its read-only
    flag, change neither."""

    uuid: str
    ctransid: int
    readonly: bool


class StoragePool:
    """One pool. Get it with ``StoragePool.open``; paths given to and returned by its methods
    are absolute paths inside ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.templates = root / "templates"
        self.disks = root / "disks"
        self.snapshots = root / "snapshots"
        self.staging = root / ".staging"
        self.quota_mode = "full"
        """``"simple"`` (what a subvolume wrote itself is charged to it, once) or ``"full"``
        (everything it references); see ``_btrfs.enable_quotas``."""

    @classmethod
    def open(cls, config: PoolConfig) -> StoragePool:
        """Make the pool ready and return it; idempotent, so hostd calls it at every start.

        An operator's directory must already be on btrfs. The image is created and formatted
        when missing, attached to a loop device (or the existing attachment reused) and
        mounted unless it already is. Quotas are enabled, the layout created, and work an
        interrupted process left in ``.staging`` removed.

        Raises:
            RuntimeFailure: the directory is missing or not on btrfs; a step failed (quoted).
        """
        if config.directory is not None:
            if not config.directory.is_dir():
                raise RuntimeFailure(f"the pool directory {config.directory} does not exist")
            kind = _btrfs.filesystem_type(config.directory)
            if kind != "btrfs":
                raise RuntimeFailure(
                    f"the pool directory {config.directory} is on {kind}, not btrfs: sandbox disks "
                    "need btrfs snapshots and quotas (or leave DNAH_POOL_DIR unset for an image file)"
                )
        else:
            _loop.mount_image(config.image, config.mountpoint, config.size_bytes)
        root = config.root.resolve()
        pool = cls(root)
        pool.quota_mode = _btrfs.enable_quotas(root)
        for directory in (pool.templates, pool.disks, pool.snapshots, pool.staging):
            directory.mkdir(exist_ok=True)
        pool._sweep()
        return pool

    # Templates

    def template(self, name: str, content_hash: str, rootfs: Path, *, uid_shift: int) -> Path:
        """The read-only template subvolume ``templates/<name>-<hash>``, imported from the
        template directory ``rootfs`` the first time, with every owner shifted by ``uid_shift``.

        Concurrent callers for one key (threads or processes) import it once; the others wait.

        Raises:
            InvalidRequest: a malformed name or hash.
            RuntimeFailure: the copy failed, the tree has ids no sandbox maps, or the template
                was imported for a different ``uid_shift``.
        """
        if not _TEMPLATE_NAME.fullmatch(name) or not _CONTENT_HASH.fullmatch(content_hash):
            raise InvalidRequest(f"not a template key: {name!r}, {content_hash!r}")
        key = f"{name}-{content_hash}"
        final = self.templates / key
        if not _btrfs.is_subvolume(final):
            with self._work(key) as work:
                if not _btrfs.is_subvolume(final):
                    _btrfs.create(work)
                    _import.copy_tree(rootfs, work)
                    _import.shift_owners(work, uid_shift)
                    _btrfs.snapshot(work, final, readonly=True)
        owner = os.stat(final).st_uid
        if not uid_shift <= owner < uid_shift + _import.ID_COUNT:
            raise RuntimeFailure(f"template {key} is owned by host uid {owner}, not shifted by {uid_shift}")
        return final

    # Disks

    def disk(self, sandbox_id: str) -> Path:
        """Where sandbox ``sandbox_id``'s disk is, whether or not it exists."""
        if not _SANDBOX_ID.fullmatch(sandbox_id):
            raise InvalidRequest(f"not a sandbox id: {sandbox_id!r}")
        return self.disks / sandbox_id

    def create_disk(self, sandbox_id: str, source: Path) -> Path:
        """A writable snapshot of subvolume ``source`` (a template or a snapshot) as the disk of
        ``sandbox_id``. Copies nothing: the disk shares every extent until it is written.

        Raises:
            SandboxConflict: the sandbox already has a disk.
        """
        disk = self.disk(sandbox_id)
        if os.path.lexists(disk):
            raise SandboxConflict(f"sandbox {sandbox_id} already has a disk")
        self.writable_copy(source, disk)
        return disk

    def delete_disk(self, sandbox_id: str) -> None:
        """Delete the sandbox's disk; nothing to delete is fine."""
        self.delete(self.disk(sandbox_id))

    # Subvolumes

    def snapshot(self, source: Path, dest: Path) -> None:
        """A read-only snapshot of subvolume ``source`` at ``dest`` (inside the pool, not yet
        existing; missing parent directories are created). Consistent only if nothing writes
        ``source`` meanwhile: freeze the sandbox first."""
        self._snapshot(source, dest, readonly=True)

    def writable_copy(self, source: Path, dest: Path) -> None:
        """A writable snapshot of subvolume ``source`` at ``dest`` (restore, clone, fork)."""
        self._snapshot(source, dest, readonly=False)

    def delete(self, path: Path) -> None:
        """Delete ``path`` inside the pool: a subvolume (read-only or not, with subvolumes a
        sandbox created inside it), a directory holding subvolumes, a plain directory or file.
        Absent is fine."""
        path = self._inside(path)
        if os.path.lexists(path):
            _remove(path)

    def set_limit(self, path: Path, limit_bytes: int | None) -> None:
        """Cap subvolume ``path`` at ``limit_bytes`` (None lifts the cap): with simple quotas,
        the bytes it wrote itself (data shared from its template or the snapshot it was made
        from is charged to them); with full quotas, all it references. Writes past it fail
        with EDQUOT inside the sandbox, which keeps running."""
        if limit_bytes is not None and limit_bytes <= 0:
            raise InvalidRequest(f"a disk limit must be positive, not {limit_bytes}")
        _btrfs.limit_referenced(self._subvolume(path), limit_bytes)

    def usage(self, path: Path) -> int:
        """The bytes ``set_limit`` counts for subvolume ``path`` (see there), committed first
        so that the number includes the latest writes."""
        referenced, _exclusive = _btrfs.qgroup_usage(self._subvolume(path), settle=True)
        return referenced

    def identity(self, path: Path) -> SubvolumeIdentity:
        """The identity of subvolume ``path`` now, after a commit so that writes still in
        memory count. What a host-local snapshot's signature covers (docs/runtime.md)."""
        return subvolume_identity(self._subvolume(path))

    def send(self, path: Path, parent: Path | None, out: IO[bytes]) -> None:
        """Write read-only subvolume ``path`` to ``out`` as a btrfs send stream: whole, or as
        the difference from read-only ``parent`` (e.g. its template), which is far smaller
        but can only be received where ``parent`` (by UUID) exists, i.e. in this pool."""
        path = self._subvolume(path)
        if parent is not None:
            parent = self._subvolume(parent)
        _btrfs.send(path, parent, out)

    def receive(self, stream: IO[bytes], dest_dir: Path) -> Path:
        """Apply a ``send`` stream; return the read-only subvolume it made in ``dest_dir``,
        named as the sent one was. It appears there only once received completely.

        Raises:
            RuntimeFailure: a broken stream, a missing parent, or the name already taken.
        """
        dest_dir = self._inside(dest_dir)
        dest_dir.mkdir(parents=True, exist_ok=True)
        with self._work(f"{_RECEIVE}{secrets.token_hex(8)}") as work:
            work.mkdir()
            name = _btrfs.receive(stream, work)
            final = dest_dir / name
            if os.path.lexists(final):
                raise RuntimeFailure(f"cannot receive {name}: {final} already exists")
            _btrfs.snapshot(work / name, final, readonly=True)
        return final

    @contextmanager
    def scratch(self) -> Iterator[Path]:
        """A fresh path (not yet made) on the pool's filesystem, for work that files are then
        cloned from (an archive's layer before it is applied); removed, whatever it became,
        on the way out, and by ``open`` if its holder was interrupted."""
        with self._work(f"{_SCRATCH}{secrets.token_hex(8)}") as work:
            yield work

    # Internals

    def _snapshot(self, source: Path, dest: Path, *, readonly: bool) -> None:
        source = self._subvolume(source)
        dest = self._inside(dest)
        if os.path.lexists(dest):
            raise RuntimeFailure(f"cannot snapshot to {dest}: it exists")
        dest.parent.mkdir(parents=True, exist_ok=True)
        _btrfs.snapshot(source, dest, readonly=readonly)

    def _inside(self, path: Path) -> Path:
        """``path`` (its last component not followed) if it is below the pool's root and not
        one of the layout's own directories."""
        path = Path(path)
        resolved = path.parent.resolve() / path.name
        if (
            not resolved.is_relative_to(self.root)
            or resolved.name in ("", ".", "..")
            or resolved in (self.root, self.templates, self.disks, self.snapshots, self.staging)
        ):
            raise InvalidRequest(f"{path} is not a path inside the storage pool {self.root}")
        return resolved

    def _subvolume(self, path: Path) -> Path:
        path = self._inside(path)
        if not _btrfs.is_subvolume(path):
            raise InvalidRequest(f"{path} is not a subvolume")
        return path

    @contextmanager
    def _work(self, key: str) -> Iterator[Path]:
        """Hold ``key``'s lock, clear what an interrupted holder left, and yield a fresh work
        path in ``.staging/<key>/``, deleted (whatever it became) on the way out."""
        directory = self.staging / key
        directory.mkdir(exist_ok=True)
        try:
            with _locked(directory / _LOCK, wait=True):
                self._clear(directory)
                work = directory / f"{os.getpid()}-{secrets.token_hex(4)}"
                try:
                    yield work
                finally:
                    if os.path.lexists(work):
                        _remove(work)
        finally:
            if key.startswith(_ONE_OFF):  # a key of its own: nobody else will ever lock it
                _remove(directory)

    def _sweep(self) -> None:
        """Remove the work of every key whose lock is free: its holder was interrupted."""
        for directory in self.staging.iterdir():
            if not directory.is_dir() or directory.is_symlink():
                _remove(directory)
                continue
            with _locked(directory / _LOCK, wait=False) as held:
                if held:
                    self._clear(directory)
            if held and directory.name.startswith(_ONE_OFF):
                _remove(directory)

    @staticmethod
    def _clear(directory: Path) -> None:
        for entry in directory.iterdir():
            if entry.name != _LOCK:
                _remove(entry)


def subvolume_identity(path: Path) -> SubvolumeIdentity:
    """``StoragePool.identity`` for a subvolume already known to be one, without a pool at
    hand (the snapshot store checks its entries with it)."""
    _btrfs.sync(path)
    subvolume_uuid, ctransid, readonly = _btrfs.subvolume_info(path)
    return SubvolumeIdentity(uuid=subvolume_uuid, ctransid=ctransid, readonly=readonly)


@contextmanager
def _locked(path: Path, *, wait: bool) -> Iterator[bool]:
    """flock ``path``; yield whether it is held (always, with ``wait``). A lock file is never
    deleted while its key can still be used, or two holders could lock two different files."""
    with open(path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _remove(path: Path) -> None:
    """Delete ``path`` whatever it is: subvolumes nested anywhere inside go first, since a
    subvolume is not deleted with the directory that holds it (``rm`` stops at it)."""
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        path.unlink()
        return
    subvolume = st.st_ino == _btrfs.SUBVOLUME_INO
    if subvolume:
        try:
            _btrfs.delete(path)
            return
        except RuntimeFailure:
            nested = _nested_subvolumes(path, st.st_dev)
            if not nested:
                raise
            if _btrfs.subvolume_info(path)[2]:
                _btrfs.set_readonly(path, False)  # its directories must change to lose them
    else:
        nested = _nested_subvolumes(path, st.st_dev)
    for inner in nested:
        _remove(inner)
    if subvolume:
        _btrfs.delete(path)
    else:
        proc = subprocess.run(
            ["rm", "-rf", "--one-file-system", "--", str(path)], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise RuntimeFailure(f"removing {path}: {proc.stderr.strip()}")


def _nested_subvolumes(path: Path, device: int) -> list[Path]:
    """The subvolumes directly below ``path`` (on ``device``), not looking inside them."""
    found = []
    pending = [path]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if not entry.is_dir(follow_symlinks=False):
                    continue
                st = entry.stat(follow_symlinks=False)
                if st.st_dev == device:
                    pending.append(Path(entry.path))
                elif st.st_ino == _btrfs.SUBVOLUME_INO:
                    found.append(Path(entry.path))
    return found
