"""Lifecycle benchmark: warm-pool create (and the first exec after it) against a cold create,
then pause/resume, snapshot, restore, fork and archive/unarchive of a sandbox holding 100 MB
of written data — P50/P95 each, direct to the core — and the disk used by 100 forks of that
sandbox (each stopped once forked, so that memory is no limit): the storage pool's used bytes
(``btrfs filesystem usage``, data and metadata, after a sync) before and after.

It starts its own stack (``cli.stack.Stack``, as ``make up`` does, warm pool of 2 per host)
on spare ports. Warm creates are measured one at a time with the pool refilled in between
(the refill boots in the background; a create that found the pool empty would be a cold one,
and is reported separately if it happens).

    python -m load.bench_lifecycle                 # defaults
    python -m load.bench_lifecycle --rounds 20
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import tempfile
import time
from pathlib import Path

import asyncpg
import httpx

from cli.stack import Stack, StackConfig
from load.bench_core import machine, report

DATA_MB = 100
FORKS = 100


def ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def ok(resp: httpx.Response) -> dict:
    if resp.status_code >= 300:
        raise RuntimeError(f"{resp.request.method} {resp.request.url.path}: {resp.status_code} {resp.text}")
    return dict(resp.json()) if resp.content else {}


async def pool_size(db_url: str) -> int:
    conn = await asyncpg.connect(db_url)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM sandboxes WHERE org_id = 'org_pool' AND state = 'started'"
        )
        return count
    finally:
        await conn.close()


def pool_used_bytes(pool: Path) -> int:
    """Bytes the pool's filesystem uses (data and metadata, as allocated on the device), once
    everything written so far is committed."""
    subprocess.run(["btrfs", "filesystem", "sync", str(pool)], check=True, capture_output=True)
    usage = subprocess.run(
        ["btrfs", "filesystem", "usage", "-b", str(pool)], check=True, capture_output=True, text=True
    ).stdout
    return next(int(line.split()[1]) for line in usage.splitlines() if line.strip().startswith("Used:"))


def measure_forks(core: httpx.Client, sid: str, pool: Path) -> None:
    """Fork ``sid`` ``FORKS`` times (stopping each fork) and report what the pool grew by."""
    before = pool_used_bytes(pool)
    forks = []
    for _ in range(FORKS):
        fork = ok(core.post(f"/v1/sandboxes/{sid}/fork", json={}))
        ok(core.post(f"/v1/sandboxes/{fork['id']}/stop"))
        forks.append(fork["id"])
    grown = pool_used_bytes(pool) - before
    print(
        f"disk used by {FORKS} forks (and their snapshots) of a sandbox holding {DATA_MB} MB: "
        f"{grown / 1e6:.1f} MB ({grown / FORKS / 1e3:.0f} kB each; the parent's data: {DATA_MB} MB)"
    )
    for fork_id in forks:
        ok(core.delete(f"/v1/sandboxes/{fork_id}"))
    for snapshot in ok(core.get(f"/v1/sandboxes/{sid}/snapshots"))["items"]:
        core.delete(f"/v1/snapshots/{snapshot['id']}")


def wait_pool(stack: Stack, size: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while asyncio.run(pool_size(stack.database_url)) < size:
        if time.monotonic() > deadline:
            raise RuntimeError("the warm pool did not refill")
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--creates", type=int, default=30, help="warm creates (and cold ones)")
    parser.add_argument("--rounds", type=int, default=10, help="rounds of each 100 MB operation")
    args = parser.parse_args()

    var = Path(tempfile.mkdtemp(prefix="dnah-bench-lifecycle-"))
    config = StackConfig(
        var_dir=var,
        gateway_port=24900,
        core_port=25000,
        hostd_port=25100,
        ssh_port=25150,
        bridge="dnahl0",
        subnet="10.220.0.0/24",
        cgroup="dnahl",
        host_name="bench-lifecycle",
        egress="none",  # benchmark sandboxes reach nothing beyond the machine
        # The scheduler counts each fork's disk_gb in full, though forks share their data:
        # room for the 100 forks below.
        extra_env={"DNAH_HOST_DISK_GB": str(20 * (FORKS + 1))},
    )
    stack = Stack(config, say=lambda _: None)
    stack.start()
    try:
        print(f"machine: {machine()}\ndate: {time.strftime('%Y-%m-%d %H:%M %Z')}\n")
        core = httpx.Client(
            base_url=config.core_url, headers={"authorization": f"Bearer {stack.admin_token}"}, timeout=300
        )

        warm: list[float] = []
        first_exec: list[float] = []
        cold: list[float] = []
        for _ in range(args.creates):
            wait_pool(stack, 2)
            started = time.perf_counter()
            sandbox = ok(core.post("/v1/sandboxes", json={}))
            warm.append(ms_since(started))
            started = time.perf_counter()
            ok(core.post(f"/v1/sandboxes/{sandbox['id']}/exec", json={"cmd": ["true"]}))
            first_exec.append(ms_since(started))
            ok(core.delete(f"/v1/sandboxes/{sandbox['id']}"))  # keep the host's room for the refill
        for _ in range(args.creates):
            started = time.perf_counter()
            sandbox = ok(core.post("/v1/sandboxes", json={"ram_mb": 512}))  # a size the pool does not hold
            cold.append(ms_since(started))
            ok(core.delete(f"/v1/sandboxes/{sandbox['id']}"))
        report("create, warm pool (core)", warm)
        report("first exec after a warm create", first_exec)
        report("create, cold (core)", cold)
        print()

        sid = ok(core.post("/v1/sandboxes", json={"ram_mb": 2048}))["id"]
        ok(
            core.post(
                f"/v1/sandboxes/{sid}/exec",
                json={
                    "cmd": ["sh", "-c", f"head -c {DATA_MB}000000 /dev/urandom > ~/data"],
                    "timeout_ms": 120_000,
                },
            )
        )
        samples: dict[str, list[float]] = {
            name: []
            for name in ("pause", "resume", "snapshot", "restore", "fork", "archive", "unarchive+start")
        }
        for _ in range(args.rounds):
            for name, verb in (("pause", "pause"), ("resume", "resume")):
                started = time.perf_counter()
                ok(core.post(f"/v1/sandboxes/{sid}/{verb}"))
                samples[name].append(ms_since(started))
            started = time.perf_counter()
            snap = ok(core.post(f"/v1/sandboxes/{sid}/snapshot"))
            samples["snapshot"].append(ms_since(started))
            started = time.perf_counter()
            ok(core.post(f"/v1/sandboxes/{sid}/restore", json={"snapshot_id": snap["id"]}))
            samples["restore"].append(ms_since(started))
            started = time.perf_counter()
            fork = ok(core.post(f"/v1/sandboxes/{sid}/fork", json={}))
            samples["fork"].append(ms_since(started))
            ok(core.delete(f"/v1/sandboxes/{fork['id']}"))
            for snapshot in ok(core.get(f"/v1/sandboxes/{sid}/snapshots"))["items"]:
                core.delete(f"/v1/snapshots/{snapshot['id']}")
            ok(core.post(f"/v1/sandboxes/{sid}/stop"))
            started = time.perf_counter()
            ok(core.post(f"/v1/sandboxes/{sid}/archive"))
            samples["archive"].append(ms_since(started))
            started = time.perf_counter()
            ok(core.post(f"/v1/sandboxes/{sid}/start"))
            samples["unarchive+start"].append(ms_since(started))
        for name, values in samples.items():
            report(f"{name} ({DATA_MB} MB written)", values)
        print()
        measure_forks(core, sid, var / "hostd" / "pool")
        ok(core.delete(f"/v1/sandboxes/{sid}"))
    finally:
        stack.remove()


if __name__ == "__main__":
    main()
