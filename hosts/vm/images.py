"""Guest images: what a microVM boots, built once per template, kernel and agent, and cached.

A ``VmImage`` is a kernel (the bzImage for QEMU and the PVH ``vmlinux`` for Cloud
Hypervisor, one kernel for both), an initramfs and a raw ext4 root disk made from a template
with the agent inside (``kernel``, ``initramfs``, ``rootfs``; docs/runtimes.md, "Guest
image"). Its key digests everything that decides its bytes: the kernel package and version,
the initramfs recipe, the template's content hash, the agent's sources and
``BUILDER_VERSION``. A change to any of them yields a new image next to the old one; an
image never changes once it exists, so backends may share its files read-only (the rootfs
is only ever copied).

Layout under ``cache_dir``::

    kernels/…                     unpacked kernel packages (hosts/vm/kernel.py)
    <template>-<key>/initrd.img   the initramfs
    <template>-<key>/rootfs.img   the root disk (never written; backends copy it)
    <template>-<key>/image.json   ImageRecord: the key's inputs, sizes, build time
    <template>-<key>.lock         serialises builders of this key across processes
    <template>-<key>.tmp-<pid>/   a build in progress; renamed into place when complete

As in hosts/templates.py, a final directory only appears by an atomic rename of a finished
build; a ``.tmp-*`` left by an interrupted one is removed by the next builder of that key.

Every change to guest/ makes a new key, and each image is ~435 MiB, so a successful build
prunes (``prune``, under ``prune.lock``): of each template only the newest ``keep`` images
stay, plus any a live process names or holds open (a VMM booting from it). Nothing else needs
an old image: a backend imports the rootfs into its storage pool (its own copy) and boots
every VM from the image current at that moment. An image goes by a rename to
``<key>.tmp-pruned`` (so it vanishes whole) while its key's lock is held, never waited for: a
key being built or loaded is skipped, as is a ``.tmp-*`` whose builder still holds its lock.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from hosts.errors import RuntimeFailure
from hosts.runtime._mounts import remove_tree
from hosts.templates import Template
from hosts.vm import _files, initramfs, kernel, rootfs

BUILDER_VERSION = "1"
"""Bumped whenever this package builds differently from the same inputs."""
DEFAULT_CACHE = Path("/var/cache/dnah/vm")
RESOLVE_TTL_S = 900.0
KEEP_PER_TEMPLATE = 2
"""Images of one template a build leaves: the new one and the one before it, which a hostd
that resolved its key a moment earlier may still be about to boot."""
_PRUNE_LOCK = "prune.lock"
_KEY_LEN = 16


class VmImage(msgspec.Struct, frozen=True, kw_only=True):
    """A ready guest image; every file is read-only."""

    key: str
    kernel: Path
    """The bzImage (QEMU ``-kernel``)."""
    vmlinux: Path
    """The uncompressed PVH-bootable ELF (Cloud Hypervisor ``--kernel``)."""
    initrd: Path
    rootfs: Path
    """A raw ext4 image: copy it, never write it."""
    kernel_version: str
    """The kernel release (``uname -r`` in the guest)."""


class _Entry(msgspec.Struct, frozen=True):
    """What pruning reads of an ``image.json`` (whatever builder version wrote it)."""

    template: str
    built_at: str


class ImageRecord(msgspec.Struct, frozen=True, kw_only=True):
    """``image.json``: the inputs of the key and what the build produced."""

    key: str
    template: str
    template_hash: str
    kernel_package: str
    kernel_version: str
    kernel_release: str
    initramfs_recipe: str
    guest_digest: str
    builder_version: str
    built_at: str
    build_seconds: float
    rootfs_bytes: int
    initrd_bytes: int


class VmImageStore:
    """Builds guest images on demand and resolves ready ones. Blocking: call from a thread."""

    def __init__(
        self,
        cache_dir: Path,
        guest_dir: Path,
        *,
        metapackage: str = kernel.METAPACKAGE,
        keep: int = KEEP_PER_TEMPLATE,
    ) -> None:
        self.cache_dir = cache_dir
        self.guest_dir = guest_dir
        self.metapackage = metapackage
        self.keep = keep
        self._resolved: tuple[float, tuple[str, str]] | None = None
        self._resolve_lock = threading.Lock()

    def ensure(self, template: Template, progress: Callable[[str], None] | None = None) -> VmImage:
        """The image of ``template`` for the current kernel and agent, built first if missing.

        Concurrent callers (threads or processes) build a key once; the others wait on the
        key's lock and reuse the result. Build steps are reported to ``progress``; a build
        is followed by ``prune``.

        Raises:
            RuntimeFailure: not root, or a step failed (download, mkfs, mount…).
        """
        say = progress or _ignore
        package, version = self._kernel_package()
        found = self._find(template, package, version)
        if found is not None:
            return found
        if os.geteuid() != 0:
            raise RuntimeFailure("building a guest image needs root (loop mount of the root disk)")
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        kern = kernel.ensure(self.cache_dir, package, version, say)
        key = self.key(template, kern)
        with _files.locked(self.cache_dir / f"{key}.lock"):
            found = self._load(key, kern)
            if found is not None:
                return found
            for stale in self.cache_dir.glob(f"{key}.tmp-*"):
                remove_tree(stale)
            self._build(key, template, kern, say)
        image = self._load(key, kern)
        assert image is not None
        self.prune(say)
        return image

    def prune(self, progress: Callable[[str], None] | None = None) -> list[str]:
        """Remove the images beyond the newest ``keep`` of each template that no live process
        names or holds open, and the leftovers of interrupted builds; returns the keys removed.
        An entry whose key lock another holds (a build, a load) is left for a later prune."""
        say = progress or _ignore
        removed: list[str] = []
        with _files.locked(self.cache_dir / _PRUNE_LOCK):
            in_use = _files.paths_in_use(self.cache_dir)
            for images in self._images_by_template().values():
                for final in images[self.keep :]:
                    if final not in in_use and self._remove(final.name, final):
                        removed.append(final.name)
            for leftover in self.cache_dir.glob("*.tmp-*"):
                self._remove(leftover.name.partition(".tmp-")[0], leftover)
        if removed:
            say(f"pruned {len(removed)} old image(s): {', '.join(removed)}")
        return removed

    def _images_by_template(self) -> dict[str, list[Path]]:
        """Each template's image directories, newest first (by build time, then by when the
        record was written). Entries whose record cannot be read are left out (and alone)."""
        found: dict[str, list[tuple[str, int, Path]]] = {}
        for record_file in self.cache_dir.glob("*/image.json"):
            if ".tmp-" in record_file.parent.name:  # a build about to be renamed into place
                continue
            try:
                entry = msgspec.json.decode(record_file.read_bytes(), type=_Entry)
                written = record_file.stat().st_mtime_ns
            except (OSError, msgspec.DecodeError):
                continue
            found.setdefault(entry.template, []).append((entry.built_at, written, record_file.parent))
        return {t: [path for *_, path in sorted(e, reverse=True)] for t, e in found.items()}

    def _remove(self, key: str, path: Path) -> bool:
        """Remove ``path`` (an image or a leftover of ``key``) unless the key's lock is held.
        The lock file goes too once the key has no image (removed while held: see
        ``_files.locked``)."""
        lock = self.cache_dir / f"{key}.lock"
        with _files.try_locked(lock) as held:
            if not held or not path.exists():
                return False
            doomed = path
            if path.name == key:  # an image: out of sight at once, then deleted
                doomed = self.cache_dir / f"{key}.tmp-pruned"
                remove_tree(doomed)
                os.rename(path, doomed)
            remove_tree(doomed)
            if not (self.cache_dir / key).exists():
                lock.unlink()
        return True

    def _kernel_package(self) -> tuple[str, str]:
        """The kernel package and version to use, asked of apt (about a second) at most once
        every ``RESOLVE_TTL_S``: a boot should not wait for apt, and an update may wait that long."""
        with self._resolve_lock:
            now = time.monotonic()
            if self._resolved is None or now - self._resolved[0] > RESOLVE_TTL_S:
                self._resolved = (now, kernel.resolve(self.metapackage))
            return self._resolved[1]

    def key(self, template: Template, kern: kernel.Kernel) -> str:
        """``<template>-<16 hex>`` for ``template`` booted with ``kern`` and the current agent."""
        digest = hashlib.sha256()
        for part in (
            f"builder={BUILDER_VERSION}",
            f"kernel={kern.package}={kern.version}",
            f"initramfs={initramfs.recipe(kern.modules)}",
            f"template={template.name}-{template.content_hash}",
            f"guest={_files.guest_digest(self.guest_dir)}",
        ):
            digest.update(part.encode() + b"\n")
        return f"{template.name}-{digest.hexdigest()[:_KEY_LEN]}"

    def record(self, image: VmImage) -> ImageRecord:
        return msgspec.json.decode((image.rootfs.parent / "image.json").read_bytes(), type=ImageRecord)

    def _find(self, template: Template, package: str, version: str) -> VmImage | None:
        """The ready image for this kernel, if both the kernel and the image are cached."""
        kern = kernel.Kernel(package, version, self.cache_dir / "kernels" / f"{package}_{version}")
        if not kern.vmlinux.is_file():
            return None
        return self._load(self.key(template, kern), kern)

    def _load(self, key: str, kern: kernel.Kernel) -> VmImage | None:
        final = self.cache_dir / key
        if not (final / "image.json").is_file():
            return None
        return VmImage(
            key=key,
            kernel=kern.bzimage,
            vmlinux=kern.vmlinux,
            initrd=final / "initrd.img",
            rootfs=final / "rootfs.img",
            kernel_version=kern.release,
        )

    def _build(self, key: str, template: Template, kern: kernel.Kernel, say: Callable[[str], None]) -> None:
        started = time.monotonic()
        staging = self.cache_dir / f"{key}.tmp-{os.getpid()}"
        try:
            staging.mkdir()
            say("initramfs: busybox + virtio modules + /init")
            initramfs.build(kern.modules, staging / "initrd.img")
            say(f"rootfs: mkfs.ext4 -d {template.rootfs} (+ the agent)")
            rootfs.build(template.rootfs, self.guest_dir, staging / "rootfs.img", staging)
            for name in ("initrd.img", "rootfs.img"):
                (staging / name).chmod(0o444)
            record = ImageRecord(
                key=key,
                template=template.name,
                template_hash=template.content_hash,
                kernel_package=kern.package,
                kernel_version=kern.version,
                kernel_release=kern.release,
                initramfs_recipe=initramfs.recipe(kern.modules),
                guest_digest=_files.guest_digest(self.guest_dir),
                builder_version=BUILDER_VERSION,
                built_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                build_seconds=round(time.monotonic() - started, 1),
                rootfs_bytes=(staging / "rootfs.img").stat().st_size,
                initrd_bytes=(staging / "initrd.img").stat().st_size,
            )
            (staging / "image.json").write_bytes(msgspec.json.format(msgspec.json.encode(record)) + b"\n")
            os.rename(staging, self.cache_dir / key)
        except BaseException:
            remove_tree(staging)
            raise
        say(f"image {key} built in {time.monotonic() - started:.1f} s")


def _ignore(_line: str) -> None:
    return None
