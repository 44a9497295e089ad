"""Replaying an overlayfs upper layer onto a copy of its lower layer gives the merged view.

The layer is made by a real overlay mount (root): deletions become whiteouts, a directory
removed and made again becomes opaque. The merged view, read through the mount before it is
taken down, is what ``apply`` must reproduce, byte for byte and owner for owner.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hosts.errors import RuntimeFailure
from hosts.storage.overlay_upper import apply

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="overlay mounts need root")

SHIFT = 1_000_000


def tree(root: Path) -> dict[str, tuple[object, ...]]:
    """Every entry under ``root``: type and mode, owner, and content or link target."""
    found: dict[str, tuple[object, ...]] = {}
    for directory, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            path = Path(directory, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                what: object = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                what = path.read_bytes()
            else:
                what = None
            found[str(path.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, what)
    return found


@pytest.fixture
def layers(tmp_path: Path) -> Iterator[tuple[Path, Path, dict[str, tuple[object, ...]]]]:
    """(lower, upper, merged view) after a sandbox-like session of changes."""
    lower, upper, work, merged = (tmp_path / n for n in ("lower", "upper", "work", "merged"))
    for d in (lower, upper, work, merged):
        d.mkdir()
    (lower / "etc").mkdir()
    (lower / "etc" / "keep").write_text("kept")
    (lower / "etc" / "gone").write_text("deleted later")
    (lower / "etc" / "edit").write_text("old")
    (lower / "opt" / "old").mkdir(parents=True)
    (lower / "opt" / "old" / "inside").write_text("hidden by an opaque directory")
    (lower / "bin").mkdir()
    (lower / "bin" / "tool").write_text("#!/bin/sh\n")
    os.chmod(lower / "bin" / "tool", 0o4755)
    (lower / "swap").mkdir()
    (lower / "swap" / "f").write_text("a directory replaced by a file")
    options = f"lowerdir={lower},upperdir={upper},workdir={work}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(merged)], check=True)
    try:
        (merged / "etc" / "gone").unlink()
        (merged / "etc" / "edit").write_text("new")
        shutil.rmtree(merged / "opt" / "old")
        (merged / "opt" / "old").mkdir()
        (merged / "opt" / "old" / "fresh").write_text("made again")
        shutil.rmtree(merged / "swap")
        (merged / "swap").write_text("now a file")
        (merged / "home" / "daytona").mkdir(parents=True)
        (merged / "home" / "daytona" / "notes").write_text("mine")
        os.chown(merged / "home" / "daytona", 1000, 1000)
        os.chown(merged / "home" / "daytona" / "notes", 1000, 1000)
        os.symlink("notes", merged / "home" / "daytona" / "link")
        os.chmod(merged / "bin" / "tool", 0o4750)  # a copy-up keeps the setuid bit
        os.mkfifo(merged / "home" / "fifo")
        view = tree(merged)
    finally:
        subprocess.run(["umount", str(merged)], check=True)
    yield lower, upper, view


def test_replaying_the_upper_layer_gives_the_merged_view(
    layers: tuple[Path, Path, dict[str, tuple[object, ...]]], tmp_path: Path
) -> None:
    lower, upper, view = layers
    disk = tmp_path / "disk"
    shutil.copytree(lower, disk, symlinks=True)
    applied = apply(upper, disk, shift=0)
    assert applied > 0
    assert tree(disk) == view


def test_owners_are_shifted_into_the_sandbox_range(
    layers: tuple[Path, Path, dict[str, tuple[object, ...]]], tmp_path: Path
) -> None:
    lower, upper, view = layers
    disk = tmp_path / "disk"
    shutil.copytree(lower, disk, symlinks=True)
    subprocess.run(["chown", "-hR", f"{SHIFT}:{SHIFT}", str(disk)], check=True)
    os.chmod(disk / "bin" / "tool", 0o4755)  # chown dropped it, as the pool's import restores it
    apply(upper, disk, shift=SHIFT)
    shifted = {
        name: (mode, uid + SHIFT, gid + SHIFT, what)  # type: ignore[operator]
        for name, (mode, uid, gid, what) in view.items()
    }
    assert tree(disk) == shifted


def test_a_layer_using_redirects_is_refused_before_anything_changes(tmp_path: Path) -> None:
    upper, disk = tmp_path / "upper", tmp_path / "disk"
    (upper / "moved").mkdir(parents=True)
    (upper / "new").write_text("x")
    os.setxattr(upper / "moved", "trusted.overlay.redirect", b"/elsewhere")
    disk.mkdir()
    (disk / "keep").write_text("untouched")
    with pytest.raises(RuntimeFailure, match="redirect"):
        apply(upper, disk, shift=0)
    assert sorted(os.listdir(disk)) == ["keep"]


def test_hard_links_stay_links_and_a_merged_directory_takes_the_layers_xattrs(tmp_path: Path) -> None:
    """An archive's layer (``shift=0``): two names of one file are still one inode after the
    replay, and a directory's xattrs are the layer's, not the template's plus the layer's."""
    disk, upper = tmp_path / "disk", tmp_path / "upper"
    (disk / "d").mkdir(parents=True)
    os.setxattr(disk / "d", "user.template", b"removed in the sandbox")
    (upper / "d").mkdir(parents=True)
    os.setxattr(upper / "d", "user.sandbox", b"set in the sandbox")
    (upper / "d" / "a").write_text("linked")
    os.link(upper / "d" / "a", upper / "d" / "b")
    os.chown(upper / "d" / "a", 100_000 + 1000, 100_000 + 1000)  # already in the pool's ids

    apply(upper, disk, shift=0)

    a, b = os.lstat(disk / "d" / "a"), os.lstat(disk / "d" / "b")
    assert (a.st_ino, a.st_nlink, a.st_uid) == (b.st_ino, 2, 101_000)
    assert os.listxattr(disk / "d") == ["user.sandbox"]
