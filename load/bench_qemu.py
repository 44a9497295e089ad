"""What the QEMU backend's lifecycle costs on real VMs: create (boot to agent ready), snapshot
of a running VM, restore and fork from its memory, stop, start, destroy.

    sudo .venv/bin/python -m load.bench_qemu [--runs 5]

Drives ``QemuRuntime`` directly (no hostd, no core), with its own bridge, subnet, cgroup
parent and storage pool under /tmp, sandboxes of 1 CPU, 256 MiB and 1 GB, and the cached
``dnah-base`` template and guest image. Each run creates one sandbox, snapshots it, restores it,
forks it, stops and starts it, then destroys both. Prints P50, min and max per operation; the
results go to docs/runtimes.md ("QEMU microvm backend").
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path

import structlog

from contracts.host import SandboxSpec
from hosts.config import BUILD_SCRIPT, GUEST_DIR
from hosts.runtime.qemu import QemuConfig, QemuRuntime
from hosts.storage.pool import PoolConfig
from hosts.templates import TemplateStore

OPERATIONS = ("create", "snapshot", "restore", "fork", "stop", "start", "destroy")


def _spec(sandbox_id: str) -> SandboxSpec:
    return SandboxSpec(id=sandbox_id, template="dnah-base", cpu=1, ram_mb=256, disk_gb=1)


async def bench(runs: int) -> dict[str, list[float]]:
    root = Path(tempfile.mkdtemp(prefix="dnah-bench-qemu-", dir="/tmp"))
    runtime = QemuRuntime(
        QemuConfig(
            state_dir=root / "hostd",
            templates=TemplateStore(Path("/var/cache/dnah/templates"), BUILD_SCRIPT),
            pool=PoolConfig(image=root / "pool.img", size_bytes=16 * 2**30, mountpoint=root / "pool"),
            image_cache=Path("/var/cache/dnah/vm"),
            guest_dir=GUEST_DIR,
            bridge="dnahbq",
            subnet=ipaddress.IPv4Network("10.223.0.0/24"),
            cgroup_parent="dnahbq",
            egress=False,
            boot_timeout=120.0,
        )
    )
    times: dict[str, list[float]] = {name: [] for name in OPERATIONS}

    async def timed(name: str, step: Awaitable[object]) -> None:
        started = time.perf_counter()
        await step
        times[name].append(time.perf_counter() - started)

    await runtime.recover()
    try:
        for run in range(runs):
            parent, fork = f"b{run}", f"b{run}-fork"
            snapshot = root / "pool" / "snapshots" / f"s{run}"
            await timed("create", runtime.create(_spec(parent)))
            await timed("snapshot", runtime.snapshot(parent, snapshot))
            await timed("restore", runtime.restore(parent, snapshot))
            await timed("fork", runtime.create(_spec(fork), snapshot))
            await timed("stop", runtime.stop(parent))
            await timed("start", runtime.start(_spec(parent)))
            for sandbox_id in (parent, fork):
                await timed("destroy", runtime.destroy(sandbox_id))
    finally:
        for info in runtime.list():
            await runtime.destroy(info.id)
        await runtime.remove_host_setup()
        shutil.rmtree(root, ignore_errors=True)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    for name, seconds in asyncio.run(bench(args.runs)).items():
        p50 = statistics.median(seconds)
        low, high = min(seconds), max(seconds)
        print(f"{name:9} P50 {p50:6.2f} s  min {low:6.2f}  max {high:6.2f}  n={len(seconds)}")


if __name__ == "__main__":
    main()
