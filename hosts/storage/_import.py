"""Copying a template tree into the pool, owned by the sandboxes' shifted ids.

Sandboxes run in a user namespace that maps their ids 0..65535 to host ids ``shift ..
shift + 65535``, and runc 1.1 cannot shift ownership with an idmapped mount, so the template's
files must already be owned by the shifted ids on disk. The copy is ``cp --archive`` (modes,
owners, hard links, symlinks, device nodes, timestamps and every xattr; ``--reflink=auto``
shares extents when the source is on the same btrfs), then one pass over the tree re-owns each
inode. ``chown`` clears the setuid/setgid bits and file capabilities of what it re-owns, so
that pass puts both back as they were.

A POSIX ACL names ids of its own, which this pass does not translate; a tree holding one is
refused rather than imported with entries that point at host ids.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
from pathlib import Path

from hosts.errors import RuntimeFailure

ID_COUNT = 65536
"""Ids a sandbox has: its 0..65535 are the host's ``shift .. shift + 65535``."""
_CAPS = "security.capability"
_ACLS = ("system.posix_acl_access", "system.posix_acl_default")
_KEEP_ON_CHOWN = stat.S_ISUID | stat.S_ISGID


def copy_tree(source: Path, dest: Path) -> None:
    """Copy the contents of directory ``source`` into the existing, empty directory ``dest``."""
    proc = subprocess.run(
        ["cp", "--archive", "--preserve=xattr", "--reflink=auto", f"{source}/.", str(dest)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeFailure(f"copying template {source}: {proc.stderr.strip()}")


def shift_owners(root: Path, shift: int) -> int:
    """Add ``shift`` to the uid and gid of every inode under ``root`` (``root`` included);
    return how many inodes were re-owned.

    Raises:
        RuntimeFailure: an owner outside 0..65535 (no sandbox id maps to it) or a POSIX ACL.
    """
    linked: set[int] = set()
    pending = [str(root)]
    count = 0
    while pending:
        path = pending.pop()
        st = os.lstat(path)
        if st.st_ino in linked:
            continue  # another name of a hard-linked file already re-owned
        if stat.S_ISDIR(st.st_mode):
            with os.scandir(path) as entries:
                pending.extend(entry.path for entry in entries)
        elif st.st_nlink > 1:
            linked.add(st.st_ino)
        shift_one(path, st, shift)
        count += 1
    return count


def shift_one(path: str, st: os.stat_result, shift: int) -> None:
    """Re-own one inode (``st`` its lstat) by ``shift``, keeping setuid/setgid and capabilities."""
    if st.st_uid >= ID_COUNT or st.st_gid >= ID_COUNT:
        raise RuntimeFailure(
            f"template file {path} is owned by {st.st_uid}:{st.st_gid}, outside the sandbox ids 0..65535"
        )
    names = os.listxattr(path, follow_symlinks=False)
    if any(acl in names for acl in _ACLS):
        raise RuntimeFailure(f"template file {path} has a POSIX ACL, whose ids the import cannot shift")
    caps = _read_caps(path) if _CAPS in names else None
    os.chown(path, st.st_uid + shift, st.st_gid + shift, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode) and st.st_mode & _KEEP_ON_CHOWN:
        os.chmod(path, stat.S_IMODE(st.st_mode))
    if caps is not None:
        os.setxattr(path, _CAPS, caps, follow_symlinks=False)


def _read_caps(path: str) -> bytes | None:
    try:
        return os.getxattr(path, _CAPS, follow_symlinks=False)
    except OSError as exc:
        if exc.errno == errno.ENODATA:
            return None
        raise
