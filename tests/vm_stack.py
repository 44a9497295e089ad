"""The stack whose sandboxes are QEMU microVMs, shared by every ``vm`` test of a session.

One private stack (``tests/private_stack.py``) with ``DNAH_HOST_RUNTIME=qemu``: under TCG (no
usable KVM here) a VM costs seconds of a CPU to boot, so the VM suites share one stack per
session and keep their VM counts low. Under pytest-xdist (``make test`` runs ``-n 2``), the
scheduler below sends every test of ``VM_MODULES`` to the same worker, which boots this stack
once, while the other worker runs the rest; a test elsewhere that asks for ``vm_stack`` is an
error, so a new VM module cannot silently boot a second stack.

(``--dist loadgroup`` with ``xdist_group`` marks would be the stock way, but pytest-xdist 3.8
groups by rewriting ``item._nodeid``, which pytest 9.2's structured node ids ignore: the marks
are silently dropped — pytest-dev/pytest-xdist#1386.)

Registered as a plugin by ``tests/conftest.py``; nothing starts unless a test asks for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from cli.stack import Stack
from hosts.runtime.oci._host import sandbox_ids
from tests.private_stack import private_stack
from tests.support import mint_key, wait_for

if TYPE_CHECKING:
    from xdist.remote import Producer
    from xdist.scheduler import Scheduling

VM_MODULES = frozenset(
    {
        "tests/stack/test_vm_sandboxes.py",
        "tests/stack/test_vm_isolation.py",
        "tests/stack/test_vm_toolbox.py",
        "tests/sdk/test_daytona_sdk_vm.py",
    }
)
"""The modules using ``vm_stack``: one xdist work unit."""

VM_ENV = {
    "DNAH_HOST_RUNTIME": "qemu",
    # no warm pool: two idle VMs booting beside the tests' own would only cost CPU
    "DNAH_WARM_POOL": "",
    # a TCG boot, memory snapshot or restore on a machine busy with the rest of the suite
    # takes seconds to tens of seconds; the core waits for hostd this long
    "DNAH_HOST_TIMEOUT_S": "300",
    "DNAH_VM_BOOT_TIMEOUT": "240",
}
TIMEOUT_S = 300.0
"""Per HTTP call to the stack and per wait on a VM: generous, since TCG under load is slow."""


@dataclass(frozen=True)
class VmStack:
    stack: Stack
    key: str
    """An API key of an org of its own (through the gateway, as a user)."""

    @property
    def var(self) -> Path:
        return self.stack.var

    def client(self, base_url: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=base_url or self.stack.config.gateway_url,
            headers={"authorization": f"Bearer {self.key}"},
            timeout=TIMEOUT_S,
        )

    def new_key(self, name: str) -> str:
        """An API key of a fresh org."""
        with httpx.Client(
            base_url=self.stack.config.gateway_url,
            headers={"authorization": f"Bearer {self.stack.admin_token}"},
            timeout=60,
        ) as admin:
            return mint_key(admin, name)

    def netns(self, sandbox_id: str) -> str:
        """The sandbox's network namespace on the host (``hosts.runtime._network``'s naming)."""
        return f"{self.stack.config.bridge}@{sandbox_id}"

    @property
    def bridge_address(self) -> str:
        """The host bridge's address: the sandboxes' default gateway."""
        network = self.stack.config.subnet.rsplit(".", 1)[0]
        return f"{network}.1"


def qemu_pids(sandbox_id: str) -> list[int]:
    """Host pids of the live QEMU processes running ``sandbox_id``'s VM (``-name dnah-<id>``)."""
    wanted = ["-name", f"dnah-{sandbox_id}"]
    pids = []
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if "qemu" in argv[0].decode(errors="replace") and _contains(argv, wanted):
                pids.append(int(entry.name))
    return pids


def _contains(argv: list[bytes], wanted: list[str]) -> bool:
    words = [w.encode() for w in wanted]
    return any(argv[i : i + len(words)] == words for i in range(len(argv)))


def traces(vm: VmStack, sid: str) -> dict[str, bool]:
    """What of ``sid`` the host still holds, by kind."""
    hostd = vm.var / "hostd"
    return {
        "qemu process": bool(qemu_pids(sid)),
        "sandbox directory": (hostd / "sandboxes" / sid).exists(),
        "disk": (hostd / "pool" / "disks" / sid).exists(),
        "netns": Path(f"/run/netns/{vm.netns(sid)}").exists(),
        "cgroup": sid in sandbox_ids(vm.stack.config.cgroup),
    }


def the_vm_is_gone(vm: VmStack, sid: str) -> None:
    wait_for(
        lambda: not any(traces(vm, sid).values()) or None,
        what=f"every trace of {sid} gone from the host: {traces(vm, sid)}",
        timeout_s=TIMEOUT_S,
    )


@pytest.fixture(scope="session")
def vm_stack() -> Iterator[VmStack]:
    say: list[str] = []
    with private_stack(VM_ENV, say) as stack:
        assert "sandboxes run on the qemu runtime" in "\n".join(say), say
        vm = VmStack(stack, key="")
        yield VmStack(stack, key=vm.new_key("vm-tests"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.nodeid.split("::")[0]
        if "vm_stack" in getattr(item, "fixturenames", ()) and module not in VM_MODULES:
            raise pytest.UsageError(f"{module} uses vm_stack: list it in tests/vm_stack.py's VM_MODULES")


def pytest_xdist_make_scheduler(config: pytest.Config, log: Producer) -> Scheduling | None:
    """Plain ``-n`` distribution (``load``), except that ``VM_MODULES`` are one unit of work."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class VmTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "vm" if nodeid.split("::")[0] in VM_MODULES else nodeid

    return VmTogether(config, log)
