"""The hostd hop of preview traffic: hostd's port routes against a client inside the netns.

Part of ``load/bench_preview.py`` (which starts the stack and the server and calls ``run``),
and runnable on its own, with hostd alone (a stand-in core, the OCI runtime, one sandbox):

    sudo .venv/bin/python -m load.preview_hostd_hop [--requests 1000] [--warmup 100]

The baseline is the best any client of the server could do: a connection made inside the
sandbox's netns by the benchmark itself, exactly as hostd makes its own (``hosts/ports/netns``,
a new connection per request, HTTP/1.1 by httpcore), so the difference is what hostd's hop
adds: the client's request to hostd, hostd's routing and checks, and the copying.

* a small ``GET``, sequential, hostd and direct in rotation (so drift touches both alike):
  P50/P95 each and the median of the paired differences, with hostd's ``GET /health`` in the
  rotation as the floor of any request to hostd;
* a 100 MiB download, hostd and direct: MiB/s (median of 3);
* a WebSocket echo round trip (64 bytes, one connection), hostd and direct: P50/P95.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Network
from pathlib import Path

import httpcore
import httpx
from websockets.asyncio.client import connect

from hosts.config import load_config
from hosts.ports import netns
from hosts.ports.http import SocketStream
from hosts.runtime.base import PortEndpoint, SandboxRuntime
from hosts.runtime.factory import make_runtime
from hosts.templates import TemplateStore
from load.bench_core import machine, pct

DOWNLOAD = 100 * 2**20


async def _direct_get(endpoint: PortEndpoint, port: int, target: str) -> tuple[int, int]:
    """(status, body bytes) of one GET over a new connection inside the netns."""
    sock = await netns.connect(endpoint, port)
    origin = httpcore.Origin(b"http", endpoint.address.encode(), port)
    connection = httpcore.AsyncHTTP11Connection(origin, SocketStream(sock))
    try:
        url = httpcore.URL(scheme=b"http", host=endpoint.address.encode(), port=port, target=target.encode())
        host = [(b"host", f"{endpoint.address}:{port}".encode())]
        response = await connection.handle_async_request(httpcore.Request(b"GET", url, headers=host))
        size = 0
        try:
            async for chunk in response.stream:  # type: ignore[union-attr]
                size += len(chunk)
        finally:
            await response.aclose()
        return response.status, size
    finally:
        await connection.aclose()


async def _hostd_get(hostd: httpx.AsyncClient, path: str) -> tuple[int, int]:
    size = 0
    async with hostd.stream("GET", path) as response:
        async for chunk in response.aiter_raw():
            size += len(chunk)
    return response.status_code, size


async def _timed(call: Callable[[], Awaitable[tuple[int, int]]]) -> float:
    started = time.perf_counter()
    status, _ = await call()
    elapsed = (time.perf_counter() - started) * 1000
    if status != 200:
        raise RuntimeError(f"unexpected {status}")
    return elapsed


async def _echo_round_trips(url: str, n: int, **kwargs: object) -> list[float]:
    samples = []
    async with connect(url, compression=None, **kwargs) as ws:  # type: ignore[arg-type]
        payload = "x" * 64
        for i in range(n + 50):
            started = time.perf_counter()
            await ws.send(payload)
            await ws.recv()
            if i >= 50:
                samples.append((time.perf_counter() - started) * 1000)
    return samples


def _granian_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of granian's processes under ``root`` (hostd's worker)."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if b"granian" not in (entry / "cmdline").read_bytes():
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        ticks[int(entry.name)] = int(fields[11]) + int(fields[12])
    ours = {root}
    while more := {pid for pid, parent in parents.items() if parent in ours} - ours:
        ours |= more
    return sum(ticks.get(pid, 0) for pid in ours) / os.sysconf("SC_CLK_TCK")


def _line(name: str, samples: list[float]) -> str:
    return f"  {name:26s} P50 {pct(samples, 0.5):6.2f} ms   P95 {pct(samples, 0.95):6.2f} ms"


async def run(
    api_url: str,
    host_token: str,
    sandbox_id: str,
    netns_path: Path,
    port: int,
    n: int,
    warmup: int,
    hostd_pid: int | None = None,
) -> None:
    """Print the hostd hop's numbers for the server on ``port`` of ``sandbox_id``; with
    ``hostd_pid`` (granian's), also hostd's CPU time for a download (what the machine's load
    does not change)."""
    endpoint = PortEndpoint(netns=netns_path, address="127.0.0.1")
    prefix = f"/sandboxes/{sandbox_id}/ports/{port}"
    auth = {"authorization": f"Bearer {host_token}"}
    async with httpx.AsyncClient(base_url=api_url, headers=auth, timeout=60) as hostd:
        ways: dict[str, Callable[[], Awaitable[tuple[int, int]]]] = {
            "direct, inside the netns": lambda: _direct_get(endpoint, port, "/echo"),
            "through hostd": lambda: _hostd_get(hostd, f"{prefix}/http/echo"),
            "hostd's GET /health": lambda: _hostd_get(hostd, "/health"),
        }
        names = list(ways)
        for _ in range(warmup):
            for name in names:
                await _timed(ways[name])
        samples: dict[str, list[float]] = {name: [] for name in names}
        for i in range(n):
            for name in names[i % 3 :] + names[: i % 3]:
                samples[name].append(await _timed(ways[name]))
        print(f"hostd hop, small GET, sequential (n={n} each, new connection to the server each time):")
        for name in names:
            print(_line(name, samples[name]))
        added = statistics.median(h - d for h, d in zip(samples[names[1]], samples[names[0]], strict=True))
        print(f"  added by hostd: median of differences {added:+.2f} ms")
        names = names[:2]

        rates: dict[str, list[float]] = {name: [] for name in names}
        downloads = {
            names[0]: lambda: _direct_get(endpoint, port, f"/bytes/{DOWNLOAD}"),
            names[1]: lambda: _hostd_get(hostd, f"{prefix}/http/bytes/{DOWNLOAD}"),
        }
        for _ in range(3):
            for name in names:
                started = time.perf_counter()
                status, size = await downloads[name]()
                if (status, size) != (200, DOWNLOAD):
                    raise RuntimeError(f"download {name}: {status}, {size} bytes")
                rates[name].append(size / 2**20 / (time.perf_counter() - started))
        print(f"hostd hop, {DOWNLOAD // 2**20} MiB download (median of 3):")
        for name in names:
            print(f"  {name:26s} {statistics.median(rates[name]):6.0f} MiB/s")
        if hostd_pid is not None:
            before = _granian_cpu_seconds(hostd_pid)
            await downloads[names[1]]()
            used = _granian_cpu_seconds(hostd_pid) - before
            print(f"  hostd's CPU time for one download through it: {used:.2f} s")

    direct_sock = await netns.connect(endpoint, port)
    direct = await _echo_round_trips(f"ws://127.0.0.1:{port}/ws", n, sock=direct_sock)
    ws_url = api_url.replace("http://", "ws://") + f"{prefix}/http/ws"
    through = await _echo_round_trips(ws_url, n, additional_headers=auth)
    print(f"hostd hop, WebSocket echo round trip (64 bytes, n={n}, one connection):")
    print(_line(names[0], direct))
    print(_line(names[1], through))


def main() -> None:
    """hostd alone, as the hostd test suites run it, with ``tests/stack/preview_server.py``
    on port 8000 of one sandbox."""
    from tests.hosts._hostd_fixtures import (
        HostdProcess,
        KernelNames,
        RecordingCore,
        free_port,
        hostd_env,
        wait_for,
    )
    from tests.hosts.conftest import BUILD_SCRIPT, TEMPLATE_CACHE
    from tests.stack.test_preview import PORT, SERVER
    from tests.support import exclusive_index

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    args = parser.parse_args()
    templates = TemplateStore(TEMPLATE_CACHE, BUILD_SCRIPT)
    templates.ensure()
    core = RecordingCore(free_port())
    core.start()
    with exclusive_index("bench-ports") as n, tempfile.TemporaryDirectory(prefix="dnah-bench-ports-") as var:
        names = KernelNames(bridge=f"dnahbh{n}", subnet=IPv4Network(f"10.227.{n}.0/24"), cgroup=f"dnahbh{n}")
        port = free_port()
        env = hostd_env(
            core_url=core.url, port=port, var_dir=Path(var), template_cache=templates.cache_dir, names=names
        )
        hostd = HostdProcess(env, port, Path(var) / "hostd.log")
        hostd.start()
        try:
            token = wait_for(lambda: core.registrations, timeout=30, what="a registration")[-1].api_token
            auth = {"authorization": f"Bearer {token}"}
            sid = "bench-ports"
            with httpx.Client(base_url=hostd.url, headers=auth, timeout=60) as http:
                spec = {"id": sid, "template": "dnah-base", "cpu": 1, "ram_mb": 512, "disk_gb": 1}
                http.post("/sandboxes", json=spec).raise_for_status()
                try:
                    http.put(
                        f"/sandboxes/{sid}/files", params={"path": "/tmp/server.py"}, content=SERVER
                    ).raise_for_status()
                    script = f"setsid python3 /tmp/server.py {PORT} >/dev/null 2>&1 </dev/null &"
                    http.post(f"/sandboxes/{sid}/exec", json={"cmd": ["sh", "-c", script]}).raise_for_status()
                    probe = f"/sandboxes/{sid}/ports/{PORT}/http/echo"
                    wait_for(lambda: http.get(probe).status_code == 200, timeout=30, what="the server")
                    print(f"machine: {machine()}\ndate: {time.strftime('%Y-%m-%d %H:%M %Z')}")
                    print(f"load average at start: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
                    print("hostd alone: one Granian worker, OCI runtime, not pinned\n")
                    netns_path = Path("/run/netns") / f"{names.bridge}@{sid}"
                    assert hostd._proc is not None
                    hop = run(
                        hostd.url, token, sid, netns_path, PORT, args.requests, args.warmup, hostd._proc.pid
                    )
                    asyncio.run(hop)
                finally:
                    http.delete(f"/sandboxes/{sid}")
        finally:
            hostd.stop()
            core.close()
            runtime = make_runtime(load_config(env), templates)
            asyncio.run(_remove_host_setup(runtime))


async def _remove_host_setup(runtime: SandboxRuntime) -> None:
    await runtime.recover()
    await runtime.remove_host_setup()


if __name__ == "__main__":
    main()
