"""The guest kernel: Debian's cloud kernel package, fetched once and unpacked into the cache.

Debian's ``linux-image-cloud-amd64`` is built for VMs (virtio, PVH, ``KVM_GUEST``) and comes
from the same archive as the templates, so nothing is built here. The metapackage names the
current kernel package (``linux-image-<abi>-cloud-amd64``), whose version is part of every
guest image's key: a kernel update in the archive yields new images, never a changed one.

Layout under ``<cache>/kernels/``::

    <package>_<version>/vmlinuz          the bzImage (QEMU boots it)
    <package>_<version>/vmlinux          the PVH ELF extracted from it (Cloud Hypervisor)
    <package>_<version>/modules/<abi>/   lib/modules of the package, with modules.dep (depmod)
    <package>_<version>.lock, .tmp-<pid> as in hosts/templates.py

The package ships no ``modules.dep``; ``depmod -b`` writes it, and the initramfs takes its
load order from it.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hosts.errors import RuntimeFailure
from hosts.runtime._mounts import remove_tree
from hosts.vm import _files
from hosts.vm.vmlinux import extract_vmlinux

METAPACKAGE = "linux-image-cloud-amd64"
_PACKAGE_RE = re.compile(r"linux-image-[0-9][A-Za-z0-9.+-]*")
_DEPENDS_RE = re.compile(r"(linux-image-[0-9][A-Za-z0-9.+-]*) \(= ([A-Za-z0-9.+:~-]+)\)")


@dataclass(frozen=True)
class Kernel:
    """An unpacked kernel package; everything in ``root`` is read-only once it exists."""

    package: str
    version: str
    root: Path

    @property
    def release(self) -> str:
        """The kernel release (``uname -r``), e.g. ``6.1.0-57-cloud-amd64``."""
        return self.package.removeprefix("linux-image-")

    @property
    def bzimage(self) -> Path:
        return self.root / "vmlinuz"

    @property
    def vmlinux(self) -> Path:
        return self.root / "vmlinux"

    @property
    def modules(self) -> Path:
        """``lib/modules/<release>`` of the package (``modules.dep`` included)."""
        return self.root / "modules" / self.release


def resolve(metapackage: str = METAPACKAGE) -> tuple[str, str]:
    """``(package, version)`` of the kernel the metapackage currently depends on.

    Reads apt's package lists; when there are none (a fresh machine), runs ``apt-get update``
    once and asks again.
    """
    try:
        return _resolve(metapackage)
    except RuntimeFailure:
        _apt_update()
        return _resolve(metapackage)


def ensure(cache_dir: Path, package: str, version: str, progress: Callable[[str], None]) -> Kernel:
    """The unpacked ``package`` at ``version``, downloading and unpacking it first if needed."""
    if not _PACKAGE_RE.fullmatch(package) or "/" in version:
        raise RuntimeFailure(f"not a kernel package: {package} {version}")
    kernels = cache_dir / "kernels"
    kernel = Kernel(package, version, kernels / f"{package}_{version}")
    if kernel.vmlinux.is_file():
        return kernel
    kernels.mkdir(parents=True, exist_ok=True)
    with _files.locked(kernels / f"{package}_{version}.lock"):
        if kernel.vmlinux.is_file():
            return kernel
        for stale in kernels.glob(f"{package}_{version}.tmp-*"):
            remove_tree(stale)
        staging = kernels / f"{package}_{version}.tmp-{os.getpid()}"
        try:
            _unpack(staging, Kernel(package, version, staging), progress)
            os.rename(staging, kernel.root)
        except BaseException:
            remove_tree(staging)
            raise
    return kernel


def _unpack(staging: Path, kernel: Kernel, progress: Callable[[str], None]) -> None:
    staging.mkdir(parents=True)
    download = staging / "download"
    download.mkdir()
    progress(f"kernel: downloading {kernel.package} {kernel.version}")
    deb = _download(kernel.package, kernel.version, download)
    progress(f"kernel: unpacking {deb.name}")
    tree = staging / "tree"
    _run("dpkg-deb", "-x", str(deb), str(tree))
    os.rename(tree / "boot" / f"vmlinuz-{kernel.release}", kernel.bzimage)
    (staging / "modules").mkdir()
    os.rename(tree / "lib" / "modules" / kernel.release, kernel.modules)
    progress("kernel: depmod")
    # depmod -b BASE looks in BASE/lib/modules/<release>: give it that shape with a symlink.
    base = staging / "depmod"
    (base / "lib").mkdir(parents=True)
    (base / "lib" / "modules").symlink_to(staging / "modules")
    _run("depmod", "-b", str(base), kernel.release)
    progress("kernel: extracting the PVH vmlinux from the bzImage")
    extract_vmlinux(kernel.bzimage, kernel.vmlinux)
    for scratch in (download, tree, base):
        remove_tree(scratch)


def _download(package: str, version: str, directory: Path) -> Path:
    spec = f"{package}={version}"
    done = _apt_download(spec, directory)
    if done.returncode != 0 and ("Unable to locate" in done.stderr or "Can't find a source" in done.stderr):
        _apt_update()
        done = _apt_download(spec, directory)
    if done.returncode != 0:
        raise RuntimeFailure(f"apt-get download {spec} failed: {done.stderr.strip()[-400:]}")
    debs = sorted(directory.glob("*.deb"))
    if len(debs) != 1:
        raise RuntimeFailure(f"apt-get download {spec} left {len(debs)} packages")
    return debs[0]


def _apt_download(spec: str, directory: Path) -> subprocess.CompletedProcess[str]:
    # As root, apt drops to _apt for the download and warns that it cannot write here;
    # downloading unsandboxed is what we want in a root-only cache.
    return subprocess.run(
        ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", spec],
        cwd=directory,
        capture_output=True,
        text=True,
        check=False,
    )


def _resolve(metapackage: str) -> tuple[str, str]:
    """From the metapackage's exact dependency (``linux-image-X (= V)``): one apt-cache call."""
    depends = _apt_show(metapackage).get("Depends", "")
    match = _DEPENDS_RE.search(depends)
    if match is None:
        raise RuntimeFailure(f"{metapackage} depends on no exact kernel package version: {depends!r}")
    return match.group(1), match.group(2)


def _apt_show(package: str) -> dict[str, str]:
    done = subprocess.run(
        ["apt-cache", "show", "--no-all-versions", package], capture_output=True, text=True, check=False
    )
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeFailure(f"apt-cache show {package}: {done.stderr.strip()[-300:] or 'not found'}")
    fields: dict[str, str] = {}
    for line in done.stdout.splitlines():
        name, sep, value = line.partition(": ")
        if sep and not line.startswith(" "):
            fields.setdefault(name, value.strip())
    return fields


def _apt_update() -> None:
    _run("apt-get", "update", "-q")


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeFailure(f"{argv[0]} failed (exit {done.returncode}): {done.stderr.strip()[-400:]}")
