"""Builds the configured runtime backend. The one place that knows which backends exist."""

from __future__ import annotations

from hosts.config import HostdConfig
from hosts.runtime.namespace import NamespaceConfig, NamespaceRuntime
from hosts.templates import TemplateStore


def make_runtime(config: HostdConfig, templates: TemplateStore | None = None) -> NamespaceRuntime:
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
