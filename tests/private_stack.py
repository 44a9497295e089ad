"""A stack of a test module's own, for tests that kill its datastores or need settings the
shared session ``stack`` (tests/conftest.py) must not have. Built like that one: its own var
dir, ports, bridge, subnet and cgroup parent (an index no other session holds), sandboxes with
no egress, the shared template cache; removed with everything it made."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cli.stack import Stack, StackConfig
from tests.support import exclusive_index, free_port


def stack_config(n: int, var: Path, host_name: str, extra_env: dict[str, str]) -> StackConfig:
    """A test stack's settings from the index ``n`` it holds: kernel names and the subnet are
    derived from it, ports are test ports, and sandboxes have no egress."""
    return StackConfig(
        var_dir=var,
        gateway_port=free_port(),
        core_port=free_port(),
        hostd_port=free_port(),
        ssh_port=free_port(),
        bridge=f"dnahs{n}",
        subnet=f"10.216.{n}.0/24",
        cgroup=f"dnahs{n}",
        host_name=host_name,
        egress="none",  # nothing a test runs leaves the machine
        extra_env=extra_env,
    )


@contextlib.contextmanager
def private_stack(extra_env: dict[str, str], say: list[str] | None = None) -> Iterator[Stack]:
    """Start a stack with ``extra_env`` added to every service's environment; what it says
    goes to ``say`` when given."""
    with exclusive_index("stack") as n:
        var = Path(tempfile.mkdtemp(prefix=f"dnah-private{n}-"))
        config = stack_config(n, var, f"private-host-{n}", {"DNAH_RECONCILE_S": "1", **extra_env})
        stack = Stack(config, say=say.append if say is not None else lambda _: None)
        try:
            stack.start()
            yield stack
        finally:
            stack.remove()
