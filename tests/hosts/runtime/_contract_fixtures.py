"""The backends the contract suite runs against, and what the suite needs to know of each.

``fake`` always runs (no root). ``real`` is whatever ``hosts.runtime.factory.make_runtime``
builds for the default ``DNAH_HOST_RUNTIME``; it needs root and the cached template, and is
skipped only when not root. Its kernel names (``dnahk<n>``, ``10.216.<n>.0/24``) are its own,
so it never shares a bridge or a cgroup parent with the other hostd suites. ``qemu`` runs
every sandbox as a real QEMU microVM (TCG here: slow, marked ``vm``; root only), with kernel
names of its own (``dnahq<n>``, ``10.224.<n>.0/24``). ``cloud-hypervisor`` runs the Cloud
Hypervisor backend through the API stand-in (QEMU underneath, ``dnahc<n>``, ``10.218.<n>.0/24``;
every request it received must conform to the schema), ``cloud-hypervisor-real`` through the
real VMM where it and usable KVM exist (else it skips, saying which is missing).

A backend tells the suite where its create steps are (to inject failures at each) and how to
find every trace a sandbox leaves on the host.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from hosts.config import load_config
from hosts.runtime.base import SandboxRuntime
from hosts.runtime.factory import make_runtime
from hosts.runtime.fake import FakeConfig, FakeRuntime
from hosts.runtime.fake import _dir as fake_dir
from hosts.runtime.fake import runtime as fake_runtime
from hosts.templates import TemplateStore

Step = tuple[object, str, bool]
"""(owner, attribute, is_async): a create step the suite replaces with a failing one."""


@dataclass
class Backend:
    name: str
    runtime: SandboxRuntime
    new_instance: Callable[[], SandboxRuntime]
    """Another runtime on the same state, as a restarted hostd would build it."""
    sandboxes_dir: Path
    snapshot_dir: Path
    """Where its snapshot store lives: anywhere for the fake, inside the pool for the OCI
    runtime (its snapshots are btrfs snapshots of the disks)."""
    create_steps: list[Step]
    kernel_traces: Callable[[str], list[str]]
    """Traces besides directories and processes (cgroups, netns, veths); none for the fake."""

    def traces(self, sandbox_id: str) -> list[str]:
        """Everything of ``sandbox_id`` still on the host; empty when it left nothing."""
        directory = self.sandboxes_dir / sandbox_id
        found = [f"directory {directory}"] if directory.exists() else []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes()
                cwd = os.readlink(proc / "cwd")
            except OSError:
                continue
            if str(directory).encode() in cmdline or cwd.startswith(str(directory)):
                found.append(f"process {proc.name}: {cmdline[:80]!r}")
        return found + self.kernel_traces(sandbox_id)

    def wait_gone(self, sandbox_id: str, timeout: float = 10.0) -> list[str]:
        """The traces left once they stop shrinking or ``timeout`` passes (a killed process
        may take a moment to be reaped by its parent)."""
        deadline = time.monotonic() + timeout
        while (left := self.traces(sandbox_id)) and time.monotonic() < deadline:
            time.sleep(0.05)
        return left


def _fake(root: Path) -> Backend:
    def build() -> FakeRuntime:
        return FakeRuntime(
            FakeConfig(state_dir=root, guest_dir=Path(__file__).resolve().parents[3] / "guest")
        )

    return Backend(
        name="fake",
        runtime=build(),
        new_instance=build,
        sandboxes_dir=root / "sandboxes",
        snapshot_dir=root / "snapshots",
        create_steps=[
            (fake_dir.FakeDir, "populate", False),
            (fake_runtime, "spawn_agent", False),
            (fake_dir.FakeDir, "write_agent", False),
            (fake_runtime, "wait_ready", True),
        ],
        kernel_traces=lambda _id: [],
    )


def _real(root: Path, template_store: TemplateStore, index: int) -> Backend:
    # The OCI runtime's own suite knows where its create steps and traces are.
    from hosts.runtime.oci import OciRuntime
    from tests.hosts.runtime import test_oci

    env = {
        "DNAH_BOOTSTRAP_TOKEN": "contract-suite",
        "DNAH_VAR_DIR": str(root),
        "DNAH_TEMPLATE_CACHE": str(template_store.cache_dir),
        "DNAH_HOST_BRIDGE": f"dnahk{index}",
        "DNAH_HOST_SUBNET": f"10.216.{index}.0/24",
        "DNAH_HOST_CGROUP": f"dnahk{index}",
        "DNAH_SANDBOX_EGRESS": "none",  # nothing a test runs leaves the machine
    }
    config = load_config(env)

    def build() -> SandboxRuntime:
        return make_runtime(config, template_store)

    runtime = build()
    assert isinstance(runtime, OciRuntime), "update the contract suite's real-backend hooks"
    steps: list[Step] = [(o, n, False) for o, n in test_oci._SYNC_STEPS]
    steps += [(o, n, True) for o, n in test_oci._ASYNC_STEPS]
    return Backend(
        name="real",
        runtime=runtime,
        new_instance=build,
        sandboxes_dir=config.state_dir / "sandboxes",
        snapshot_dir=config.snapshot_dir,
        create_steps=steps,
        kernel_traces=lambda sandbox_id: [
            t
            for t in test_oci.traces(runtime.config, sandbox_id)
            # veths are counted bridge-wide there, and the suite keeps other sandboxes running
            if not t.startswith(("directory", "veths on the bridge"))
        ],
    )


def _qemu(root: Path, template_store: TemplateStore, index: int) -> Backend:
    # The QEMU runtime's own suite knows where its create steps and traces are.
    from hosts.runtime.qemu import QemuRuntime
    from tests.hosts.runtime import test_qemu

    config = test_qemu.qemu_config(root, template_store, index)
    runtime = QemuRuntime(config)

    def successor() -> SandboxRuntime:
        runtime.detach()  # a dead hostd lets go of the VMs' serial ports; this one is alive
        return QemuRuntime(config)

    return Backend(
        name="qemu",
        runtime=runtime,
        new_instance=successor,
        sandboxes_dir=config.state_dir / "sandboxes",
        snapshot_dir=config.pool.mountpoint / "snapshots",
        create_steps=[
            *((o, n, False) for o, n in test_qemu.SYNC_STEPS),
            *((o, n, True) for o, n in test_qemu.ASYNC_STEPS),
        ],
        kernel_traces=lambda sandbox_id: [
            t for t in test_qemu.traces(config, sandbox_id) if not t.startswith("directory")
        ],
    )


def _cloud_hypervisor(root: Path, template_store: TemplateStore, index: int, binary: str) -> Backend:
    # Cloud Hypervisor's host side is every VM backend's (hosts.vm.runtime), as QEMU's: the
    # same create steps and traces, plus the wait for the VMM's API and without the muxer.
    from hosts.runtime.cloud_hypervisor import CloudHypervisorRuntime
    from hosts.runtime.cloud_hypervisor import runtime as ch_runtime
    from tests.hosts.runtime import test_qemu
    from tests.hosts.runtime.cloud_hypervisor._support import ch_config

    config = ch_config(root, template_store, index, binary)
    runtime = CloudHypervisorRuntime(config)

    def successor() -> SandboxRuntime:
        runtime.detach()
        return CloudHypervisorRuntime(config)

    return Backend(
        name="cloud-hypervisor",
        runtime=runtime,
        new_instance=successor,
        sandboxes_dir=config.state_dir / "sandboxes",
        snapshot_dir=config.pool.mountpoint / "snapshots",
        create_steps=[
            *((o, n, False) for o, n in test_qemu.SYNC_STEPS),
            (ch_runtime, "wait_for_api", True),
            *((o, n, True) for o, n in test_qemu.ASYNC_STEPS if n != "start"),  # no muxer here
        ],
        kernel_traces=lambda sandbox_id: [
            t for t in test_qemu.traces(config, sandbox_id) if not t.startswith("directory")
        ],
    )


def _cloud_hypervisor_binary(param: str, root: Path) -> str:
    """``cloud-hypervisor``: the API stand-in (QEMU underneath), its requests checked against
    the schema after the module; ``cloud-hypervisor-real``: the real VMM, or a plain skip."""
    from tests.hosts.runtime.cloud_hypervisor._support import real_binary_reason, standin_wrapper

    if param == "cloud-hypervisor":
        return str(standin_wrapper(root, "v1.0-standin")[0])
    if (reason := real_binary_reason()) is not None:
        pytest.skip(f"real Cloud Hypervisor not run: {reason}")
    return shutil.which("cloud-hypervisor") or "cloud-hypervisor"


_VM = pytest.mark.vm


@pytest.fixture(
    scope="module",
    params=[
        "fake",
        "real",
        pytest.param("qemu", marks=_VM),
        pytest.param("cloud-hypervisor", marks=_VM),
        pytest.param("cloud-hypervisor-real", marks=_VM),
    ],
)
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    # Under /tmp and short: agent sockets live in the state dir, and a Unix socket path is
    # limited to 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="dnah-contract-", dir="/tmp"))
    try:
        if request.param == "fake":
            chosen = _fake(root)
        else:
            if os.geteuid() != 0:
                pytest.skip(f"the {request.param} runtime needs root")
            store: TemplateStore = request.getfixturevalue("template_store")
            index = request.getfixturevalue("kernel_index")
            if request.param.startswith("cloud-hypervisor"):
                binary = _cloud_hypervisor_binary(request.param, root)
                chosen = _cloud_hypervisor(root, store, index, binary)
            else:
                chosen = (_real if request.param == "real" else _qemu)(root, store, index)
        await chosen.runtime.recover()
        yield chosen
        for info in chosen.runtime.list():
            await chosen.runtime.destroy(info.id)
        await chosen.runtime.remove_host_setup()
        if request.param == "cloud-hypervisor":
            from tests.hosts.runtime.cloud_hypervisor._support import recorded

            bad = [r for r in recorded(root / "record-v1.0-standin") if r["problems"]]
            assert bad == [], "the backend sent requests the Cloud Hypervisor schema rejects"
    finally:
        shutil.rmtree(root, ignore_errors=True)
