"""The agent's bytecode, compiled once by hostd so that no sandbox compiles it at boot.

Every sandbox runs the agent from a read-only bind of the repository's ``guest/``. Python
looks for ``guest/__pycache__/<module>.cpython-311.pyc`` and uses it when the source's mtime
and size recorded in it match the source; otherwise it compiles the source in memory and,
the directory being read-only, throws the result away. A missing or stale cache therefore
costs every boot the compilation of every module the agent imports (tens of milliseconds),
and nothing else writes that cache reliably (``PYTHONDONTWRITEBYTECODE`` is common on
development machines, and an edited file leaves its pyc stale). So the runtime compiles
``guest/`` before its first boot: timestamp-checked pycs at optimisation level 0 (the
sandbox's ``python3 -S`` has no ``-O``), rewriting only those whose source changed.

A stale pyc is never used: the sandbox's python checks every pyc against its source as above
and falls back to the source. The pycs only help when hostd's python has the sandbox's cache
tag (``cpython-311``: the template's Debian python 3.11 and hostd's 3.11 share the magic
number); with another one they are written under another name and ignored, which is logged.
"""

from __future__ import annotations

import importlib.util
import py_compile
import sys
from pathlib import Path

import structlog

log = structlog.get_logger("hosts.runtime")

GUEST_CACHE_TAG = "cpython-311"
"""The cache tag of the templates' python (Debian 12's 3.11), in every pyc's name."""


def precompile(guest_dir: Path) -> bool:
    """Bring ``guest_dir``'s pycs up to date with its sources; True when the sandbox's python
    can use them all. Never raises: a boot without a cache is slower, not broken."""
    if sys.implementation.cache_tag != GUEST_CACHE_TAG:
        log.warning(
            "agent bytecode not precompiled: hostd's python writes pycs the sandbox's cannot use",
            hostd=sys.implementation.cache_tag,
            sandbox=GUEST_CACHE_TAG,
        )
        return False
    try:
        for source in sorted(guest_dir.glob("*.py")):
            pyc = Path(importlib.util.cache_from_source(str(source)))
            if not _fresh(source, pyc):
                # Written to a temporary name and renamed: a sandbox booting meanwhile reads
                # the old pyc or the new one, never half of one.
                py_compile.compile(
                    str(source),
                    cfile=str(pyc),
                    doraise=True,
                    optimize=0,
                    invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP,
                )
    except (OSError, py_compile.PyCompileError) as exc:
        log.warning(
            "agent bytecode not precompiled: sandboxes compile it", guest_dir=str(guest_dir), error=str(exc)
        )
        return False
    return True


def _fresh(source: Path, pyc: Path) -> bool:
    """Whether ``pyc`` is what python checks a timestamp pyc against: this interpreter's magic
    number, no flags, the source's mtime and size. (``compileall`` compares the mtime only,
    so it keeps a pyc whose source was edited within the same second.)"""
    stat = source.stat()
    expected = b"".join(
        (
            importlib.util.MAGIC_NUMBER,
            (0).to_bytes(4, "little"),
            (int(stat.st_mtime) & 0xFFFF_FFFF).to_bytes(4, "little"),
            (stat.st_size & 0xFFFF_FFFF).to_bytes(4, "little"),
        )
    )
    try:
        with open(pyc, "rb") as cached:
            return cached.read(16) == expected
    except FileNotFoundError:
        return False
