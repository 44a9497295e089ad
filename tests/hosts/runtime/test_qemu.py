"""The QEMU backend's own parts: the QMP client against a real QEMU, the command line, and what
the contract suite (which runs every lifecycle test on real VMs, see ``_contract_fixtures``)
does not cover: a QEMU that dies is noticed, and where each create step is (for the suite's
failure injection) and every trace a VM sandbox can leave.

QMP tests use QEMU started with ``-S`` (no guest runs, so they cost milliseconds); the rest boot
one real VM under TCG.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from hosts.agent_client import AgentClient
from hosts.config import GUEST_DIR
from hosts.errors import RuntimeFailure
from hosts.runtime import _network
from hosts.runtime._channel import SerialMuxer
from hosts.runtime.qemu import QemuConfig, QemuRuntime, launcher
from hosts.runtime.qemu.qmp import Qmp, QmpClosed, QmpError
from hosts.storage.pool import PoolConfig
from hosts.templates import TemplateStore
from hosts.vm import cgroup, disk, network, process, tsc
from hosts.vm import runtime as vm_runtime
from hosts.vm.layout import Machine, RunFiles, VmDir
from tests.hosts.conftest import make_spec

VM_IMAGE_CACHE = Path("/var/cache/dnah/vm")
QEMU = shutil.which("qemu-system-x86_64")

SYNC_STEPS: list[tuple[object, str]] = [
    (VmDir, "populate"),
    (disk, "create"),
    (network, "configure_inside"),
    (cgroup, "create"),
    (VmDir, "write_boot"),
    (process, "spawn"),
    (cgroup, "move"),
]
"""Where a create can fail, in order (the contract suite injects a failure before and after each)."""
ASYNC_STEPS: list[tuple[object, str]] = [(SerialMuxer, "start"), (vm_runtime, "wait_ready")]


def qemu_config(root: Path, templates: TemplateStore, index: int) -> QemuConfig:
    """A QEMU runtime of its own under ``root`` (kernel names ``dnahq<index>``, ``10.224.<index>.0/24``)."""
    return QemuConfig(
        state_dir=root / "hostd",
        templates=templates,
        pool=PoolConfig(image=root / "pool.img", size_bytes=16 * 2**30, mountpoint=root / "pool"),
        image_cache=VM_IMAGE_CACHE,
        guest_dir=GUEST_DIR,
        bridge=f"dnahq{index}",
        subnet=ipaddress.IPv4Network(f"10.224.{index}.0/24"),
        cgroup_parent=f"dnahq{index}",
        egress=False,  # nothing a test runs leaves the machine
        boot_timeout=120.0,  # TCG on a loaded 2-core machine
    )


def traces(config: QemuConfig, sandbox_id: str) -> list[str]:
    """Everything of ``sandbox_id`` on the host: directory, QEMU process, netns (with its TAP),
    veth, cgroups, disk. Empty when it left nothing."""
    found = []
    directory = config.state_dir / "sandboxes" / sandbox_id
    if directory.exists():
        found.append(f"directory {directory}")
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if str(directory).encode() in cmdline:
                found.append(f"process {entry.name}: {cmdline[:60]!r}")
    if (_network.NETNS_DIR / f"{config.bridge}@{sandbox_id}").exists():
        found.append("netns")
    found += [f"cgroup {d}" for d in cgroup.directories(config.cgroup_parent, sandbox_id) if d.exists()]
    if (config.pool.mountpoint / "disks" / sandbox_id).exists():
        found.append("disk")
    return found


# QMP ------------------------------------------------------------------------------------------


@pytest.fixture
def paused_qemu() -> Iterator[Path]:
    """A QEMU that runs no guest (``-S``); yields its QMP socket."""
    if QEMU is None:
        pytest.skip("qemu-system-x86_64 is not installed")
    work = Path(tempfile.mkdtemp(prefix="dnah-qmp-", dir="/tmp"))
    qmp = work / "qmp.sock"
    argv = [QEMU, "-M", "microvm", "-accel", "tcg", "-nodefaults", "-no-user-config", "-nographic", "-S"]
    proc = subprocess.Popen([*argv, "-m", "32", "-qmp", f"unix:{qmp},server=on,wait=off"])
    try:
        yield qmp
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)


async def test_qmp_negotiates_and_runs_commands(paused_qemu: Path) -> None:
    qmp = await Qmp.connect(paused_qemu)
    try:
        assert qmp.version.split()[0].count(".") == 2
        assert (await qmp.execute("query-status"))["status"] == "prelaunch"
        # Answers are matched by id, whatever order they are awaited in.
        names, status = await asyncio.gather(qmp.execute("query-commands"), qmp.execute("query-status"))
        assert {"name": "migrate"} in names and status["running"] is False
        with pytest.raises(QmpError) as refused:
            await qmp.execute("no-such-command")
        assert refused.value.error_class == "CommandNotFound"
        with pytest.raises(QmpError, match="max-bandwidth"):
            await qmp.execute("migrate-set-parameters", {"max-bandwidth": "fast"})
    finally:
        await qmp.close()


async def test_qmp_delivers_events_and_fails_waiters_when_qemu_ends(paused_qemu: Path) -> None:
    qmp = await Qmp.connect(paused_qemu)
    try:
        with qmp.events() as events:
            await qmp.execute("cont")
            assert (await events.wait("RESUME", timeout=10))["event"] == "RESUME"
            await qmp.execute("stop")
            assert (await events.wait("STOP", timeout=10))["event"] == "STOP"
            with pytest.raises(TimeoutError):
                await events.wait("RESUME", timeout=0.2)
            await qmp.execute("quit")
            shutdown = await events.wait("SHUTDOWN", timeout=10)
            assert shutdown["data"]["reason"] == "host-qmp-quit"
            await asyncio.wait_for(qmp.closed, 10)
            with pytest.raises(QmpClosed):
                await events.wait("RESUME", timeout=10)
        with pytest.raises(QmpClosed):
            await qmp.execute("query-status")
    finally:
        await qmp.close()


async def test_qmp_serves_a_new_client_once_the_first_is_gone(paused_qemu: Path) -> None:
    first = await Qmp.connect(paused_qemu)
    await first.close()
    second = await Qmp.connect(paused_qemu)  # what a restarted hostd does
    try:
        assert (await second.execute("query-status"))["status"] == "prelaunch"
    finally:
        await second.close()


async def test_qmp_connect_gives_up_on_a_missing_socket(tmp_path: Path) -> None:
    with pytest.raises(RuntimeFailure, match="did not accept"):
        await Qmp.connect(tmp_path / "none.sock", timeout=0.2)


# command line ---------------------------------------------------------------------------------


def test_the_command_line_carries_the_boot_essentials(tmp_path: Path) -> None:
    machine = Machine(cpu=2, ram_mb=300, kernel="/k", initrd="/i", mac="02:00:00:00:00:01", accel="tcg")
    files = RunFiles(tmp_path)
    argv = launcher.argv("qemu", machine, files, disk=tmp_path / "d.img", cmdline="x=1", name="s1")
    joined = " ".join(argv)
    assert argv[argv.index("-smp") + 1] == "2" and argv[argv.index("-m") + 1] == "300M"
    assert f"path={launcher.serial_socket(files)},server=on,wait=off" in joined and "name=agent" in joined
    assert f"unix:{launcher.qmp_socket(files)}" in joined and f"file:{files.console}" in joined
    assert "ifname=tap0" in joined and "-incoming" not in argv
    # QEMU's seccomp filter, with spawn allowed: memory snapshots migrate through exec:
    sandbox = argv[argv.index("-sandbox") + 1].split(",")
    assert sandbox[0] == "on" and {"elevateprivileges=deny", "obsolete=deny"} <= set(sandbox)
    assert not any(option.startswith("spawn=") for option in sandbox)
    incoming = launcher.argv(
        "qemu", machine, files, disk=tmp_path / "d.img", cmdline="", name="s1", incoming=True
    )
    assert incoming[-2:] == ["-incoming", "defer"]
    # Without tsc=reliable a TCG guest's clock falls back to jiffies; without a known TSC rate,
    # about one TCG boot in four hangs (docs/runtimes.md).
    assert "tsc=reliable" in launcher.vmm_flags().split()
    if tsc.host_tsc_khz() is not None:
        assert f"tsc_early_khz={tsc.host_tsc_khz()}" in launcher.vmm_flags()


# a real VM ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def vm_runtime(template_store: TemplateStore, kernel_index: int) -> AsyncIterator[QemuRuntime]:
    root = Path(tempfile.mkdtemp(prefix="dnah-qemu-", dir="/tmp"))
    # An index of its own: the contract suite's qemu backend may run in this session too.
    runtime = QemuRuntime(qemu_config(root, template_store, (kernel_index + 128) % 256))
    try:
        await runtime.recover()
        yield runtime
        for info in runtime.list():
            await runtime.destroy(info.id)
        await runtime.remove_host_setup()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.vm
async def test_a_qemu_that_dies_is_noticed_and_cleaned_up(vm_runtime: QemuRuntime) -> None:
    sandbox_id = f"q{uuid.uuid4().hex[:12]}"
    # The spec's environment reaches the agent (vminit waits for it on the control port).
    await vm_runtime.create(make_spec(sandbox_id, env={"GREETING": "hello world"}))
    try:
        client = await AgentClient.connect(vm_runtime.agent_socket(sandbox_id))
        try:
            assert (await client.exec(["sh", "-c", "echo $GREETING"])).stdout == "hello world\n"
        finally:
            await client.close()
        record = VmDir(vm_runtime.config.state_dir / "sandboxes" / sandbox_id).read_vmm()
        assert record is not None and (await asyncio.to_thread(traces, vm_runtime.config, sandbox_id))
        # QEMU runs in the sandbox's cgroup: guest RAM plus the VMM's overhead, 1 CPU.
        config = vm_runtime.config
        limits = _limits(config.cgroup_parent, sandbox_id)
        assert limits["memory"] == (256 + config.vmm_overhead_mb) * 2**20
        assert limits["cpu"] == 100_000 and limits["pids"] == config.pids_max
        assert record.pid in limits["procs"]
        os.kill(record.pid, signal.SIGKILL)

        async def stopped() -> bool:
            return next(i for i in vm_runtime.list() if i.id == sandbox_id).state == "stopped"

        deadline = asyncio.get_running_loop().time() + 30
        while not await stopped():
            assert asyncio.get_running_loop().time() < deadline, "the dead VM is still reported running"
            await asyncio.sleep(0.05)
        left = await asyncio.to_thread(traces, vm_runtime.config, sandbox_id)
        assert sorted(left) == sorted(
            [f"directory {vm_runtime.config.state_dir / 'sandboxes' / sandbox_id}", "disk"]
        )
        # The disk survived: it boots again.
        assert (await vm_runtime.start(make_spec(sandbox_id, env={"GREETING": "hi"}))).state == "running"
    finally:
        await vm_runtime.destroy(sandbox_id)
    assert await asyncio.to_thread(traces, vm_runtime.config, sandbox_id) == []


@pytest.mark.vm
async def test_a_successor_resumes_a_vm_a_snapshot_held_stopped(vm_runtime: QemuRuntime) -> None:
    sandbox_id = f"q{uuid.uuid4().hex[:12]}"
    await vm_runtime.create(make_spec(sandbox_id))
    directory = VmDir(vm_runtime.config.state_dir / "sandboxes" / sandbox_id)
    successor = QemuRuntime(vm_runtime.config)
    try:
        # hostd died while a snapshot held the vCPUs stopped.
        await asyncio.to_thread(directory.held.touch)
        qmp = await Qmp.connect(launcher.qmp_socket(directory.files))
        try:
            await qmp.execute("stop")
        finally:
            await qmp.close()
        vm_runtime.detach()

        states = {info.id: info.state for info in await successor.recover()}

        assert states[sandbox_id] == "running" and not directory.held.exists()
        client = await AgentClient.connect(successor.agent_socket(sandbox_id))
        try:
            assert (await client.exec(["echo", "adopted"])).stdout == "adopted\n"
        finally:
            await client.close()
    finally:
        await successor.destroy(sandbox_id)
        await vm_runtime.destroy(sandbox_id)
    assert await asyncio.to_thread(traces, vm_runtime.config, sandbox_id) == []


def _limits(parent: str, sandbox_id: str) -> dict[str, Any]:
    """The sandbox cgroup's memory limit, CPU quota (µs per 100 ms), pids cap and processes."""
    found: dict[str, Any] = {"procs": set()}
    for directory in cgroup.directories(parent, sandbox_id):
        found["procs"] |= {int(p) for p in (directory / "cgroup.procs").read_text().split()}
        files = (("memory.limit_in_bytes", "memory"), ("memory.max", "memory"), ("pids.max", "pids"))
        for name, key in files:
            if (directory / name).exists():
                found[key] = int((directory / name).read_text())
        if (directory / "cpu.cfs_quota_us").exists():
            found["cpu"] = int((directory / "cpu.cfs_quota_us").read_text())
        if (directory / "cpu.max").exists():
            found["cpu"] = int((directory / "cpu.max").read_text().split()[0])
    return found
