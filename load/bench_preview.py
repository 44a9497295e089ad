"""Preview URLs end to end: a client reaching a server inside a sandbox through the gateway, the
core's ``/preview`` proxy and hostd's port route, and what each hop adds.

    sudo .venv/bin/python -m load.bench_preview [--requests 1000] [--warmup 100]

It starts its own stack (bearer mode, every service one Granian worker) on spare ports, runs
``tests/stack/preview_server.py`` on port 8000 of one sandbox, and measures with its preview
token, over keep-alive connections:

* a small ``GET`` (a ~700-byte JSON echo) sequentially, sent three ways in rotation — to
  hostd's ``/sandboxes/{id}/ports/8000/http/…`` (with the host token), to the core's
  ``/preview/{id}/8000/…``, and through the gateway — so the difference of the medians is
  the core's hop and the gateway's hop (the order rotates, so drift touches all alike);
* the same ``GET`` from 16 concurrent clients, each of the three ways: requests per second;
* a 64 MiB download through the gateway: MiB/s (bodies are streamed at every hop);
* a WebSocket echo round trip (64 bytes) through the gateway, on one connection;
* a paused sandbox with ``wake_on_traffic``: the first request's latency (resume + serve).

And the hostd hop on its own (``load/preview_hostd_hop.py``): hostd's port route against a
client inside the sandbox's netns (small GET, 100 MiB download, WebSocket echo).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import httpx
from websockets.asyncio.client import connect

from cli.stack import Stack, StackConfig
from load import preview_hostd_hop
from load.bench_core import machine, pct
from tests.stack.test_preview import PORT, start_server
from tests.support import free_port, wait_for

CONCURRENCY = 16
DOWNLOAD = 64 * 2**20


def timed(send: Callable[[], httpx.Response]) -> float:
    started = time.perf_counter()
    response = send()
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"unexpected {response.status_code}: {response.text}")
    return elapsed


def hops(ways: dict[str, Callable[[], httpx.Response]], n: int, warmup: int) -> None:
    names = list(ways)
    for _ in range(warmup):
        for name in names:
            timed(ways[name])
    samples: dict[str, list[float]] = {name: [] for name in names}
    for i in range(n):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            samples[name].append(timed(ways[name]))
    print(f"small GET, sequential (n={n} each, after {warmup} warm-ups):")
    for name in names:
        print(f"  {name:28s} P50 {pct(samples[name], 0.5):6.2f} ms   P95 {pct(samples[name], 0.95):6.2f} ms")
    for inner, outer in itertools.pairwise(names):
        diff = statistics.median(o - i for o, i in zip(samples[outer], samples[inner], strict=True))
        print(f"  added by {outer!r} over {inner!r}: median of differences {diff:+.2f} ms")


async def throughput(name: str, url: str, headers: dict[str, str], seconds: float) -> None:
    done = 0

    async def client() -> None:
        nonlocal done
        async with httpx.AsyncClient(headers=headers, timeout=60) as http:
            while time.perf_counter() < deadline:
                (await http.get(url)).raise_for_status()
                done += 1

    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
    elapsed = time.perf_counter() - started
    print(f"  {name:28s} {done / elapsed:6.0f} req/s")


def download(client: httpx.Client, url: str, headers: dict[str, str], rounds: int = 3) -> None:
    rates = []
    for _ in range(rounds):
        started = time.perf_counter()
        size = 0
        with client.stream("GET", url, headers=headers) as answer:
            answer.raise_for_status()
            for chunk in answer.iter_raw():
                size += len(chunk)
        assert size == DOWNLOAD, size
        rates.append(size / 2**20 / (time.perf_counter() - started))
    print(
        f"{DOWNLOAD // 2**20} MiB download through the gateway: median {statistics.median(rates):.0f} MiB/s"
    )


async def websocket(url: str, headers: dict[str, str], n: int) -> None:
    samples = []
    async with connect(url, additional_headers=headers) as ws:
        payload = "x" * 64
        for _ in range(50):
            await ws.send(payload)
            await ws.recv()
        for _ in range(n):
            started = time.perf_counter()
            await ws.send(payload)
            await ws.recv()
            samples.append((time.perf_counter() - started) * 1000)
    p50, p95 = pct(samples, 0.5), pct(samples, 0.95)
    print(f"WebSocket echo through the gateway (n={n}): P50 {p50:.2f} ms   P95 {p95:.2f} ms")


def cpu_s(root: int) -> float:
    """CPU seconds used so far by process ``root`` and all its descendants."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, (ppid, _) in stats.items() if ppid in tree} - tree
        grew = bool(more)
        tree |= more
    total = sum(stats[pid][1] for pid in tree if pid in stats)
    return total / os.sysconf("SC_CLK_TCK")


