"""``VmConfig``: the settings every VM backend shares, built from hostd's one config object.

Host-global names (bridge, nft table, netns prefix, cgroup parent) derive from ``bridge`` and
``cgroup_parent`` as in ``OciConfig``, so instances with different values run side by side
(``make up`` and the test suite). Each backend's config (``QemuConfig``,
``CloudHypervisorConfig``) adds its VMM's binary and its own settings.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

from hosts.storage.pool import PoolConfig
from hosts.templates import TemplateStore

_PATH_UNSAFE = re.compile(r"[,:\\\s]")
"""Characters that a VMM's option syntax would split a path at."""


@dataclass(frozen=True, kw_only=True)
class VmConfig:
    state_dir: Path
    """Sandboxes live in ``state_dir/sandboxes/<id>/``."""
    templates: TemplateStore
    pool: PoolConfig
    image_cache: Path
    """Where guest images (kernel, initramfs, rootfs) are built (``hosts.vm.images``)."""
    guest_dir: Path
    """The agent's package (the repo's ``guest/``), copied into every guest image."""
    binary: str
    """The VMM: a name on PATH or a path."""
    accel: str = "tcg"
    """``kvm`` or ``tcg`` (resolved by hostd's config from ``DNAH_VM_ACCEL``)."""
    bridge: str = "dnah0"
    subnet: ipaddress.IPv4Network = field(default_factory=lambda: ipaddress.IPv4Network("10.213.0.0/16"))
    cgroup_parent: str = "dnah"
    egress: bool = True
    dns: tuple[str, ...] = ()
    """Name servers the guests use (none: no /etc/resolv.conf entries); with egress, hostd's
    resolver on the bridge's gateway address (``hosts/egress``)."""
    boot_timeout: float = 60.0
    """Seconds from the VMM's start to the agent's first pong (TCG boots take 2-4 s of a CPU)."""
    stop_timeout: float = 20.0
    """Seconds a clean guest poweroff may take before the VMM is killed."""
    vmm_overhead_mb: int = 256
    """Memory the cgroup allows the VMM beyond the guest's RAM (device emulation, TCG's
    translation cache of 64 MiB, the migration helper while snapshotting)."""
    pids_max: int = 256
    """Threads and processes of one VMM (vCPUs, its I/O threads, ``cat`` for migration)."""

    def __post_init__(self) -> None:
        for path in (self.state_dir, self.image_cache, self.guest_dir):
            if not path.is_absolute() or _PATH_UNSAFE.search(str(path)):
                raise ValueError(f"{path} must be absolute, without commas, colons or spaces")
        if self.accel not in ("kvm", "tcg"):
            raise ValueError(f"accel must be kvm or tcg, not {self.accel!r}")
