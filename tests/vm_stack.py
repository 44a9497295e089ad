"""The stack whose sandboxes are QEMU microVMs, shared by every ``vm`` test of a session.

One private stack (``tests/private_stack.py``) with ``DNAH_HOST_RUNTIME=qemu``: under TCG (no
usable KVM here) a VM costs seconds of a CPU to boot, so the VM suites share one stack per
session and keep their VM counts low. Every ``vm`` module is marked
``xdist_group("vm")`` and ``make test`` distributes with ``--dist loadgroup``, so they all run
on one worker and that worker boots this stack once.

Registered as a plugin by ``tests/conftest.py``; nothing starts unless a test asks for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cli.stack import Stack
from hosts.runtime.oci._host import sandbox_ids
from tests.private_stack import private_stack
from tests.support import mint_key, wait_for

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
