"""Small file helpers of the image builder: a cross-process lock and content digests."""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

_CHUNK = 1 << 20


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (created if missing): one builder per key. A lock
    file removed while this waited on it (the pruning of its image) is opened afresh, so two
    holders never lock different files of one name."""
    while True:
        with open(path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if _same_file(lock, path):
                    yield
                    return
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


@contextmanager
def try_locked(path: Path) -> Iterator[bool]:
    """``locked`` without waiting: yields False (and holds nothing) when another holds it."""
    with open(path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield _same_file(lock, path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _same_file(lock: IO[str], path: Path) -> bool:
    try:
        return os.fstat(lock.fileno()).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def paths_in_use(root: Path) -> set[Path]:
    """The entries directly under ``root`` that a live process names on its command line or
    holds open (a VMM booting or running from an image's files). Processes that vanish while
    this looks, or that it may not inspect, are skipped."""
    prefixes = {str(root) + "/", os.path.realpath(root) + "/"}
    found: set[Path] = set()

    def note(text: str) -> None:
        for prefix in prefixes:
            if text.startswith(prefix):
                found.add(root / text[len(prefix) :].split("/", 1)[0])

    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for arg in (proc / "cmdline").read_bytes().split(b"\0"):
                text = arg.decode(errors="replace")
                note(text)
                note(text.rpartition("=")[2])  # -drive file=…, path=…
            for fd in (proc / "fd").iterdir():
                note(os.readlink(fd))
        except OSError:
            continue
    return found


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
