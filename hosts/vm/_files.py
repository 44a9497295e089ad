"""Small file helpers of the image builder: a cross-process lock and content digests."""

from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_CHUNK = 1 << 20


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (created if missing): one builder per key."""
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def guest_sources(guest_dir: Path) -> list[Path]:
    """The agent's files that go into an image: its Python sources (no caches)."""
    return sorted(guest_dir.glob("*.py"))


def guest_digest(guest_dir: Path) -> str:
    """A digest of every source file of ``guest_dir`` (names and bytes)."""
    digest = hashlib.sha256()
    for source in guest_sources(guest_dir):
        digest.update(source.name.encode() + b"\0" + bytes.fromhex(file_digest(source)) + b"\n")
    return digest.hexdigest()
