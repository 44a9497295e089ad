"""Applying an overlayfs upper layer onto a full disk: how disks and snapshots made by the
namespace runtime (an overlay's writable layer over the template) become pool disks.

The upper layer holds only what a sandbox changed, in overlayfs' own encoding:

* a file, symlink, device or directory present in the upper layer replaces (or, for a
  directory also present below, is merged into) the same path of the template;
* a *whiteout* — a character device 0:0 — means the path was deleted;
* an *opaque* directory (xattr ``trusted.overlay.opaque = "y"``) hides everything the
  template had below it: the directory was removed and made again.

``apply`` replays that onto ``disk``, a copy of the same template, so the result is the
merged view the sandbox saw. Ids are shifted like the template's (``_import``): the namespace
runtime's files are owned by host ids equal to the sandbox's own, the pool's by
``shift + id``; an archive's layer (``hosts/runtime/_layer``) is already in the pool's ids
(``shift=0``: owners, modes and xattrs carried as they are). Hard links within the layer
stay links. Layers using overlayfs' optional redirect or metacopy features (never enabled
by the namespace runtime) cannot be replayed file by file and are refused before anything is
written.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat
from pathlib import Path

from hosts.errors import RuntimeFailure
from hosts.storage._import import shift_one

_OVERLAY_XATTR = "trusted.overlay."
_OPAQUE = "trusted.overlay.opaque"
_UNSUPPORTED = ("trusted.overlay.redirect", "trusted.overlay.metacopy")
_FICLONE = 0x40049409  # _IOW(0x94, 9, int): share the source's extents (btrfs, xfs)
_CHUNK = 1 << 20


def apply(upper: Path, disk: Path, *, shift: int) -> int:
    """Replay the overlay upper layer ``upper`` onto the directory ``disk``; return how many
    entries of the layer were applied.

    Raises:
        RuntimeFailure: the layer uses redirects or metacopy (checked before any change).
    """
    _refuse_unsupported(upper)
    count = 0
    linked: dict[int, Path] = {}  # the first copy of each layer inode with several names
    pending = [Path()]
    while pending:
        relative = pending.pop()
        source, target = upper / relative, disk / relative
        if _is_opaque(source):
            _clear(target)
        with os.scandir(source) as entries:
            names = sorted(entry.name for entry in entries)
        for name in names:
            src, dst = source / name, target / name
            st = os.lstat(src)
            count += 1
            if _is_whiteout(st):
                _remove(dst)
            elif stat.S_ISDIR(st.st_mode):
                if not _is_real_dir(dst):
                    _remove(dst)
                    os.mkdir(dst)
                pending.append(relative / name)
            elif st.st_nlink > 1 and st.st_ino in linked:
                _remove(dst)
                os.link(linked[st.st_ino], dst)  # already shifted, through its first name
            else:
                _remove(dst)
                _copy_entry(src, dst, st)
                if shift:
                    shift_one(str(dst), os.lstat(dst), shift)
                if st.st_nlink > 1:
                    linked[st.st_ino] = dst
    _copy_dir_metadata(upper, disk, shift)
    return count


def _copy_dir_metadata(upper: Path, disk: Path, shift: int) -> None:
    """Directories take the upper layer's owner, mode, xattrs and times, deepest first (setting
    a child's times would otherwise move its parent's mtime)."""
    directories = [Path(root) for root, _, _ in os.walk(upper)]
    for source in sorted(directories, key=lambda p: len(p.parts), reverse=True):
        target = disk / source.relative_to(upper)
        st = os.lstat(source)
        os.chown(target, st.st_uid, st.st_gid, follow_symlinks=False)
        os.chmod(target, stat.S_IMODE(st.st_mode))
        _copy_xattrs(source, target, replace=True)
        if shift:
            shift_one(str(target), os.lstat(target), shift)
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _copy_entry(src: Path, dst: Path, st: os.stat_result) -> None:
    """Copy one non-directory entry with its owner, mode, xattrs and times."""
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        os.symlink(os.readlink(src), dst)
    elif stat.S_ISREG(mode):
        _copy_file(src, dst)
    elif stat.S_ISFIFO(mode):
        os.mkfifo(dst)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        os.mknod(dst, mode, st.st_rdev)
    else:  # a socket: nothing to carry over, as after a reboot
        return
    # Owner, then mode (a chown drops setuid), then xattrs (it drops capabilities too).
    os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    if not stat.S_ISLNK(mode):
        os.chmod(dst, stat.S_IMODE(mode))
    _copy_xattrs(src, dst)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _copy_file(src: Path, dst: Path) -> None:
    """Copy a regular file's data: cloned (no data copied) when both are on one btrfs, as an
    archive's layer extracted in the pool is, else copied."""
    with open(src, "rb") as source, open(dst, "xb") as target:
        try:
            fcntl.ioctl(target.fileno(), _FICLONE, source.fileno())
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOTTY):
                raise
            shutil.copyfileobj(source, target, _CHUNK)


def _copy_xattrs(src: Path, dst: Path, *, replace: bool = False) -> None:
    """Give ``dst`` the xattrs of ``src`` (overlayfs' own aside); with ``replace``, also drop
    those ``dst`` had and ``src`` has not (a directory merged over the template's keeps the
    upper one's, as the overlay showed it)."""
    names = [name for name in os.listxattr(src, follow_symlinks=False) if not name.startswith(_OVERLAY_XATTR)]
    if replace:
        for name in set(os.listxattr(dst, follow_symlinks=False)) - set(names):
            os.removexattr(dst, name, follow_symlinks=False)
    for name in names:
        os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=False), follow_symlinks=False)


def _refuse_unsupported(upper: Path) -> None:
    for root, dirs, files in os.walk(upper):
        for name in (*dirs, *files):
            path = os.path.join(root, name)
            found = [x for x in os.listxattr(path, follow_symlinks=False) if x.startswith(_UNSUPPORTED)]
            if found:
                raise RuntimeFailure(f"{path} uses overlayfs {found[0]}, which cannot be carried over")


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(directory: Path) -> bool:
    try:
        return os.getxattr(directory, _OPAQUE, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _is_real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _remove(path: Path) -> None:
    """Remove whatever is at ``path`` (a directory with everything in it); absent is fine."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _clear(directory: Path) -> None:
    if not _is_real_dir(directory):
        return
    for entry in os.scandir(directory):
        _remove(Path(entry.path))
