"""Builds the configured runtime backend. The one place that knows which backends exist.

``DNAH_HOST_RUNTIME`` picks it (``hosts/config.py``, which resolves ``auto`` from the machine):
``oci`` is the container runtime (runc, ``hosts/runtime/oci``), ``qemu`` and
``cloud-hypervisor`` the microVM ones (``hosts/runtime/qemu``, ``hosts/runtime/cloud_hypervisor``);
``fake`` isolates nothing and exists for tests, so it is built only when named explicitly. The
VM backends are imported only when chosen, so a host that runs containers never loads them.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from hosts.config import HostdConfig
from hosts.runtime.base import SandboxRuntime
from hosts.runtime.fake import FakeConfig, FakeRuntime
from hosts.runtime.oci import OciConfig, OciRuntime
from hosts.storage.pool import PoolConfig
from hosts.templates import TemplateStore

if TYPE_CHECKING:
    from hosts.egress.service import Egress


def make_runtime(
    config: HostdConfig, templates: TemplateStore | None = None, egress: Egress | None = None
) -> SandboxRuntime:
    """``egress``: hostd's egress service, whose resolver OCI sandboxes name in their
    resolv.conf and whose CA bundle they get when they hold secrets (VMs are given the
    resolver's address by their ``from_hostd`` configs)."""
    if config.runtime == "fake":
        return FakeRuntime(FakeConfig(state_dir=config.state_dir / "fake", guest_dir=config.guest_dir))
    templates = templates or TemplateStore(config.template_cache, config.build_script)
    if config.runtime == "qemu":
        from hosts.runtime.qemu import QemuConfig, QemuRuntime

        return QemuRuntime(QemuConfig.from_hostd(config, templates))
    if config.runtime == "cloud-hypervisor":
        from hosts.runtime.cloud_hypervisor import CloudHypervisorConfig, CloudHypervisorRuntime

        return CloudHypervisorRuntime(CloudHypervisorConfig.from_hostd(config, templates))
    oci = OciConfig(
        state_dir=config.state_dir,
        templates=templates,
        pool=PoolConfig.from_hostd(config),
        uid_base=config.sandbox_uid_base,
        guest_dir=config.guest_dir,
        bridge=config.bridge,
        subnet=config.subnet,
        cgroup_parent=config.cgroup,
        egress=config.egress == "nat",
    )
    if egress is not None:
        oci = dataclasses.replace(oci, resolv_conf=egress.resolv_conf, trust_bundle=egress.trust_bundle)
    return OciRuntime(oci)
