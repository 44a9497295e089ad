"""Host-side mount bookkeeping: finding mounts under a path and deleting trees safely.

A directory that something was mounted into (debootstrap leaves ``proc`` and ``sys`` mounted in
a target it was killed in; a crashed runtime could leave a bind mount) must be unmounted
before it is deleted, or a recursive delete walks into the mounted filesystem: a bind of the
host's ``/dev`` would lose its device nodes. ``remove_tree`` is therefore the only way this
package deletes a tree it built.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def mounts_under(path: Path) -> list[Path]:
    """Mount points at or below ``path`` in this process's mount namespace, deepest first."""
    prefix = str(path.resolve())
    found = []
    with open("/proc/self/mountinfo") as table:
        for line in table:
            point = _unescape(line.split()[4])
            if point == prefix or point.startswith(prefix + "/"):
                found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def unmount_all(path: Path) -> None:
    """Lazily detach every mount at or below ``path``; a no-op when there is none.

    A mount that is gone by the time its turn comes (another teardown of the same sandbox got
    there first: a sandbox's death is noticed by every runtime instance watching it) is fine;
    one that stays mounted is an error.
    """
    for point in mounts_under(path):
        done = subprocess.run(["umount", "--lazy", str(point)], capture_output=True, text=True, check=False)
        if done.returncode != 0 and point in mounts_under(point):
            raise subprocess.CalledProcessError(done.returncode, done.args, done.stdout, done.stderr)


def remove_tree(path: Path) -> None:
    """Delete ``path`` recursively, never crossing into another filesystem; absent is fine."""
    if not path.exists() and not path.is_symlink():
        return
    unmount_all(path)
    # --one-file-system is the second guard: a mount that appeared after unmount_all (or one
    # in a namespace we cannot see) is skipped instead of emptied.
    subprocess.run(["rm", "-rf", "--one-file-system", "--", str(path)], check=True, capture_output=True)


def _unescape(field: str) -> str:
    """Undo mountinfo's octal escapes (space, tab, newline and backslash are written ``\\NNN``)."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)
