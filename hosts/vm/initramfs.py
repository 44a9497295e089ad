"""The initramfs: just enough to find the root disk and hand over to ``guest/vminit.py``.

Debian's cloud kernel has ext4 built in but virtio-mmio, virtio-blk, the console, the NIC,
the RNG and vsock as modules, so a VM cannot mount its disk without loading them first. The
initramfs holds a static busybox (with links for the few applets ``/init`` uses), those
modules and their dependencies in ``modules.dep`` order, and ``/init`` (``INIT_SCRIPT``):
mount /proc, /sys, /dev; insmod each module; wait for ``/dev/vda``; mount it read-write at
/newroot; move /dev there; ``switch_root`` to ``python3 -S /opt/dnah/guest/vminit.py``.

The archive is a newc cpio written here (fixed owners, modes and a zero mtime, so the same
inputs give the same bytes), gzip-compressed. Its recipe (``recipe``: the script, the module
list, busybox's digest) is part of the image key.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import stat
from pathlib import Path

from hosts.errors import RuntimeFailure
from hosts.vm import _files

BUSYBOX = Path("/bin/busybox")
"""busybox-static's binary (install/deps.sh installs it); it must not need a dynamic loader."""
MODULES = (
    "virtio_mmio",
    "virtio_console",
    "virtio_blk",
    "virtio_net",
    "virtio-rng",
    "vmw_vsock_virtio_transport",
)
"""The drivers a VM needs; their dependencies (virtio, virtio_ring, vsock, failover…) come along."""
APPLETS = ("sh", "mount", "umount", "insmod", "sleep", "switch_root", "cat", "echo", "poweroff", "mkdir")
VMINIT = "/opt/dnah/guest/vminit.py"

INIT_SCRIPT = f"""#!/bin/sh
# dnah guest initramfs (hosts/vm/initramfs.py): load drivers, mount the disk, start vminit.
fail() {{ echo "dnah-init: $*"; poweroff -f; }}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for module in $(cat /modules/order); do
  insmod "/modules/$module" || echo "dnah-init: insmod $module failed"
done
tries=0
while [ ! -b /dev/vda ]; do
  tries=$((tries + 1))
  [ $tries -gt 1000 ] && fail "no /dev/vda after 10 s"
  sleep 0.01
done
mount -t ext4 -o rw,noatime,discard /dev/vda /newroot || fail "cannot mount /dev/vda"
[ -f /newroot{VMINIT} ] || fail "no {VMINIT} on /dev/vda"
mount --move /dev /newroot/dev
umount /proc /sys
echo "dnah-init: switching to vminit"
exec switch_root /newroot /usr/bin/python3 -S {VMINIT}
"""


def load_order(modules_dir: Path, wanted: tuple[str, ...] = MODULES) -> list[Path]:
    """The ``.ko`` files (relative to ``modules_dir``) of ``wanted`` and everything they need,
    each after its dependencies."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        module, _, needs = line.partition(":")
        deps[module] = needs.split()
        by_name[_module_name(module)] = module
    order: list[str] = []

    def visit(module: str, path: tuple[str, ...]) -> None:
        if module in order:
            return
        if module in path:
            raise RuntimeFailure(f"modules.dep has a cycle through {module}")
        for dep in deps.get(module, []):
            visit(dep, (*path, module))
        order.append(module)

    for name in wanted:
        found = by_name.get(name.replace("-", "_"))
        if found is None:
            raise RuntimeFailure(f"the kernel has no module {name} (built in? renamed?)")
        visit(found, ())
    return [Path(m) for m in order]


def recipe(modules_dir: Path) -> str:
    """A digest of everything that decides the initramfs's bytes."""
    digest = hashlib.sha256()
    digest.update(INIT_SCRIPT.encode())
    digest.update("\0".join(APPLETS).encode())
    digest.update("\0".join(str(m) for m in load_order(modules_dir)).encode())
    digest.update(_files.file_digest(BUSYBOX).encode())
    return digest.hexdigest()


def build(modules_dir: Path, out: Path) -> None:
    """Write the gzip-compressed initramfs for the kernel whose modules are in ``modules_dir``."""
    if not BUSYBOX.is_file():
        raise RuntimeFailure(f"{BUSYBOX} is missing: install busybox-static (install/deps.sh)")
    archive = Cpio()
    for directory in ("bin", "dev", "proc", "sys", "newroot", "modules"):
        archive.directory(directory)
    archive.device("dev/console", 5, 1)
    archive.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
    for applet in APPLETS:
        archive.symlink(f"bin/{applet}", "busybox")
    archive.file("init", INIT_SCRIPT.encode(), 0o755)
    names = []
    for index, module in enumerate(load_order(modules_dir)):
        name = f"{index:02d}-{module.name}"
        archive.file(f"modules/{name}", (modules_dir / module).read_bytes(), 0o644)
        names.append(name)
    archive.file("modules/order", ("\n".join(names) + "\n").encode(), 0o644)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as gz:
        gz.write(archive.finish())
    tmp.rename(out)


class Cpio:
    """A newc ("070701") cpio archive built in memory, as the kernel's initramfs unpacker reads it."""

    def __init__(self) -> None:
        self._out = io.BytesIO()
        self._ino = 0

    def directory(self, name: str, mode: int = 0o755) -> None:
        self._entry(name, stat.S_IFDIR | mode, b"")

    def file(self, name: str, data: bytes, mode: int) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def device(self, name: str, major: int, minor: int) -> None:
        self._entry(name, stat.S_IFCHR | 0o600, b"", rdev=(major, minor))

    def finish(self) -> bytes:
        """The archive with its trailer; the builder is done after this."""
        self._entry("TRAILER!!!", 0, b"", ino=0)
        return self._out.getvalue()

    def _entry(
        self, name: str, mode: int, data: bytes, *, rdev: tuple[int, int] = (0, 0), ino: int | None = None
    ) -> None:
        self._ino += 1
        encoded = name.encode() + b"\0"
        fields = (
            self._ino if ino is None else ino,
            mode,
            0,  # uid
            0,  # gid
            2 if stat.S_ISDIR(mode) else 1,  # nlink
            0,  # mtime
            len(data),
            0,  # devmajor
            0,  # devminor
            rdev[0],
            rdev[1],
            len(encoded),
            0,  # check
        )
        self._out.write(b"070701" + b"".join(b"%08X" % value for value in fields))
        self._out.write(encoded)
        self._pad()
        self._out.write(data)
        self._pad()

    def _pad(self) -> None:
        self._out.write(b"\0" * (-self._out.tell() % 4))


def _module_name(path: str) -> str:
    """``kernel/drivers/char/hw_random/virtio-rng.ko`` → ``virtio_rng`` (as the kernel names it)."""
    name = path.rsplit("/", 1)[-1]
    for suffix in (".ko", ".ko.xz", ".ko.zst", ".ko.gz"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name.replace("-", "_")
