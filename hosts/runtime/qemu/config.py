"""``QemuConfig``: everything the QEMU backend needs, built from hostd's one config object."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from hosts.storage.pool import PoolConfig
from hosts.templates import TemplateStore

if TYPE_CHECKING:
    from hosts.config import HostdConfig

_PATH_UNSAFE = re.compile(r"[,:\\\s]")
"""Characters that QEMU's option syntax would split a path at."""


@dataclass(frozen=True, kw_only=True)
class QemuConfig:
    """Host-global names (bridge, nft table, netns prefix, cgroup parent) derive from ``bridge``
    and ``cgroup_parent`` as in ``OciConfig``, so instances with different values run side by
    side (``make up`` and the test suite)."""

    state_dir: Path
    """Sandboxes live in ``state_dir/sandboxes/<id>/``."""
    templates: TemplateStore
    pool: PoolConfig
    image_cache: Path
    """Where guest images (kernel, initramfs, rootfs) are built (``hosts.vm.images``)."""
    guest_dir: Path
    """The agent's package (the repo's ``guest/``), copied into every guest image."""
    binary: str = "qemu-system-x86_64"
    accel: str = "tcg"
    """``kvm`` or ``tcg`` (resolved by hostd's config from ``DNAH_VM_ACCEL``)."""
    bridge: str = "dnah0"
    subnet: ipaddress.IPv4Network = field(default_factory=lambda: ipaddress.IPv4Network("10.213.0.0/16"))
    cgroup_parent: str = "dnah"
    egress: bool = True
    dns: tuple[str, ...] = ()
    """Name servers the guests use (none: no /etc/resolv.conf entries)."""
    boot_timeout: float = 60.0
    """Seconds from QEMU's start to the agent's first pong (TCG boots take 2-4 s of a CPU)."""
    stop_timeout: float = 20.0
    """Seconds a clean guest poweroff may take before QEMU is killed."""
    vmm_overhead_mb: int = 256
    """Memory the cgroup allows QEMU beyond the guest's RAM (device emulation, TCG's
    translation cache of 64 MiB, the migration helper while snapshotting)."""
    pids_max: int = 256
    """Threads and processes of one QEMU (vCPUs, its I/O thread pool, ``cat`` for migration)."""

    def __post_init__(self) -> None:
        for path in (self.state_dir, self.image_cache, self.guest_dir):
            if not path.is_absolute() or _PATH_UNSAFE.search(str(path)):
                raise ValueError(f"{path} must be absolute, without commas, colons or spaces")
        if self.accel not in ("kvm", "tcg"):
            raise ValueError(f"accel must be kvm or tcg, not {self.accel!r}")

    @classmethod
    def from_hostd(cls, config: HostdConfig, templates: TemplateStore) -> QemuConfig:
        return cls(
            state_dir=config.state_dir,
            templates=templates,
            pool=PoolConfig.from_hostd(config),
            image_cache=config.vm_image_cache,
            guest_dir=config.guest_dir,
            binary=config.qemu_binary,
            accel=config.vm_accel,
            bridge=config.bridge,
            subnet=config.subnet,
            cgroup_parent=config.cgroup,
            egress=config.egress == "nat",
            dns=_host_nameservers() if config.egress == "nat" else (),
            boot_timeout=config.vm_boot_timeout_s,
        )


def _host_nameservers(resolv_conf: Path = Path("/etc/resolv.conf")) -> tuple[str, ...]:
    """The host's IPv4 name servers a guest can reach (not loopback ones, which are the host's)."""
    try:
        lines = resolv_conf.read_text().splitlines()
    except OSError:
        return ()
    found = []
    for line in lines:
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            try:
                address = ipaddress.IPv4Address(words[1])
            except ValueError:
                continue
            if not address.is_loopback:
                found.append(str(address))
    return tuple(found)
