"""What the gateway hop costs in bearer mode: the same small authenticated requests sent
straight to the core and through the gateway, sequentially, over keep-alive connections.

    sudo .venv/bin/python -m load.bench_gateway_hop [--requests 2000] [--warmup 200]

It starts its own stack (the one ``make up`` starts, bearer mode, every service one Granian
worker) on spare ports and measures two requests with the admin key:

* ``GET /v1/sandboxes`` — a small list (the core asks Postgres once);
* ``POST /v1/sandboxes/{id}/exec`` with ``{"cmd": ["true"]}`` — a round trip to the sandbox.

Direct and gateway requests alternate (the order flips every pair), so drift on the machine
touches both alike. It prints P50/P95 of each and the added latency: the difference of the
percentiles, and the median of the per-pair differences.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from cli.stack import Stack, StackConfig
from load.bench_core import machine, pct
from tests.support import free_port


def timed(send: Callable[[], httpx.Response]) -> float:
    started = time.perf_counter()
    response = send()
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"unexpected {response.status_code}: {response.text}")
    return elapsed


def compare(
    name: str, direct: Callable[[], httpx.Response], via: Callable[[], httpx.Response], n: int, warmup: int
) -> None:
    for _ in range(warmup):
        timed(direct)
        timed(via)
    core_ms: list[float] = []
    gateway_ms: list[float] = []
    for i in range(n):
        if i % 2:
            core_ms.append(timed(direct))
            gateway_ms.append(timed(via))
        else:
            gateway_ms.append(timed(via))
            core_ms.append(timed(direct))
    paired = statistics.median(g - c for g, c in zip(gateway_ms, core_ms, strict=True))
    print(f"{name} (n={n} each, after {warmup} warm-ups):")
    for label, samples in (("direct to the core", core_ms), ("through the gateway", gateway_ms)):
        print(f"  {label:22s} P50 {pct(samples, 0.5):6.2f} ms   P95 {pct(samples, 0.95):6.2f} ms")
    print(
        f"  {'added by the gateway':22s} P50 {pct(gateway_ms, 0.5) - pct(core_ms, 0.5):+6.2f} ms   "
        f"P95 {pct(gateway_ms, 0.95) - pct(core_ms, 0.95):+6.2f} ms   "
        f"(median of pair differences {paired:+.2f} ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="per route and path")
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()

    config = StackConfig(
        var_dir=Path(tempfile.mkdtemp(prefix="dnah-bench-hop-")),
        gateway_port=free_port(),
        core_port=free_port(),
        hostd_port=free_port(),
        ssh_port=free_port(),
        bridge="dnahbh",
        subnet="10.217.10.0/24",
        cgroup="dnahbh",
        host_name="bench-hop",
        egress="none",  # benchmark sandboxes reach nothing beyond the machine
    )
    stack = Stack(config, say=lambda _: None)
    stack.start()
    try:
        print(f"machine: {machine()}\ndate: {time.strftime('%Y-%m-%d %H:%M %Z')}")
        print(f"load average at start: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
        print("stack: bearer mode, core/hostd/gateway one Granian worker each, not pinned\n")
        headers = {"authorization": f"Bearer {stack.admin_token}"}
        with (
            httpx.Client(base_url=config.core_url, headers=headers, timeout=60) as core,
            httpx.Client(base_url=config.gateway_url, headers=headers, timeout=60) as gateway,
        ):
            sid = core.post("/v1/sandboxes", json={}).raise_for_status().json()["id"]
            try:
                compare(
                    "GET /v1/sandboxes",
                    lambda: core.get("/v1/sandboxes"),
                    lambda: gateway.get("/v1/sandboxes"),
                    args.requests,
                    args.warmup,
                )
                body = {"cmd": ["true"]}
                compare(
                    "POST /v1/sandboxes/{id}/exec true",
                    lambda: core.post(f"/v1/sandboxes/{sid}/exec", json=body),
                    lambda: gateway.post(f"/v1/sandboxes/{sid}/exec", json=body),
                    args.requests,
                    args.warmup,
                )
            finally:
                core.delete(f"/v1/sandboxes/{sid}").raise_for_status()
    finally:
        stack.remove()


if __name__ == "__main__":
    main()
