"""Foundation benchmark: cold create, exec round trip (via the gateway and direct to the core),
and create+delete throughput at concurrency 1 and 20.

It starts its own stack (the same ``cli.stack.Stack`` as ``make up``) on spare ports, so it
can run beside a live stack, and prints P50/P95 per measurement plus the machine it ran on.

    make bench                     # defaults
    make bench ARGS="--execs 2000"
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from cli.stack import Stack, StackConfig


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(name: str, samples_ms: list[float]) -> None:
    print(
        f"{name:<34} n={len(samples_ms):<5} P50 {pct(samples_ms, 0.5):8.2f} ms   "
        f"P95 {pct(samples_ms, 0.95):8.2f} ms   mean {statistics.fmean(samples_ms):8.2f} ms"
    )


def timed(fn: Callable[[], httpx.Response], expect: int) -> float:
    started = time.perf_counter()
    resp = fn()
    elapsed = (time.perf_counter() - started) * 1000
    if resp.status_code != expect:
        raise RuntimeError(f"unexpected {resp.status_code}: {resp.text}")
    return elapsed


async def throughput(base: str, token: str, concurrency: int, total: int) -> float:
    """create+delete pairs per second with ``concurrency`` clients in flight."""
    headers = {"authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120, limits=limits) as client:
        remaining = total

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                made = await client.post("/v1/sandboxes", json={})
                made.raise_for_status()
                gone = await client.delete(f"/v1/sandboxes/{made.json()['id']}")
                gone.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return total / (time.perf_counter() - started)


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem_gb:.0f} GiB, kernel {platform.release()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--creates", type=int, default=30)
    parser.add_argument("--execs", type=int, default=1000)
    parser.add_argument("--pairs", type=int, default=40, help="create+delete pairs per concurrency level")
    args = parser.parse_args()

    var = Path(tempfile.mkdtemp(prefix="dnah-bench-"))
    config = StackConfig(
        var_dir=var,
        gateway_port=24000,
        core_port=24100,
        hostd_port=24200,
        ssh_port=24250,
        bridge="dnahb0",
        subnet="10.217.0.0/24",
        cgroup="dnahb",
        host_name="bench-host",
        egress="none",  # benchmark sandboxes reach nothing beyond the machine
        extra_env={"DNAH_WARM_POOL": ""},  # cold creates are what this measures
    )
    stack = Stack(config, say=lambda _: None)
    stack.start()
    try:
        print(f"machine: {machine()}\ndate: {time.strftime('%Y-%m-%d %H:%M %Z')}\n")
        headers = {"authorization": f"Bearer {stack.admin_token}"}
        gw = httpx.Client(base_url=config.gateway_url, headers=headers, timeout=60)
        core = httpx.Client(base_url=config.core_url, headers=headers, timeout=60)

        creates: list[float] = []
        for _ in range(args.creates + 3):
            started = time.perf_counter()
            resp = core.post("/v1/sandboxes", json={})
            creates.append((time.perf_counter() - started) * 1000)
            resp.raise_for_status()
            core.delete(f"/v1/sandboxes/{resp.json()['id']}").raise_for_status()
        report("cold create (core, sequential)", creates[3:])

        sid = core.post("/v1/sandboxes", json={}).json()["id"]
        body = {"cmd": ["true"]}
        for name, client in (("exec round trip via gateway", gw), ("exec round trip direct to core", core)):
            for _ in range(50):
                timed(lambda c=client: c.post(f"/v1/sandboxes/{sid}/exec", json=body), 200)
            report(
                name,
                [
                    timed(lambda c=client: c.post(f"/v1/sandboxes/{sid}/exec", json=body), 200)
                    for _ in range(args.execs)
                ],
            )

        core.delete(f"/v1/sandboxes/{sid}").raise_for_status()

        for concurrency in (1, 20):
            rate = asyncio.run(throughput(config.gateway_url, stack.admin_token, concurrency, args.pairs))
            print(f"create+delete throughput c={concurrency:<3}      {rate:8.1f} pairs/s")
    finally:
        stack.remove()


if __name__ == "__main__":
    main()
