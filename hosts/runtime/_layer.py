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

The template side is read once per template build and kept in memory (a few MB; a template
subvolume is read-only), so a diff stats only the disk: ~70 ms for the base template's 13k
entries here, ~150 ms when both trees are read.

``hosts/storage/overlay_upper.apply`` replays such a layer onto a writable copy of the
template. The caller keeps the disk still (sandbox stopped or frozen) while this runs.
"""

from __future__ import annotations

import functools
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


Meta = tuple[int, int, int, int, int, int, int, int]
"""What decides "unchanged": inode number, mode, size, uid, gid, mtime_ns, ctime_ns, rdev."""
Index = dict[str, dict[str, Meta]]
"""A template tree: for each directory (relative path), its entries' ``Meta`` by name."""


def diff(disk: Path, template: Path) -> Layer:
    """Compare ``disk`` with ``template``; see the module doc. The template's side is read
    once per template (it is read-only) and kept, so each diff stats only the disk."""
    root = os.lstat(template)
    index = _template_index(str(template), root.st_ino, root.st_ctime_ns)
    layer = Layer(entries=[(".", "copy")])  # the root, always: cheaper than deciding
    _walk(layer, index, str(disk), ".", through=True)
    return layer


@functools.lru_cache(maxsize=4)
def _template_index(template: str, _ino: int, _ctime_ns: int) -> Index:
    """``template``'s tree; the root's identity is in the key, so a template imported again
    at the same path is read again."""
    index: Index = {}
    pending = ["."]
    while pending:
        relative = pending.pop()
        listing = index[relative] = {}
        with os.scandir(os.path.join(template, relative)) as entries:
            for entry in entries:
                meta = _meta(entry.stat(follow_symlinks=False))
                listing[entry.name] = meta
                if stat.S_ISDIR(meta[1]):
                    pending.append(_join(relative, entry.name))
    return index


def _walk(layer: Layer, index: Index, disk_dir: str, relative: str, *, through: bool) -> bool:
    """Add what differs under the directory ``relative`` (present on the disk; with the
    template's directory there showing ``through`` it, or not) to ``layer``; return whether
    anything was added."""
    below = dict(index.get(relative, {})) if through else {}
    added = False
    with os.scandir(disk_dir) as entries:
        current = [(entry.name, entry.path) for entry in entries]
    for name, path in current:
        st = os.lstat(path)
        old = below.pop(name, None)
        child = _join(relative, name)
        if stat.S_ISSOCK(st.st_mode):
            if old is not None:
                layer.entries.append((child, "whiteout"))
                added = True
            continue
        if stat.S_ISDIR(st.st_mode):
            added |= _directory(layer, index, path, child, st, old)
        elif old is None or _meta(st) != old:
            layer.entries.append((child, "copy"))
            added = True
    for name in below:  # template paths the disk no longer has
        layer.entries.append((_join(relative, name), "whiteout"))
        added = True
    return added


def _directory(
    layer: Layer, index: Index, path: str, child: str, st: os.stat_result, old: Meta | None
) -> bool:
    """A directory on the disk: placed before its contents in ``entries``, kept only if it or
    something under it differs."""
    at = len(layer.entries)
    layer.entries.append((child, "copy"))
    if old is None or not stat.S_ISDIR(old[1]):  # new, or replaced a file: all of it is new
        _walk(layer, index, path, child, through=False)
        return True
    if old[0] != st.st_ino:  # removed and made again: the template's contents are gone
        layer.entries[at] = (child, "opaque")
        _walk(layer, index, path, child, through=False)
        return True
    if _walk(layer, index, path, child, through=True) or _meta(st) != old:
        return True
    del layer.entries[at]
    return False


def _meta(st: os.stat_result) -> Meta:
    return (
        st.st_ino,
        st.st_mode,
        st.st_size,
        st.st_uid,
        st.st_gid,
        st.st_mtime_ns,
        st.st_ctime_ns,
        st.st_rdev,
    )


def _join(relative: str, name: str) -> str:
    return name if relative == "." else f"{relative}/{name}"
