"""``CloudHypervisorConfig``: the Cloud Hypervisor backend's settings, built from hostd's config.

The host side of a Cloud Hypervisor VM is every VM backend's (``VmConfig``: network namespace
with a bridge and ``tap0``, reflinked disk in the pool, cgroup, guest image cache, boot and
stop deadlines); this adds what only this VMM has: the ceilings ``vm.resize`` may grow a
running VM to, how guest RAM is backed, and how long one API request may take.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hosts.storage.pool import PoolConfig
from hosts.templates import TemplateStore
from hosts.vm.config import VmConfig

if TYPE_CHECKING:
    from hosts.config import HostdConfig


@dataclass(frozen=True, kw_only=True)
class CloudHypervisorConfig(VmConfig):
    binary: str = "cloud-hypervisor"
    """The VMM (``DNAH_CLOUD_HYPERVISOR_BINARY``): a name on PATH or a path. The tests point it
    at the API stand-in (``tests/hosts/runtime/cloud_hypervisor/cloud-hypervisor``)."""
    accel: str = "kvm"
    """Cloud Hypervisor runs on KVM only (the stand-in decides for itself)."""
    max_vcpus: int = 0
    """The most vCPUs ``vm.resize`` may give a running VM (``max_vcpus`` at create); 0: the
    host's CPU count."""
    memory_hotplug_mb: int = 16384
    """Address space reserved at create for memory ``vm.resize`` may add (ACPI hotplug; costs
    nothing until plugged). A multiple of 128 MiB."""
    shared_memory: bool = False
    """Back guest RAM with a shared mapping (``memory.shared``): needed for vhost-user devices
    and local live migration, not for file snapshots."""
    hugepages: bool = False
    api_timeout: float = 120.0
    """Seconds one API request may take (a snapshot writes all of guest RAM before answering)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_vcpus < 0 or self.memory_hotplug_mb < 0 or self.memory_hotplug_mb % 128:
            raise ValueError("max_vcpus must be >= 0, memory_hotplug_mb a non-negative multiple of 128")

    @property
    def vcpu_ceiling(self) -> int:
        return self.max_vcpus or os.cpu_count() or 1

    @classmethod
    def from_hostd(cls, config: HostdConfig, templates: TemplateStore) -> CloudHypervisorConfig:
        return cls(
            state_dir=config.state_dir,
            templates=templates,
            pool=PoolConfig.from_hostd(config),
            image_cache=config.vm_image_cache,
            guest_dir=config.guest_dir,
            binary=config.cloud_hypervisor_binary,
            bridge=config.bridge,
            subnet=config.subnet,
            cgroup_parent=config.cgroup,
            egress=config.egress == "nat",
            dns=(str(config.subnet.network_address + 1),) if config.egress == "nat" else (),
            boot_timeout=config.vm_boot_timeout_s,
        )
