"""The template store: root filesystems that sandboxes boot from, built once and cached.

A template is identified by its name and the content hash of its build recipe (the build
script's bytes and the Debian suite it is built for; the mirror only decides where packages
come from, so it is not part of the key). Changing the recipe therefore yields a new template
next to the old one instead of silently altering the base of existing sandboxes, whose disks
record the hash they were created on (see ``get(..., content_hash=)``).

Two kinds of recipe. The base (``dnah-base``, and any name without a recipe of its own) is
``build_script`` run on an empty directory (a debootstrap). A *layered* template has a script
``<recipes_dir>/<name>.sh`` (``install/templates/``) that runs on a copy of the base's rootfs;
its key hashes the base's key and its own script, so it is rebuilt exactly when either changes
(the base's lock is not held meanwhile: the copy is taken from a finished, immutable base).

Layout under ``cache_dir``::

    <name>-<hash>/rootfs          the root filesystem (read-only lower layer of every sandbox)
    <name>-<hash>/template.json   TemplateRecord: name, hash, built_at, size_bytes, tree_hash
    <name>-<hash>/build.log       the build script's output, line by line (served by hostd)
    <name>-<hash>.lock            serialises builders of this key across processes
    <name>-<hash>.tmp-<pid>/      a build in progress; renamed to <name>-<hash> when complete

Invariant: ``<name>-<hash>/`` only ever appears by an atomic rename of a finished build, so a
template that exists is complete. A ``.tmp-*`` directory is a build that is running (under the
lock) or was interrupted; the next builder of that key removes it.
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import os
import re
import stat
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec

from hosts.errors import RuntimeFailure, TemplateNotFound
from hosts.runtime._mounts import remove_tree

DEFAULT_TEMPLATE = "dnah-base"
DEFAULT_SUITE = "bookworm"
_HASH_LEN = 16
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]*")
_READ_CHUNK = 1 << 20
BUILD_LOG = "build.log"


class Template(msgspec.Struct, frozen=True, kw_only=True):
    """A ready template: ``rootfs`` is complete and must never be written to."""

    name: str
    content_hash: str
    rootfs: Path


class TemplateRecord(msgspec.Struct, frozen=True, kw_only=True):
    """``template.json``: what was built, when, and a digest to check the tree against later."""

    name: str
    hash: str
    built_at: str
    size_bytes: int
    tree_hash: str


class TemplateStore:
    """Builds templates on demand and resolves ready ones. Blocking: call from a thread."""

    def __init__(
        self,
        cache_dir: Path,
        build_script: Path,
        *,
        suite: str = DEFAULT_SUITE,
        mirror: str | None = None,
        recipes_dir: Path | None = None,
    ) -> None:
        self.cache_dir = cache_dir
        self.build_script = build_script
        self.suite = suite
        self.mirror = mirror
        self.recipes_dir = recipes_dir if recipes_dir is not None else build_script.parent / "templates"

    def names(self) -> list[str]:
        """Every template this store has a recipe for: the base, then the layered ones by name."""
        layered = sorted(p.stem for p in self.recipes_dir.glob("*.sh") if _NAME_RE.fullmatch(p.stem))
        return [DEFAULT_TEMPLATE, *(name for name in layered if name != DEFAULT_TEMPLATE)]

    def layer_script(self, name: str) -> Path | None:
        """The script that builds ``name`` on top of the base, or None for a base-recipe name."""
        script = self.recipes_dir / f"{name}.sh"
        return script if name != DEFAULT_TEMPLATE and script.is_file() else None

    def recipe_hash(self, name: str = DEFAULT_TEMPLATE) -> str:
        """The cache key of what the recipe of ``name`` would build now (first 16 hex of a
        sha256): the base script and suite, plus a layered template's own script."""
        digest = hashlib.sha256()
        digest.update(self.build_script.read_bytes())
        digest.update(b"\0suite=" + self.suite.encode())
        layer = self.layer_script(name)
        if layer is None:
            return digest.hexdigest()[:_HASH_LEN]
        digest.update(b"\0layer=" + layer.read_bytes())
        return digest.hexdigest()[:_HASH_LEN]

    def get(self, name: str = DEFAULT_TEMPLATE, *, content_hash: str | None = None) -> Template:
        """The ready template ``name`` for the current recipe, or for ``content_hash`` if given.

        Raises:
            TemplateNotFound: it has not been built (or was removed).
        """
        _check_name(name)
        key_hash = content_hash or self.recipe_hash(name)
        template = Template(name=name, content_hash=key_hash, rootfs=self._final(name, key_hash) / "rootfs")
        if not (template.rootfs.is_dir() and (template.rootfs.parent / "template.json").is_file()):
            raise TemplateNotFound(f"template {name}-{key_hash} is not built in {self.cache_dir}")
        return template

    def record(self, template: Template) -> TemplateRecord:
        """The ``template.json`` written when ``template`` was built."""
        raw = (template.rootfs.parent / "template.json").read_bytes()
        return msgspec.json.decode(raw, type=TemplateRecord)

    def ensure(
        self, name: str = DEFAULT_TEMPLATE, *, progress: Callable[[str], None] | None = None
    ) -> Template:
        """Return the template ``name``, building it first if it is not cached.

        Build output is passed to ``progress`` line by line. Concurrent callers (threads or
        processes) build a key once: the others wait on the key's lock and reuse the result.

        Raises:
            RuntimeFailure: not root, or the build script failed (its last lines are quoted).
        """
        _check_name(name)
        key_hash = self.recipe_hash(name)
        try:
            return self.get(name, content_hash=key_hash)
        except TemplateNotFound:
            pass
        if os.geteuid() != 0:
            raise RuntimeFailure("building a template needs root (debootstrap, chroot)")
        layer = self.layer_script(name)
        base = None if layer is None else self.ensure(DEFAULT_TEMPLATE, progress=progress)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with _locked(self.cache_dir / f"{name}-{key_hash}.lock"):
            try:
                return self.get(name, content_hash=key_hash)
            except TemplateNotFound:
                pass
            for stale in self.cache_dir.glob(f"{name}-{key_hash}.tmp-*"):
                remove_tree(stale)
            self._build(name, key_hash, progress or _ignore, base=base, layer=layer)
        return self.get(name, content_hash=key_hash)

    def _build(
        self,
        name: str,
        key_hash: str,
        progress: Callable[[str], None],
        *,
        base: Template | None,
        layer: Path | None,
    ) -> None:
        staging = self.cache_dir / f"{name}-{key_hash}.tmp-{os.getpid()}"
        try:
            rootfs = staging / "rootfs"
            staging.mkdir(parents=True)
            with open(staging / BUILD_LOG, "w", encoding="utf-8") as kept:

                def show_and_keep(line: str) -> None:
                    kept.write(line + "\n")
                    progress(line)

                if base is None or layer is None:
                    rootfs.mkdir()
                    self._run_script(self.build_script, rootfs, show_and_keep)
                else:
                    show_and_keep(f"copying {base.name}-{base.content_hash} as the base")
                    _copy_tree(base.rootfs, rootfs)
                    self._run_script(layer, rootfs, show_and_keep)
                show_and_keep("hashing the tree")
            size, tree_hash = describe_tree(rootfs)
            record = TemplateRecord(
                name=name,
                hash=key_hash,
                built_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                size_bytes=size,
                tree_hash=tree_hash,
            )
            (staging / "template.json").write_bytes(msgspec.json.format(msgspec.json.encode(record)) + b"\n")
            os.rename(staging, self._final(name, key_hash))
        except BaseException:
            remove_tree(staging)
            raise

    def _run_script(self, script: Path, rootfs: Path, progress: Callable[[str], None]) -> None:
        env = {**os.environ, "DNAH_DEBIAN_SUITE": self.suite}
        if self.mirror:
            env["DNAH_DEBIAN_MIRROR"] = self.mirror
        tail: list[str] = []
        with subprocess.Popen(
            ["bash", str(script), str(rootfs)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env=env,
        ) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                line = line.rstrip("\n")
                tail = [*tail[-9:], line]
                progress(line)
            code = proc.wait()
        if code != 0:
            raise RuntimeFailure(f"template build failed (exit {code}): " + " | ".join(tail))

    def build_log(self, name: str = DEFAULT_TEMPLATE) -> str:
        """The build log of the ready template ``name`` (current recipe): a line saying what
        was built and when, then the build script's output. A template built before logs
        were kept says so instead of the output.

        Raises:
            TemplateNotFound: it has not been built (or was removed).
        """
        template = self.get(name)
        record = self.record(template)
        head = (
            f"# template {record.name}-{record.hash}, built {record.built_at},"
            f" {record.size_bytes} bytes, tree sha256 {record.tree_hash}\n"
        )
        try:
            output = (template.rootfs.parent / BUILD_LOG).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            output = "# its build output was not kept: it was built before templates kept a build log\n"
        return head + output

    def _final(self, name: str, key_hash: str) -> Path:
        return self.cache_dir / f"{name}-{key_hash}"


def describe_tree(root: Path) -> tuple[int, str]:
    """Return ``(size_bytes, tree_hash)`` of the tree at ``root``.

    The size counts each regular file's bytes once per inode. The hash covers, in path order,
    every entry's relative path, type, permission bits, owner and content (file bytes, link
    target or device number), so two trees hash alike exactly when a sandbox could not tell
    them apart.
    """
    tree = hashlib.sha256()
    size = 0
    seen: set[tuple[int, int]] = set()
    for rel, st in _walk(root, ""):
        tree.update(f"{rel}\0{stat.S_IFMT(st.st_mode):o}\0{stat.S_IMODE(st.st_mode):o}\0".encode())
        tree.update(f"{st.st_uid}:{st.st_gid}\0".encode())
        if stat.S_ISREG(st.st_mode):
            tree.update(_file_digest(root / rel))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                size += st.st_size
        elif stat.S_ISLNK(st.st_mode):
            tree.update(os.readlink(root / rel).encode(errors="surrogateescape"))
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            tree.update(f"{os.major(st.st_rdev)},{os.minor(st.st_rdev)}".encode())
        tree.update(b"\n")
    return size, tree.hexdigest()


def _walk(root: Path, rel: str) -> Iterator[tuple[str, os.stat_result]]:
    with os.scandir(root / rel if rel else root) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        path = f"{rel}/{entry.name}" if rel else entry.name
        st = entry.stat(follow_symlinks=False)
        yield path, st
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(root, path)


def _file_digest(path: Path) -> bytes:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_READ_CHUNK):
            digest.update(chunk)
    return digest.digest()


def _copy_tree(source: Path, destination: Path) -> None:
    """Copy ``source`` to the new ``destination`` with owners, modes, links and xattrs kept
    (shared extents where the filesystem can)."""
    proc = subprocess.run(
        ["cp", "-a", "--reflink=auto", "--", str(source), str(destination)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeFailure(f"copying the base template {source}: {proc.stderr.strip()}")


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _check_name(name: str) -> None:
    if not _NAME_RE.fullmatch(name):
        raise TemplateNotFound(f"{name!r} is not a valid template name")


def _ignore(_line: str) -> None:
    return None
