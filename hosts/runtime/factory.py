"""Builds the configured runtime backend. The one place that knows which backends exist.

``DNAH_HOST_RUNTIME`` picks it (``hosts/config.py``): ``oci`` (the default) is the isolating
runtime, the namespace one for now; ``fake`` isolates nothing and exists for tests, so it is
built only when named explicitly.
"""

from __future__ import annotations

from hosts.config import HostdConfig
from hosts.runtime.base import SandboxRuntime
from hosts.runtime.fake import FakeConfig, FakeRuntime
from hosts.runtime.namespace import NamespaceConfig, NamespaceRuntime
from hosts.templates import TemplateStore


def make_runtime(config: HostdConfig, templates: TemplateStore | None = None) -> SandboxRuntime:
    if config.runtime == "fake":
        return FakeRuntime(FakeConfig(state_dir=config.state_dir / "fake", guest_dir=config.guest_dir))
    templates = templates or TemplateStore(config.template_cache, config.build_script)
    return NamespaceRuntime(
        NamespaceConfig(
            state_dir=config.state_dir,
            templates=templates,
            guest_dir=config.guest_dir,
            bridge=config.bridge,
            subnet=config.subnet,
            cgroup_parent=config.cgroup,
        )
    )
