"""``QemuConfig``: the QEMU backend's settings, built from hostd's one config object."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hosts.runtime._vsock import VsockProbe, probe_vhost_vsock
from hosts.runtime.qemu.channel import Channel, select_channel
from hosts.storage.pool import PoolConfig
from hosts.templates import TemplateStore
from hosts.vm.config import VmConfig

if TYPE_CHECKING:
    from hosts.config import HostdConfig


@dataclass(frozen=True, kw_only=True)
class QemuConfig(VmConfig):
    """``VmConfig`` with QEMU as the VMM (``DNAH_QEMU_BINARY``)."""

    binary: str = "qemu-system-x86_64"
    channel: Channel = "serial"
    """The agent channel new boots get (``DNAH_QEMU_CHANNEL`` resolved, see ``channel.py``)."""
    channel_reason: str = "the default"
    """Why ``channel`` was chosen, for the start-up log."""

    @classmethod
    def from_hostd(
        cls,
        config: HostdConfig,
        templates: TemplateStore,
        *,
        vsock: Callable[[], VsockProbe] = probe_vhost_vsock,
    ) -> QemuConfig:
        """``vsock`` is the probe behind ``DNAH_QEMU_CHANNEL=auto`` (a parameter for tests)."""
        channel, reason = select_channel(config.qemu_channel, vsock)
        return cls(
            channel=channel,
            channel_reason=reason,
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
            dns=(str(config.subnet.network_address + 1),) if config.egress == "nat" else (),
            boot_timeout=config.vm_boot_timeout_s,
        )
