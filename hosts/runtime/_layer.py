"""The difference between a disk and the template it was snapshotted from, as an overlayfs
upper layer: what an archive holds instead of the whole disk (``_snapshot.write``).

A pool disk is a writable btrfs snapshot of its template's subvolume (or of a snapshot of
one), so every file the sandbox never touched is the same inode, under the same inode
number, in both trees. An entry is unchanged when the same path exists in both with the same
inode number, type, size, mode, owner, mtime and ctime; ctime moves on every data or metadata
change (a write, chmod, chown, xattr, a new or removed hard link) and userspace cannot set
it, so an unchanged ctime on the same inode means an unchanged file. Everything else is in
the layer:

* a changed or added entry, with its metadata; a directory is there when its own metadata
  changed or anything under it is in the layer (as overlayfs copies parents up), so
  replaying the layer never gives an unchanged directory a made-up owner or mode;
* a *whiteout* (a character device 0:0) where a template path is gone from the disk: one for
  a whole deleted directory, nothing below it;
* an *opaque* directory (``trusted.overlay.opaque = "y"``) where the template's directory was
  removed and another made at its path (another inode): nothing of the template's shows
  through, everything under it is in the layer.

A disk that shares nothing with the template (one extracted from a whole-disk archive)
differs everywhere, so its layer is the whole disk: larger, never wrong. Sockets are not
carried (tar cannot, and none survives a reboot anyway): a socket is treated as absent.

``hosts/storage/overlay_upper.apply`` replays such a layer onto a writable copy of the
template. The caller keeps the disk still (sandbox stopped or frozen) while this runs.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

WHITEOUT_DEVICE = os.makedev(0, 0)
OPAQUE = "trusted.overlay.opaque"


Kind = Literal["copy", "whiteout", "opaque"]
"""A disk entry to archive as it is (a directory alone, not its contents); a template path
absent from the disk; a disk directory that replaced a template directory."""


@dataclass
class Layer:
    """What differs, as paths relative to the disk root (``"."`` is the root), each directory
    before everything under it and everything under it next (as tar wants them: it sets a
    directory's times once it has left it)."""

    entries: list[tuple[str, Kind]] = field(default_factory=list)


def diff(disk: Path, template: Path) -> Layer:
    """Compare ``disk`` with ``template`` in one walk of both trees; see the module doc."""
    layer = Layer(entries=[(".", "copy")])  # the root, always: cheaper than deciding
    _walk(layer, str(disk), str(template), ".")
    return layer


def _walk(layer: Layer, disk_dir: str, template_dir: str | None, relative: str) -> bool:
    """Add what differs under the directory ``relative`` (present on the disk; below the
    template's ``template_dir``, or None when nothing of the template shows through) to
    ``layer``; return whether anything was added."""
    below = _listing(template_dir) if template_dir is not None else {}
    added = False
    with os.scandir(disk_dir) as entries:
        current = [(entry.name, entry.path) for entry in entries]
    for name, path in current:
        st = os.lstat(path)
        old = below.pop(name, None)
        child = f"{relative}/{name}" if relative != "." else name
        if stat.S_ISSOCK(st.st_mode):
            if old is not None:
                layer.entries.append((child, "whiteout"))
                added = True
            continue
        if stat.S_ISDIR(st.st_mode):
            added |= _directory(layer, path, child, st, old, template_dir)
        elif old is None or not _same(st, old):
            layer.entries.append((child, "copy"))
            added = True
    for name in below:  # template paths the disk no longer has
        layer.entries.append((f"{relative}/{name}" if relative != "." else name, "whiteout"))
        added = True
    return added


def _directory(
    layer: Layer,
    path: str,
    child: str,
    st: os.stat_result,
    old: os.stat_result | None,
    template_dir: str | None,
) -> bool:
    """A directory on the disk: placed before its contents in ``entries``, kept only if it or
    something under it differs."""
    index = len(layer.entries)
    layer.entries.append((child, "copy"))
    if old is not None and stat.S_ISDIR(old.st_mode):
        assert template_dir is not None
        if old.st_ino != st.st_ino:  # removed and made again: the template's contents are gone
            layer.entries[index] = (child, "opaque")
            _walk(layer, path, None, child)
            return True
        changed = _walk(layer, path, os.path.join(template_dir, os.path.basename(path)), child)
        if changed or not _same(st, old):
            return True
        del layer.entries[index]
        return False
    _walk(layer, path, None, child)  # new, or replaced a file: all of it is in the layer
    return True


def _listing(directory: str) -> dict[str, os.stat_result]:
    with os.scandir(directory) as entries:
        return {entry.name: entry.stat(follow_symlinks=False) for entry in entries}


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (
        a.st_ino == b.st_ino
        and a.st_mode == b.st_mode
        and a.st_size == b.st_size
        and a.st_uid == b.st_uid
        and a.st_gid == b.st_gid
        and a.st_mtime_ns == b.st_mtime_ns
        and a.st_ctime_ns == b.st_ctime_ns
        and a.st_rdev == b.st_rdev
    )
