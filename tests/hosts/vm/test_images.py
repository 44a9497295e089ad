"""The guest image: built once per key and cached; its kernel, initramfs and root disk are what a VM needs."""

from __future__ import annotations

import concurrent.futures
import gzip
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hosts.config import GUEST_DIR
from hosts.templates import Template
from hosts.vm import _files, initramfs, kernel
from hosts.vm.images import VmImage, VmImageStore
from hosts.vm.vmlinux import has_pvh_note
from tests.hosts.vm._boot import vm_image, vm_store, vm_template

__all__ = ["vm_image", "vm_store", "vm_template"]  # fixtures

pytestmark = pytest.mark.vm


def test_second_ensure_is_a_cache_hit(
    vm_store: VmImageStore, vm_template: Template, vm_image: VmImage
) -> None:
    before = {p: p.stat().st_mtime_ns for p in (vm_image.initrd, vm_image.rootfs, vm_image.vmlinux)}
    lines: list[str] = []
    again = vm_store.ensure(vm_template, progress=lines.append)
    assert again == vm_image
    assert lines == []
    assert {p: p.stat().st_mtime_ns for p in before} == before
    record = vm_store.record(again)
    assert (record.key, record.template_hash) == (vm_image.key, vm_template.content_hash)


def test_the_key_follows_the_agent_sources(
    vm_store: VmImageStore, vm_template: Template, vm_image: VmImage, tmp_path: Path
) -> None:
    kern = _kernel_of(vm_store, vm_image)
    copy = tmp_path / "guest"
    shutil.copytree(GUEST_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert VmImageStore(vm_store.cache_dir, copy).key(vm_template, kern) == vm_image.key
    (copy / "agent.py").write_text((copy / "agent.py").read_text() + "\n# changed\n")
    changed = VmImageStore(vm_store.cache_dir, copy).key(vm_template, kern)
    assert changed != vm_image.key
    assert changed.startswith(f"{vm_template.name}-")


def test_the_key_follows_the_template(
    vm_store: VmImageStore, vm_template: Template, vm_image: VmImage
) -> None:
    other = Template(name=vm_template.name, content_hash="0" * 16, rootfs=vm_template.rootfs)
    assert vm_store.key(other, _kernel_of(vm_store, vm_image)) != vm_image.key


def test_vmlinux_is_a_pvh_elf(vm_image: VmImage) -> None:
    elf = vm_image.vmlinux.read_bytes()
    assert elf[:4] == b"\x7fELF"
    assert has_pvh_note(elf)
    assert not has_pvh_note(vm_image.kernel.read_bytes())  # the bzImage is not an ELF at all


def test_initramfs_loads_modules_after_their_dependencies(vm_store: VmImageStore, vm_image: VmImage) -> None:
    entries = _cpio(gzip.decompress(vm_image.initrd.read_bytes()))
    assert entries["init"].startswith(b"#!/bin/sh")
    assert entries["bin/busybox"] == initramfs.BUSYBOX.read_bytes()
    order = entries["modules/order"].decode().split()
    names = [name.split("-", 1)[1].removesuffix(".ko").replace("-", "_") for name in order]
    for wanted in initramfs.MODULES:
        assert wanted.replace("-", "_") in names
    modules = _kernel_of(vm_store, vm_image).modules
    deps = {
        Path(line.partition(":")[0]).name.removesuffix(".ko").replace("-", "_"): [
            Path(d).name.removesuffix(".ko").replace("-", "_") for d in line.partition(":")[2].split()
        ]
        for line in (modules / "modules.dep").read_text().splitlines()
    }
    for index, name in enumerate(names):
        assert set(deps[name]) <= set(names[:index]), f"{name} before one of {deps[name]}"
    for name in order:
        assert f"modules/{name}" in entries


def test_rootfs_keeps_owners_and_holds_the_agent(vm_image: VmImage) -> None:
    home = _debugfs(vm_image.rootfs, "stat /home/daytona")
    assert "User:  1000   Group:  1000" in home
    agent = _debugfs(vm_image.rootfs, "stat /opt/dnah/guest/agent.py")
    assert "User:     0   Group:     0" in agent
    assert "Mode:  0644" in agent
    listing = _debugfs(vm_image.rootfs, "ls /opt/dnah/guest/__pycache__")
    assert "vminit.cpython-311.pyc" in listing
    assert "channel.cpython-311.pyc" in listing
    fsck = subprocess.run(["e2fsck", "-f", "-n", str(vm_image.rootfs)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout


def _kernel_of(store: VmImageStore, image: VmImage) -> kernel.Kernel:
    record = store.record(image)
    return kernel.Kernel(record.kernel_package, record.kernel_version, image.kernel.parent)


def _debugfs(image: Path, request: str) -> str:
    done = subprocess.run(["debugfs", "-R", request, str(image)], capture_output=True, text=True, check=True)
    return done.stdout


def _cpio(data: bytes) -> dict[str, bytes]:
    """name → content of every entry of a newc archive (a reader independent of ours)."""
    entries: dict[str, bytes] = {}
    pos = 0
    while True:
        assert data[pos : pos + 6] == b"070701"
        fields = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        size, namesize = fields[6], fields[11]
        name = data[pos + 110 : pos + 110 + namesize - 1].decode()
        pos += 110 + namesize
        pos += -pos % 4
        if name == "TRAILER!!!":
            return entries
        entries[name] = data[pos : pos + size]
        pos += size
        pos += -pos % 4


def _tiny_template(root: Path) -> Template:
    """A template tree of a few files: enough for the builder, built in well under a second."""
    tree = root / "rootfs"
    (tree / "opt" / "dnah").mkdir(parents=True)
    (tree / "home" / "daytona").mkdir(parents=True)
    os.chown(tree / "home" / "daytona", 1000, 1000)
    (tree / "etc").mkdir()
    (tree / "etc" / "hostname").write_text("tiny\n")
    return Template(name="tiny", content_hash="1" * 16, rootfs=tree)


def _store_sharing_kernels(vm_store: VmImageStore, vm_image: VmImage, cache: Path) -> VmImageStore:
    """A store in ``cache`` that finds the shared cache's unpacked kernel (no download)."""
    cache.mkdir()
    (cache / "kernels").symlink_to(vm_image.kernel.parent.parent)
    return VmImageStore(cache, vm_store.guest_dir)


def test_concurrent_builders_of_one_key_build_once(
    vm_store: VmImageStore, vm_image: VmImage, tmp_path: Path
) -> None:
    store = _store_sharing_kernels(vm_store, vm_image, tmp_path / "cache")
    template = _tiny_template(tmp_path)
    lines: list[list[str]] = [[], [], []]
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        images = list(pool.map(lambda i: store.ensure(template, progress=lines[i].append), range(3)))
    assert images[0] == images[1] == images[2]
    assert sorted(bool(seen) for seen in lines) == [False, False, True]  # one builder spoke
    assert "User:  1000   Group:  1000" in _debugfs(images[0].rootfs, "stat /home/daytona")
    assert [p.name for p in (tmp_path / "cache").iterdir() if ".tmp-" in p.name] == []


def test_an_interrupted_build_is_cleared_by_the_next(
    vm_store: VmImageStore, vm_image: VmImage, tmp_path: Path
) -> None:
    store = _store_sharing_kernels(vm_store, vm_image, tmp_path / "cache")
    template = _tiny_template(tmp_path)
    kern = _kernel_of(vm_store, vm_image)
    leftover = tmp_path / "cache" / f"{store.key(template, kern)}.tmp-999999"
    (leftover / "half").mkdir(parents=True)
    image = store.ensure(template)
    assert not leftover.exists()
    assert image.rootfs.is_file()
    assert image.rootfs.stat().st_mode & 0o777 == 0o444


def _guest_variant(root: Path, n: int) -> Path:
    """A copy of guest/ whose agent differs by a comment: another image key, as any change to
    guest/ makes one."""
    copy = root / f"guest-{n}"
    shutil.copytree(GUEST_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "agent.py").write_text((copy / "agent.py").read_text() + f"\n# variant {n}\n")
    return copy


def _images(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if (p / "image.json").is_file())


def test_a_build_keeps_the_newest_two_images_of_its_template(
    vm_store: VmImageStore, vm_image: VmImage, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    _store_sharing_kernels(vm_store, vm_image, cache)
    tiny = _tiny_template(tmp_path)
    other = Template(name="other", content_hash="2" * 16, rootfs=tiny.rootfs)
    oldest_other = VmImageStore(cache, _guest_variant(tmp_path, 0)).ensure(other)
    built = [VmImageStore(cache, _guest_variant(tmp_path, n)).ensure(tiny) for n in (1, 2)]
    assert _images(cache) == sorted([oldest_other.key, built[0].key, built[1].key])
    # a leftover of an interrupted build, and a build in progress (its builder holds the lock)
    leftover = cache / "tiny-0000000000000000.tmp-999999"
    (leftover / "half").mkdir(parents=True)
    building = cache / "tiny-1111111111111111.tmp-999998"
    building.mkdir()
    with _files.locked(cache / "tiny-1111111111111111.lock"):
        lines: list[str] = []
        third = VmImageStore(cache, _guest_variant(tmp_path, 3)).ensure(tiny, progress=lines.append)
        assert building.is_dir()
    # the oldest tiny image went, with its lock file; the other template's only image stayed
    assert _images(cache) == sorted([oldest_other.key, built[1].key, third.key])
    assert not (cache / f"{built[0].key}.lock").exists()
    assert not leftover.exists()
    assert f"pruned 1 old image(s): {built[0].key}" in lines
    # its files are gone; the kept images are whole
    assert not built[0].rootfs.exists()
    for image in (built[1], third, oldest_other):
        assert image.rootfs.is_file() and image.initrd.is_file()


def test_an_image_a_process_holds_is_kept_until_it_lets_go(
    vm_store: VmImageStore, vm_image: VmImage, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    _store_sharing_kernels(vm_store, vm_image, cache)
    tiny = _tiny_template(tmp_path)
    first = VmImageStore(cache, _guest_variant(tmp_path, 1)).ensure(tiny)
    with first.initrd.open("rb") as initrd:  # a VMM reading it at boot, in its own process
        holder = subprocess.Popen(["sleep", "600"], stdin=initrd)
    try:
        for n in (2, 3):
            VmImageStore(cache, _guest_variant(tmp_path, n)).ensure(tiny)
        assert first.key in _images(cache)
    finally:
        holder.kill()
        holder.wait()
    latest = VmImageStore(cache, _guest_variant(tmp_path, 4)).ensure(tiny)
    assert first.key not in _images(cache)
    assert latest.key in _images(cache) and len(_images(cache)) == 2
