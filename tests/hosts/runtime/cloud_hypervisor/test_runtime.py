"""The Cloud Hypervisor backend on real VMs: through the API stand-in (QEMU underneath, TCG
here), and through the real ``cloud-hypervisor`` when it is on PATH and KVM is usable.

What the contract suite (``cloud-hypervisor`` param) does not cover: a live ``vm.resize``
(and one arriving during a stop), the refusal of a snapshot written by another VMM version
(before anything starts), a successor resuming a VM a snapshot held paused, and that
every request the backend sent during a whole lifecycle conforms to ``ch_api.schema.json``
(the stand-in records them; a violation fails the test that caused it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hosts.agent_client import AgentClient
from hosts.errors import SnapshotInvalid
from hosts.runtime.cloud_hypervisor import CloudHypervisorConfig, CloudHypervisorRuntime
from hosts.runtime.cloud_hypervisor.client import CloudHypervisorClient
from hosts.templates import TemplateStore
from hosts.vm.layout import VmDir
from tests.hosts.conftest import make_spec
from tests.hosts.runtime.cloud_hypervisor._support import (
    ch_config,
    real_binary_reason,
    recorded,
    standin_wrapper,
)
from tests.support import await_for

pytestmark = pytest.mark.vm


@dataclass
class Setup:
    runtime: CloudHypervisorRuntime
    config: CloudHypervisorConfig
    root: Path
    record: Path | None
    """Where the stand-in records requests; None for the real binary."""


@pytest.fixture(scope="module", params=["stand-in", "real"])
def root(request: pytest.FixtureRequest) -> Iterator[tuple[str, Path]]:
    if os.geteuid() != 0:
        pytest.skip("VM sandboxes need root")
    if request.param == "real" and (reason := real_binary_reason()) is not None:
        pytest.skip(f"real Cloud Hypervisor not run: {reason}")
    path = Path(tempfile.mkdtemp(prefix="dnah-ch-", dir="/tmp"))  # short: Unix socket paths
    try:
        yield request.param, path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
async def setup(
    root: tuple[str, Path], template_store: TemplateStore, kernel_index: int
) -> AsyncIterator[Setup]:
    kind, path = root
    if kind == "stand-in":
        binary, record = standin_wrapper(path, "v1.0-standin")
    else:
        binary, record = Path(shutil.which("cloud-hypervisor") or "cloud-hypervisor"), None
    config = ch_config(path, template_store, kernel_index, str(binary), prefix="dnahv", net=219)
    runtime = CloudHypervisorRuntime(config)
    await runtime.recover()
    yield Setup(runtime, config, path, record)
    for info in runtime.list():
        await runtime.destroy(info.id)
    await runtime.remove_host_setup()


@pytest.fixture
def conforming(setup: Setup) -> Iterator[None]:
    """Fails the test if the stand-in received any request the schema rejects."""
    yield
    if setup.record is not None:
        bad = [r for r in recorded(setup.record) if r["problems"]]
        assert bad == [], "the backend sent requests the Cloud Hypervisor schema rejects"


async def sh(runtime: CloudHypervisorRuntime, sandbox_id: str, script: str) -> str:
    client = await AgentClient.connect(runtime.agent_socket(sandbox_id), timeout=30)
    try:
        result = await client.exec(["sh", "-c", script], timeout_ms=60_000)
    finally:
        await client.close()
    assert result.exit_code == 0, result
    return result.stdout


async def test_a_vm_resizes_live_snapshots_and_restores_its_running_processes(
    setup: Setup, conforming: None
) -> None:
    runtime, sandbox_id = setup.runtime, "chlife"
    await runtime.create(make_spec(sandbox_id, ram_mb=256))
    try:
        await sh(runtime, sandbox_id, "nohup sh -c 'echo $$ > counter.pid; exec sleep 600' >/dev/null 2>&1 &")
        pid = (await sh(runtime, sandbox_id, "sleep 0.2; cat counter.pid")).strip()

        resized = await runtime.resize(sandbox_id, 2, 512, 1)
        assert resized.state == "running"
        async with CloudHypervisorClient(runtime._api_socket(sandbox_id)) as api:
            info = await api.info()
        assert info.config.cpus is not None and info.config.cpus.boot_vcpus == 2
        assert info.memory_actual_size == 512 * 2**20

        snapshot = setup.config.pool.mountpoint / "snapshots" / "life"
        snapshot.parent.mkdir(exist_ok=True)
        await runtime.snapshot(sandbox_id, snapshot)
        written = json.loads((snapshot / "manifest.json").read_text())
        assert (written["runtime"], written["memory"]) == ("cloud-hypervisor", True)
        assert written["vmm_version"] == await runtime._vmm_version()
        await sh(runtime, sandbox_id, f"kill {pid}; echo later > later")

        assert (await runtime.restore(sandbox_id, snapshot)).state == "running"
        # The process killed after the snapshot runs again, from memory; the later file is gone.
        assert await sh(runtime, sandbox_id, f"kill -0 {pid} && echo alive; test -e later || echo none") == (
            "alive\nnone\n"
        )
    finally:
        await runtime.destroy(sandbox_id)


async def test_a_snapshot_of_another_vmm_version_is_refused_before_anything_starts(
    setup: Setup, template_store: TemplateStore, conforming: None
) -> None:
    if setup.record is None:
        pytest.skip("needs a second VMM version: the stand-in plays one")
    runtime, sandbox_id = setup.runtime, "chver"
    await runtime.create(make_spec(sandbox_id))
    snapshot = setup.config.pool.mountpoint / "snapshots" / "version"
    snapshot.parent.mkdir(exist_ok=True)
    try:
        await runtime.snapshot(sandbox_id, snapshot)
    finally:
        await runtime.destroy(sandbox_id)
    other_binary, other_record = standin_wrapper(setup.root, "v2.0-standin")
    other = CloudHypervisorRuntime(dataclasses.replace(setup.config, binary=str(other_binary)))
    with pytest.raises(SnapshotInvalid, match=r"v1\.0-standin.*v2\.0-standin"):
        await other.create(make_spec("chclone"), snapshot)
    assert recorded(other_record) == [], "a VMM was started for a snapshot it cannot restore"
    assert not (setup.config.state_dir / "sandboxes" / "chclone").exists()
    assert [i.id for i in other.list()] == []


async def test_a_successor_resumes_a_vm_a_snapshot_held_paused(setup: Setup, conforming: None) -> None:
    runtime, sandbox_id = setup.runtime, "chheld"
    await runtime.create(make_spec(sandbox_id))
    directory = VmDir(setup.config.state_dir / "sandboxes" / sandbox_id)
    successor = CloudHypervisorRuntime(setup.config)
    try:
        # hostd died while a snapshot held the VM paused.
        await asyncio.to_thread(directory.held.touch)
        async with CloudHypervisorClient(runtime._api_socket(sandbox_id)) as api:
            await api.pause()
        runtime.detach()

        states = {info.id: info.state for info in await successor.recover()}

        assert states[sandbox_id] == "running" and not directory.held.exists()
        assert await sh(successor, sandbox_id, "echo adopted") == "adopted\n"
    finally:
        await successor.destroy(sandbox_id)
        await runtime.destroy(sandbox_id)


async def test_a_resize_waits_for_a_stop_under_way_and_is_recorded(setup: Setup, conforming: None) -> None:
    # The sandbox's state is read under its lock: a resize that arrives while a stop runs
    # applies to the stopped sandbox (recorded) instead of failing as if it had vanished.
    runtime, sandbox_id = setup.runtime, "chsize"
    await runtime.create(make_spec(sandbox_id))
    try:
        stopping = asyncio.ensure_future(runtime.stop(sandbox_id))
        await await_for(
            lambda: _locked(runtime, sandbox_id), what="the stop to hold the sandbox", timeout_s=30
        )
        resized = await runtime.resize(sandbox_id, 2, 384, 2)
        assert (await stopping).state == "stopped" and resized.state == "stopped"
        assert (runtime.spec(sandbox_id).cpu, runtime.spec(sandbox_id).ram_mb) == (2, 384)
    finally:
        await runtime.destroy(sandbox_id)


async def _locked(runtime: CloudHypervisorRuntime, sandbox_id: str) -> bool:
    return runtime._locks[sandbox_id].locked()
