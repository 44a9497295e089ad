"""The storage pool on a real btrfs: a loop-mounted image made for this module, removed at its
end (unmounted and its loop device freed, even when tests fail)."""

from __future__ import annotations

import errno
import io
import mmap
import os
import stat
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hosts.errors import InvalidRequest, RuntimeFailure, SandboxConflict
from hosts.storage import _btrfs, _import, _loop
from hosts.storage.pool import PoolConfig, StoragePool, SubvolumeIdentity
from hosts.templates import describe_tree

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="btrfs pools need root (mount, losetup)")

SHIFT = 1_000_000
MB = 1_000_000
FULL = (errno.EDQUOT, errno.ENOSPC)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PoolConfig]:
    base = tmp_path_factory.mktemp("pool")
    config = PoolConfig(image=base / "pool.img", size_bytes=3 * 2**30, mountpoint=base / "mnt")
    try:
        yield config
    finally:
        _loop.detach_image(config.image, config.mountpoint)


@pytest.fixture(scope="module")
def pool(config: PoolConfig) -> StoragePool:
    return StoragePool.open(config)


@pytest.fixture
def work(pool: StoragePool, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A plain directory of the pool for one test's subvolumes, deleted after it."""
    path = pool.root / "work" / request.node.name
    path.mkdir(parents=True)
    yield path
    pool.delete(path)


def subvolume_with(path: Path, files: dict[str, bytes]) -> Path:
    _btrfs.create(path)
    for name, data in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    return path


def used_bytes(path: Path) -> int:
    _btrfs.sync(path)
    fs = os.statvfs(path)
    return (fs.f_blocks - fs.f_bfree) * fs.f_frsize


def fill(path: Path, limit: int) -> int:
    """Write 1 MB chunks to ``path`` (fsynced) up to ``limit`` bytes; return how many got in."""
    written = 0
    with open(path, "wb") as f:
        while written < limit:
            f.write(os.urandom(MB))
            f.flush()
            os.fsync(f.fileno())
            written += MB
    return written


# Opening


def test_open_is_idempotent_and_keeps_data(config: PoolConfig, pool: StoragePool) -> None:
    marker = pool.root / "work" / "marker"
    marker.parent.mkdir(exist_ok=True)
    marker.write_text("kept")

    again = StoragePool.open(config)

    assert again.root == pool.root == config.mountpoint.resolve()
    assert marker.read_text() == "kept"
    mounts = [
        line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(pool.root) in line
    ]
    assert len(mounts) == 1
    loops = subprocess.run(["losetup", "-j", str(config.image)], capture_output=True, text=True).stdout
    assert len(loops.splitlines()) == 1
    assert {p.name for p in pool.root.iterdir()} >= {"templates", "disks", "snapshots", ".staging"}
    marker.unlink()


def test_an_operator_directory_must_be_on_btrfs(pool: StoragePool, tmp_path: Path) -> None:
    assert _btrfs.filesystem_type(tmp_path) != "btrfs"
    elsewhere = PoolConfig(
        directory=tmp_path, image=tmp_path / "unused.img", size_bytes=2**30, mountpoint=tmp_path / "m"
    )
    with pytest.raises(RuntimeFailure, match="not btrfs"):
        StoragePool.open(elsewhere)
    assert list(tmp_path.iterdir()) == []  # nothing created

    operator_dir = pool.root / "work" / "operator"
    operator_dir.mkdir(parents=True)
    try:
        operator = StoragePool.open(
            PoolConfig(
                directory=operator_dir, image=tmp_path / "unused.img", size_bytes=1, mountpoint=tmp_path
            )
        )
        assert operator.root == operator_dir
        assert operator.disks.is_dir() and operator.templates.is_dir()
    finally:
        pool.delete(operator_dir)


# Templates


def template_tree(root: Path) -> Path:
    """A small rootfs with every kind of entry and attribute the import must keep."""
    root.mkdir()
    (root / "bin").mkdir()
    su = root / "bin" / "su"
    su.write_bytes(b"setuid binary")
    os.chmod(su, 0o4755)
    sg = root / "bin" / "wall"
    sg.write_bytes(b"setgid binary")
    os.chown(sg, 0, 5)
    os.chmod(sg, 0o2755)
    ping = root / "bin" / "ping"
    ping.write_bytes(b"file capability")
    # VFS_CAP_REVISION_2 | effective, permitted = CAP_NET_RAW (13), inheritable none.
    caps = struct.pack("<5I", 0x02000001, 1 << 13, 0, 0, 0)
    os.setxattr(ping, "security.capability", caps)
    (root / "home" / "user").mkdir(parents=True)
    owned = root / "home" / "user" / "notes"
    owned.write_bytes(b"user file")
    os.chown(owned, 1000, 1000)
    os.chown(root / "home" / "user", 1000, 1000)
    os.link(su, root / "bin" / "su-link")
    os.symlink("bin/su", root / "su-symlink")
    os.lchown(root / "su-symlink", 7, 7)
    xattrs = root / "xattrs"
    xattrs.write_bytes(b"")
    os.setxattr(xattrs, "user.note", b"kept")
    os.setxattr(xattrs, "trusted.overlay.opaque", b"y")
    (root / "dev").mkdir()
    os.mknod(root / "dev" / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    return root


def test_a_template_is_imported_read_only_with_owners_shifted_and_attributes_kept(
    pool: StoragePool, work: Path
) -> None:
    source = template_tree(work / "rootfs")

    template = pool.template("t-attrs", "0a1b", source, uid_shift=SHIFT)

    assert template == pool.templates / "t-attrs-0a1b"
    assert pool.identity(template).readonly
    su = os.lstat(template / "bin" / "su")
    assert (stat.S_IMODE(su.st_mode), su.st_uid, su.st_gid) == (0o4755, SHIFT, SHIFT)
    wall = os.lstat(template / "bin" / "wall")
    assert (stat.S_IMODE(wall.st_mode), wall.st_uid, wall.st_gid) == (0o2755, SHIFT, SHIFT + 5)
    assert os.getxattr(template / "bin" / "ping", "security.capability") == os.getxattr(
        source / "bin" / "ping", "security.capability"
    )
    assert os.stat(template / "home" / "user" / "notes").st_uid == SHIFT + 1000
    assert os.stat(template / "home" / "user").st_gid == SHIFT + 1000
    assert os.stat(template).st_uid == SHIFT
    assert os.lstat(template / "bin" / "su-link").st_ino == su.st_ino
    assert os.readlink(template / "su-symlink") == "bin/su"
    assert os.lstat(template / "su-symlink").st_uid == SHIFT + 7
    assert os.getxattr(template / "xattrs", "user.note") == b"kept"
    assert os.getxattr(template / "xattrs", "trusted.overlay.opaque") == b"y"
    null = os.lstat(template / "dev" / "null")
    assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3)
    with pytest.raises(OSError) as exc:
        (template / "new").write_bytes(b"x")
    assert exc.value.errno == errno.EROFS
    assert [p.name for p in (pool.staging / "t-attrs-0a1b").iterdir()] == ["lock"]

    # Imported once: a second call reuses it, and another shift is refused, not mixed in.
    assert pool.template("t-attrs", "0a1b", source, uid_shift=SHIFT) == template
    with pytest.raises(RuntimeFailure, match="not shifted by 2000000"):
        pool.template("t-attrs", "0a1b", source, uid_shift=2_000_000)
    pool.delete(template)


def test_a_tree_with_ids_no_sandbox_maps_is_refused_and_leaves_nothing(pool: StoragePool, work: Path) -> None:
    source = work / "rootfs"
    source.mkdir()
    (source / "stray").write_bytes(b"")
    os.chown(source / "stray", 70000, 0)

    with pytest.raises(RuntimeFailure, match="outside the sandbox ids"):
        pool.template("t-stray", "ff", source, uid_shift=SHIFT)

    assert not os.path.lexists(pool.templates / "t-stray-ff")
    assert [p.name for p in (pool.staging / "t-stray-ff").iterdir()] == ["lock"]


def test_concurrent_imports_of_one_key_import_once(
    pool: StoragePool, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = template_tree(work / "rootfs")
    copies: list[Path] = []
    real_copy = _import.copy_tree

    def counting_copy(src: Path, dest: Path) -> None:
        copies.append(dest)
        real_copy(src, dest)

    monkeypatch.setattr(_import, "copy_tree", counting_copy)
    results: list[Path] = []
    errors: list[BaseException] = []

    def importer() -> None:
        try:
            results.append(pool.template("t-race", "abc", source, uid_shift=SHIFT))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=importer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert results == [pool.templates / "t-race-abc"] * 4
    assert len(copies) == 1
    pool.delete(pool.templates / "t-race-abc")


def test_an_interrupted_import_is_cleaned_up(config: PoolConfig, pool: StoragePool, work: Path) -> None:
    source = template_tree(work / "rootfs")
    # What a crash mid-import leaves: a half-filled work subvolume and an unheld lock.
    for key in ("t-crash-01", "t-crash-02"):
        (pool.staging / key).mkdir()
        (pool.staging / key / "lock").touch()
        subvolume_with(pool.staging / key / "4242-dead", {"half": b"x" * 1000})
    (pool.staging / "receive-00").mkdir()
    subvolume_with(pool.staging / "receive-00" / "4242-dead", {"half": b"y"})

    StoragePool.open(config)  # hostd's restart sweeps every key
    assert [p.name for p in (pool.staging / "t-crash-01").iterdir()] == ["lock"]
    assert not (pool.staging / "receive-00").exists()

    subvolume_with(pool.staging / "t-crash-02" / "4243-dead", {"half": b"z"})
    template = pool.template("t-crash", "02", source, uid_shift=SHIFT)  # the importer sweeps its key
    assert [p.name for p in (pool.staging / "t-crash-02").iterdir()] == ["lock"]
    assert (template / "bin" / "su").read_bytes() == b"setuid binary"
    pool.delete(template)


def test_template_keys_are_checked(pool: StoragePool, work: Path) -> None:
    for name, content_hash in (("../up", "ab"), ("ok", "not-hex"), ("", "ab")):
        with pytest.raises(InvalidRequest):
            pool.template(name, content_hash, work, uid_shift=SHIFT)


# Disks and snapshots


def test_a_writable_copy_shares_data_until_written(pool: StoragePool, work: Path) -> None:
    files = {f"small/{i}": os.urandom(100) for i in range(1000)}
    source = subvolume_with(work / "source", {**files, "big": os.urandom(100 * MB)})
    _btrfs.set_readonly(source, True)
    before = used_bytes(pool.root)

    disk = pool.create_disk("sb-share", source)

    assert used_bytes(pool.root) - before < 2 * MB
    assert (disk / "small" / "999").read_bytes() == files["small/999"]
    (disk / "small" / "999").write_bytes(b"changed")
    (disk / "new").write_bytes(b"new")
    assert (source / "small" / "999").read_bytes() == files["small/999"]
    assert not (source / "new").exists()
    assert pool.disk("sb-share") == disk
    with pytest.raises(SandboxConflict):
        pool.create_disk("sb-share", source)

    pool.delete_disk("sb-share")
    pool.delete_disk("sb-share")  # idempotent
    assert not disk.exists()


def test_a_snapshot_is_read_only_and_its_copies_are_writable(pool: StoragePool, work: Path) -> None:
    disk = subvolume_with(work / "disk", {"etc/hostname": b"sandbox"})

    pool.snapshot(disk, work / "snaps" / "s1")
    pool.writable_copy(work / "snaps" / "s1", work / "restored")

    with pytest.raises(OSError) as exc:
        (work / "snaps" / "s1" / "etc" / "hostname").write_bytes(b"tampered")
    assert exc.value.errno == errno.EROFS
    (work / "restored" / "etc" / "hostname").write_bytes(b"restored")
    assert (work / "snaps" / "s1" / "etc" / "hostname").read_bytes() == b"sandbox"
    with pytest.raises(RuntimeFailure, match="exists"):
        pool.snapshot(disk, work / "snaps" / "s1")
    with pytest.raises(InvalidRequest, match="not a subvolume"):
        pool.snapshot(work / "snaps", work / "s2")


def test_delete_handles_every_kind_of_path(pool: StoragePool, work: Path) -> None:
    disk = subvolume_with(work / "disk", {"f": b"x"})
    pool.snapshot(disk, work / "tree" / "ro")  # a read-only subvolume in a plain directory
    subvolume_with(disk / "made-by-the-sandbox", {"inner": b"y"})  # nested subvolume
    subvolume_with(disk / "made-by-the-sandbox" / "deeper", {"inner": b"z"})
    pool.snapshot(disk, work / "ro-with-nested")
    _btrfs.set_readonly(work / "ro-with-nested", False)
    subvolume_with(work / "ro-with-nested" / "inner", {})
    _btrfs.set_readonly(work / "ro-with-nested", True)
    (work / "plain" / "dir").mkdir(parents=True)
    (work / "plain" / "dir" / "file").write_bytes(b"")

    for path in ("tree/ro", "disk", "ro-with-nested", "plain", "tree", "absent"):
        pool.delete(work / path)
        assert not os.path.lexists(work / path)
    for outside in (pool.root, pool.disks, pool.root / ".." / "x", Path("/etc/passwd")):
        with pytest.raises(InvalidRequest, match="not a path inside"):
            pool.delete(outside)
    with pytest.raises(InvalidRequest):
        pool.disk("../escape")


# Quotas


def test_a_limit_fails_writes_past_it_and_recovers_after_deletes(pool: StoragePool, work: Path) -> None:
    disk = subvolume_with(work / "disk", {"keep": b"still here", "data/seed": os.urandom(MB)})
    limit = pool.usage(disk) + 16 * MB
    pool.set_limit(disk, limit)

    with pytest.raises(OSError) as exc:
        fill(disk / "data" / "big", 4 * limit)
    assert exc.value.errno in FULL

    assert pool.usage(disk) <= limit
    assert (disk / "keep").read_bytes() == b"still here"
    (disk / "data" / "big").unlink()
    (disk / "keep").write_bytes(b"written after the disk was full")
    assert fill(disk / "data" / "again", 4 * MB) == 4 * MB
    assert (disk / "keep").read_bytes() == b"written after the disk was full"

    pool.set_limit(disk, None)  # lifted: the same amount now fits
    assert fill(disk / "data" / "big", 2 * limit) >= 2 * limit
    with pytest.raises(InvalidRequest):
        pool.set_limit(disk, 0)


def test_usage_counts_the_latest_writes(pool: StoragePool, work: Path) -> None:
    disk = subvolume_with(work / "disk", {})
    empty = pool.usage(disk)
    with open(disk / "data", "wb") as f:
        f.write(os.urandom(8 * MB))  # not fsynced: usage commits first

    assert pool.usage(disk) - empty >= 8 * MB


# Identity (the trust model of host-local snapshots)


def test_identity_changes_with_any_write_and_only_then(pool: StoragePool, work: Path) -> None:
    disk = subvolume_with(work / "disk", {"data": b"0123456789"})
    snap = work / "snap"
    pool.snapshot(disk, snap)
    sealed = pool.identity(snap)
    assert sealed.readonly

    _btrfs.set_readonly(snap, False)  # toggling without writing changes nothing but the flag
    assert pool.identity(snap) == SubvolumeIdentity(sealed.uuid, sealed.ctransid, False)
    _btrfs.set_readonly(snap, True)
    assert pool.identity(snap) == sealed
    (disk / "data").write_bytes(b"the source changes")  # other subvolumes do not count
    assert pool.identity(snap) == sealed
    pool.writable_copy(snap, work / "restored")  # neither do using it: restores, sends, reads
    (work / "restored" / "data").write_bytes(b"the restored disk changes")
    pool.snapshot(snap, work / "again")
    pool.send(snap, None, io.BytesIO())
    assert (snap / "data").read_bytes() == b"0123456789"
    assert pool.identity(snap) == sealed

    _btrfs.set_readonly(snap, False)
    with open(snap / "data", "r+b") as f:
        f.write(b"X")  # one byte flipped, not even fsynced
    _btrfs.set_readonly(snap, True)
    tampered = pool.identity(snap)
    assert tampered.uuid == sealed.uuid and tampered.readonly
    assert tampered.ctransid > sealed.ctransid

    # A fresh snapshot in its place (the same content, even) is another subvolume.
    pool.delete(snap)
    pool.snapshot(disk, snap)
    assert pool.identity(snap).uuid != sealed.uuid


@pytest.mark.parametrize("change", ["chmod", "xattr", "utime", "mmap"])
def test_identity_catches_any_kind_of_change(pool: StoragePool, work: Path, change: str) -> None:
    snap = work / "snap"
    pool.snapshot(subvolume_with(work / "disk", {"data": b"x" * 4096}), snap)
    sealed = pool.identity(snap)
    _btrfs.set_readonly(snap, False)
    target = snap / "data"
    if change == "chmod":
        os.chmod(target, 0o777)
    elif change == "xattr":
        os.setxattr(target, "user.added", b"1")
    elif change == "utime":
        os.utime(target, (1, 1))
    else:
        with open(target, "r+b") as f, mmap.mmap(f.fileno(), 0) as mapped:
            mapped[10] = 0x41
    _btrfs.set_readonly(snap, True)
    assert pool.identity(snap).ctransid > sealed.ctransid


# Send / receive


def test_send_against_the_template_and_receive_round_trip(pool: StoragePool, work: Path) -> None:
    template = subvolume_with(work / "template", {"base": os.urandom(20 * MB), "etc/os": b"debian"})
    _btrfs.set_readonly(template, True)
    pool.writable_copy(template, work / "disk")
    (work / "disk" / "etc" / "os").write_bytes(b"changed")
    (work / "disk" / "home").mkdir()
    (work / "disk" / "home" / "work").write_bytes(os.urandom(MB))
    os.symlink("../etc/os", work / "disk" / "home" / "link")
    pool.snapshot(work / "disk", work / "snap")

    incremental, whole = io.BytesIO(), io.BytesIO()
    pool.send(work / "snap", template, incremental)
    pool.send(work / "snap", None, whole)
    assert len(incremental.getvalue()) < 2 * MB < 20 * MB < len(whole.getvalue())

    incremental.seek(0)
    received = pool.receive(incremental, work / "received")

    assert received == work / "received" / "snap"
    assert pool.identity(received).readonly
    assert describe_tree(received) == describe_tree(work / "snap")
    assert [p.name for p in pool.staging.iterdir() if p.name.startswith("receive-")] == []

    broken = io.BytesIO(whole.getvalue()[: len(whole.getvalue()) // 2])
    with pytest.raises(RuntimeFailure, match="receive"):
        pool.receive(broken, work / "broken")
    assert list((work / "broken").iterdir()) == []
    assert [p.name for p in pool.staging.iterdir() if p.name.startswith("receive-")] == []
    with pytest.raises(InvalidRequest, match="not a subvolume"):
        pool.send(work / "received", work / "disk" / "home", io.BytesIO())