def cpu_per_request(stack: Stack, what: str, send: Callable[[], httpx.Response], n: int) -> None:
    pids = {name: stack.pid(name) for name in ("gateway", "core", "hostd", "postgres", "redis")}
    before = {name: cpu_s(pid) for name, pid in pids.items() if pid}
    for _ in range(n):
        timed(send)
    after = {name: cpu_s(pid) for name, pid in pids.items() if pid}
    shown = "   ".join(f"{name} {(after[name] - before[name]) / n * 1000:.2f}" for name in before)
    print(f"CPU ms per {what} through the gateway (n={n}): {shown}")


def wake(org: httpx.Client, anonymous: httpx.Client, sid: str, path: str, headers: dict[str, str]) -> None:
    org.put(f"/v1/sandboxes/{sid}/preview", json={"wake_on_traffic": True}).raise_for_status()
    samples = []
    for _ in range(5):
        org.post(f"/v1/sandboxes/{sid}/pause").raise_for_status()
        samples.append(timed(lambda: anonymous.get(path, headers=headers)))
    shown = ", ".join(f"{s:.0f}" for s in samples)
    print(f"first request to a paused sandbox with wake_on_traffic (n=5): {shown} ms")


async def host_route(database_url: str) -> tuple[str, str]:
    db = await asyncpg.connect(database_url)
    try:
        row = await db.fetchrow("SELECT api_url, api_token FROM hosts LIMIT 1")
    finally:
        await db.close()
    return row["api_url"], row["api_token"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="per way, sequential")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0, help="of the concurrent run")
    args = parser.parse_args()

    config = StackConfig(
        var_dir=Path(tempfile.mkdtemp(prefix="dnah-bench-preview-")),
        gateway_port=free_port(),
        core_port=free_port(),
        hostd_port=free_port(),
        ssh_port=free_port(),
        bridge="dnahbp",
        subnet="10.217.12.0/24",
        cgroup="dnahbp",
        host_name="bench-preview",
        egress="none",
    )
    stack = Stack(config, say=lambda _: None)
    stack.start()
    try:
        print(f"machine: {machine()}\ndate: {time.strftime('%Y-%m-%d %H:%M %Z')}")
        print(f"load average at start: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
        print("stack: bearer mode, core/hostd/gateway one Granian worker each, not pinned\n")
        admin = {"authorization": f"Bearer {stack.admin_token}"}
        with (
            httpx.Client(base_url=config.gateway_url, headers=admin, timeout=60) as org,
            httpx.Client(base_url=config.gateway_url, timeout=60) as gateway,
            httpx.Client(base_url=config.core_url, timeout=60) as core,
        ):
            sid = org.post("/v1/sandboxes", json={}).raise_for_status().json()["id"]
            try:
                start_server(org, sid, PORT)
                token = {
                    "x-daytona-preview-token": org.get(f"/sandbox/{sid}/ports/{PORT}/preview-url").json()[
                        "token"
                    ]
                }
                path = f"/preview/{sid}/{PORT}/echo"
                wait_for(lambda: gateway.get(path, headers=token).status_code == 200, what="the server")
                api_url, host_token = asyncio.run(host_route(stack.database_url))
                host_auth = {"authorization": f"Bearer {host_token}"}
                with httpx.Client(base_url=api_url, headers=host_auth, timeout=60) as hostd:
                    hops(
                        {
                            "hostd's port route": lambda: hostd.get(
                                f"/sandboxes/{sid}/ports/{PORT}/http/echo"
                            ),
                            "the core's /preview": lambda: core.get(path, headers=token),
                            "the gateway": lambda: gateway.get(path, headers=token),
                        },
                        args.requests,
                        args.warmup,
                    )
                netns = Path("/run/netns") / f"{config.bridge}@{sid}"
                hop = preview_hostd_hop.run(api_url, host_token, sid, netns, PORT, args.requests, args.warmup)
                asyncio.run(hop)
                print(f"small GET, {CONCURRENCY} concurrent clients for {args.seconds:.0f} s:")
                for name, url, headers in (
                    ("hostd's port route", f"{api_url}/sandboxes/{sid}/ports/{PORT}/http/echo", host_auth),
                    ("the core's /preview", f"{config.core_url}{path}", token),
                    ("the gateway", f"{config.gateway_url}{path}", token),
                ):
                    asyncio.run(throughput(name, url, headers, args.seconds))
                download(gateway, f"/preview/{sid}/{PORT}/bytes/{DOWNLOAD}", token)
                ws_url = config.gateway_url.replace("http://", "ws://") + f"/preview/{sid}/{PORT}/ws"
                asyncio.run(websocket(ws_url, token, args.requests))
                cpu_per_request(stack, "preview GET", lambda: gateway.get(path, headers=token), 2000)
                # the same for an API request, as a yardstick on the same machine at the same load
                cpu_per_request(stack, "GET /v1/sandboxes", lambda: org.get("/v1/sandboxes"), 2000)
                wake(org, gateway, sid, path, token)
            finally:
                org.delete(f"/v1/sandboxes/{sid}").raise_for_status()
    finally:
        stack.remove()


if __name__ == "__main__":
    main()
