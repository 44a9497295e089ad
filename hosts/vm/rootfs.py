"""The root disk: a raw ext4 image of a template's tree plus the agent at /opt/dnah/guest.

``mkfs.ext4 -d`` copies the template tree into a fresh filesystem as it is: owners, modes,
hard links, symlinks, device nodes and extended attributes (file capabilities). The template
tree holds the ids a sandbox sees (root 0, ``daytona`` 1000); the OCI runtime shifts them
into a user namespace's host range, but a VM has its own kernel and no user namespace, so
the image keeps them unshifted.

The agent is then added to the mounted image: a copy of ``guest/``'s sources, owned by root
and read-only to everyone else (the agent runs as uid 1000 and must not change its own
code; a sandbox's root may, but only on its own disk), with bytecode compiled by hostd's
python when it has the templates' cache tag (see hosts/runtime/oci/_bytecode.py) and sources
keeping their mtimes, so the guest's python uses it instead of compiling at every boot.

Size: the tree's allocated size plus a quarter, the journal and ``HEADROOM_BYTES``; the
backends grow each sandbox's copy to its ``disk_gb`` (resize2fs), so the image itself stays
small. One inode per 8 KiB (ext4's default is 16 KiB) leaves room for package trees full of
small files after a grow.
"""

from __future__ import annotations

import importlib.util
import py_compile
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from hosts.errors import RuntimeFailure
from hosts.vm import _files

GUEST_TARGET = "opt/dnah/guest"
HEADROOM_BYTES = 256 * 2**20
JOURNAL_BYTES = 64 * 2**20
INODE_BYTES = 8192
GUEST_CACHE_TAG = "cpython-311"
"""The templates' python (Debian 12's 3.11); pycs of any other tag would be ignored there."""
_MIB = 2**20


def image_size(tree: Path) -> int:
    """Bytes for an image holding ``tree`` with room to spare (a whole number of MiB)."""
    used = _du_bytes(tree)
    inodes = _du_inodes(tree)
    size = used + used // 4 + inodes * 256 + JOURNAL_BYTES + HEADROOM_BYTES
    return -(-size // _MIB) * _MIB


def build(tree: Path, guest_dir: Path, out: Path, work: Path) -> None:
    """Write the ext4 image of ``tree`` + the agent to ``out``, using ``work`` as scratch space."""
    size = image_size(tree)
    with open(out, "wb") as f:
        f.truncate(size)
    _run(
        "mkfs.ext4", "-q", "-F", "-L", "dnah-root", "-i", str(INODE_BYTES),
        "-E", "lazy_itable_init=0,lazy_journal_init=0", "-d", str(tree), str(out),
    )  # fmt: skip
    mountpoint = Path(tempfile.mkdtemp(prefix="mnt-", dir=work))
    _run("mount", "-o", "loop,noatime", str(out), str(mountpoint))
    try:
        install_guest(guest_dir, mountpoint / GUEST_TARGET)
    finally:
        _run("umount", str(mountpoint))
        mountpoint.rmdir()
    _run("e2fsck", "-f", "-n", str(out))


def install_guest(guest_dir: Path, target: Path) -> None:
    """Copy the agent's sources to ``target`` (root-owned, world-readable) with their bytecode."""
    target.mkdir(parents=True, exist_ok=True)
    target.chmod(0o755)
    for source in _files.guest_sources(guest_dir):
        copied = target / source.name
        shutil.copy2(source, copied)  # keeps the mtime the pyc is checked against
        copied.chmod(0o644)
    if sys.implementation.cache_tag != GUEST_CACHE_TAG:
        return  # the guest compiles in memory at each start: slower, not broken
    for source in sorted(target.glob("*.py")):
        py_compile.compile(
            str(source),
            cfile=importlib.util.cache_from_source(str(source)),
            doraise=True,
            invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP,
        )
    for path in [target / "__pycache__", *(target / "__pycache__").iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def _du_bytes(tree: Path) -> int:
    out = _output("du", "-s", "-x", "--block-size=1", str(tree))
    return int(out.split()[0])


def _du_inodes(tree: Path) -> int:
    out = _output("du", "-s", "-x", "--inodes", str(tree))
    return int(out.split()[0])


def _output(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeFailure(f"{argv[0]} failed (exit {done.returncode}): {done.stderr.strip()[-400:]}")
    return done.stdout


def _run(*argv: str) -> None:
    _output(*argv)
