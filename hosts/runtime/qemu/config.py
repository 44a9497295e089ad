"""``QemuConfig``: the QEMU backend's settings, built from hostd's one config object."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from hosts.storage.pool import PoolConfig
from hosts.templates import TemplateStore
from hosts.vm.config import VmConfig, host_nameservers

if TYPE_CHECKING:
    from hosts.config import HostdConfig


@dataclass(frozen=True, kw_only=True)
class QemuConfig(VmConfig):
    """``VmConfig`` with QEMU as the VMM (``DNAH_QEMU_BINARY``)."""

    binary: str = "qemu-system-x86_64"

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
            dns=host_nameservers() if config.egress == "nat" else (),
            boot_timeout=config.vm_boot_timeout_s,
        )
