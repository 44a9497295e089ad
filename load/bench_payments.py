"""Payment-mode numbers: how many 402s one gateway worker issues per second (optionally side by
side with mppx's own payment proxy), and where the time of a paid request goes (verify, credit
check, broadcast, record, forward).

    sudo .venv/bin/python -m load.bench_payments [--peer mppx] [--seconds 10] [--warmup 3]
        [--rounds 3] [--connections 32] [--paid 30]

It starts what the test suite starts: a devnet, the whole stack (root: it runs hostd), and a
payment-mode gateway (one Granian worker) in front of the stack's core. ``--peer mppx`` also
starts ``load/peers/mppx/server.mjs`` (mppx/proxy on node:http, installed by
``load/peers/mppx/install.sh``) charging the same price for the same route.

The 402 load is ``POST /sandbox`` with the body ``{}`` (the same bytes for every server) from a
minimal keep-alive HTTP/1.1 client on raw sockets, run in its own process. With ``taskset``
the servers are pinned to CPU 0 and the load client to CPU 1, so each server gets one core
and the client never competes with it. Every round is a warm-up and then a measured run per
server, servers interleaved; the table shows the medians of the rounds.

Run it on a quiet machine: the numbers mean nothing while anything else is busy.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib.metadata
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from load.bench_core import machine

REPO = Path(__file__).resolve().parents[1]
PEERS = REPO / "load" / "peers"

REQUEST = (
    b"POST /sandbox HTTP/1.1\r\nHost: bench\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
)
"""What every server under test gets: ``POST /sandbox`` ($0.01 in the shipped table), body ``{}``."""

SERVER_CPU = "0"
CLIENT_CPU = "1"


# the load client (runs in its own process: ``python -m load.bench_payments drive ...``) ---------


async def _read_response(reader: asyncio.StreamReader) -> tuple[bytes, int]:
    """One HTTP/1.1 response (Content-Length or chunked); returns its head and its size."""
    head = await reader.readuntil(b"\r\n\r\n")
    size = len(head)
    length = -1
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            line = await reader.readuntil(b"\r\n")
            chunk = int(line.split(b";")[0], 16)
            size += len(line) + chunk + 2
            await reader.readexactly(chunk + 2)
            if chunk == 0:
                break
    elif length > 0:
        await reader.readexactly(length)
        size += length
    return head, size


async def _connection(
    host: str, port: int, stop: float, latencies: list[float], record: bool, seen: dict[str, int]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    clock = time.perf_counter
    try:
        while time.monotonic() < stop:
            started = clock()
            writer.write(REQUEST)
            head, size = await _read_response(reader)
            elapsed = clock() - started
            if not head.startswith(b"HTTP/1.1 402"):
                raise RuntimeError(head.decode("latin-1"))
            if record:
                latencies.append(elapsed)
            seen["bytes"] = size
    finally:
        writer.close()


async def _drive(host: str, port: int, seconds: float, connections: int, record: bool) -> dict[str, Any]:
    latencies: list[float] = []
    seen: dict[str, int] = {}
    started = time.monotonic()
    stop = started + seconds
    await asyncio.gather(
        *(_connection(host, port, stop, latencies, record, seen) for _ in range(connections))
    )
    wall = time.monotonic() - started
    result: dict[str, Any] = {"responses": len(latencies), "seconds": wall, "bytes": seen.get("bytes", 0)}
    if record and latencies:
        ordered = sorted(latencies)
        result.update(
            rate=len(ordered) / wall,
            p50_ms=ordered[len(ordered) // 2] * 1000,
            p99_ms=ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        )
    return result


def drive_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="load.bench_payments drive")
    parser.add_argument("url")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--warmup", action="store_true", help="do not record latencies")
    args = parser.parse_args(argv)
    host, port = args.url.removeprefix("http://").split(":")
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    result = runner(_drive(host, int(port), args.seconds, args.connections, not args.warmup))
    print(json.dumps(result))
    return 0


# pinning and CPU accounting -----------------------------------------------------------------------


TASKSET = shutil.which("taskset")


def pin(pids: list[int], cpus: str) -> None:
    if TASKSET:
        for pid in pids:
            subprocess.run([TASKSET, "-a", "-p", "-c", cpus, str(pid)], check=True, capture_output=True)


def all_cpus() -> str:
    return f"0-{(os.cpu_count() or 1) - 1}"


def cpu_seconds(pids: list[int]) -> float:
    """User + system time of ``pids`` (all their threads) so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def descendants(pid: int) -> list[int]:
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            with suppress(FileNotFoundError):
                queue.extend(int(child) for child in (task / "children").read_text().split())
    return found


# the servers under test -------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    url: str
    root_pid: int
    runs: list[dict[str, Any]] = field(default_factory=list)

    def pids(self) -> list[int]:
        return descendants(self.root_pid)


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}:\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout_s} s:\n{log.read_text()}")


def install_mppx() -> Path:
    """The installed peer packages (``install.sh``), with ``server.mjs`` copied beside them."""
    if not shutil.which("node"):
        raise SystemExit("--peer mppx needs Node (node 20+) on PATH")
    out = subprocess.run(
        ["bash", str(PEERS / "mppx" / "install.sh")], check=True, stdout=subprocess.PIPE, text=True
    )
    installed = Path(out.stdout.strip().splitlines()[-1])
    shutil.copy(PEERS / "mppx" / "server.mjs", installed / "server.mjs")
    return installed


@contextmanager
def mppx_server(installed: Path, work: Path, upstream: str, rpc_url: str) -> Iterator[Target]:
    from tests.support import free_port

    port = free_port()
    log = work / "mppx-peer.log"
    argv = ["node", "server.mjs", str(port), upstream, rpc_url]
    if TASKSET:
        argv = [TASKSET, "-c", SERVER_CPU, *argv]
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, cwd=installed, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        wait_for_port(port, proc, log)
        yield Target("mppx 0.11 (mppx/proxy, node:http)", f"http://127.0.0.1:{port}", proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_client(url: str, seconds: float, connections: int, warmup: bool) -> dict[str, Any]:
    argv = [sys.executable, "-m", "load.bench_payments", "drive", url]
    argv += ["--seconds", str(seconds), "--connections", str(connections)]
    if warmup:
        argv.append("--warmup")
    if TASKSET:
        argv = [TASKSET, "-c", CLIENT_CPU, *argv]
    out = subprocess.run(argv, cwd=REPO, check=True, stdout=subprocess.PIPE, text=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def measure(target: Target, args: argparse.Namespace) -> dict[str, Any]:
    run_client(target.url, args.warmup, args.connections, warmup=True)
    time.sleep(0.5)
    pids = target.pids()
    before = cpu_seconds(pids)
    result = run_client(target.url, args.seconds, args.connections, warmup=False)
    cpu = cpu_seconds(pids) - before
    result["cpu_share"] = cpu / result["seconds"]
    result["cpu_us_per_request"] = cpu / max(1, result["responses"]) * 1e6
    time.sleep(0.5)
    return result


def describe_402(url: str) -> str:
    """One line on what a server's 402 says (amount, currency, chain), to check they agree."""
    import httpx

    response = httpx.post(url + "/sandbox", content=b"{}", headers={"content-type": "application/json"})
    assert response.status_code == 402, response.text
    header = response.headers["www-authenticate"]
    encoded = header.split('request="', 1)[1].split('"', 1)[0]
    request = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    return (
        f"amount {request['amount']}, currency {request['currency'][:10]}…, "
        f"chainId {request.get('methodDetails', {}).get('chainId')}, "
        f"{len(response.headers['www-authenticate'])} B challenge, {len(response.content)} B body"
    )


def versions(installed: Path | None) -> str:
    found = []
    for dist in ("pympp", "granian", "uvloop", "litestar"):
        with suppress(importlib.metadata.PackageNotFoundError):
            found.append(f"{dist} {importlib.metadata.version(dist)}")
    if installed is not None:
        node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
        found.append(f"node {node}")
        for package in ("mppx", "viem", "hono", "@hono/node-server", "urlpattern-polyfill"):
            meta = installed / "node_modules" / package / "package.json"
            if meta.exists():
                found.append(f"{package} {json.loads(meta.read_text())['version']}")
    return ", ".join(found)


def median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def print_402_table(targets: list[Target], args: argparse.Namespace) -> None:
    print(
        f"\n402 issuance, POST /sandbox {{}}, {args.connections} keep-alive connections, "
        f"{args.warmup:g} s warm-up + {args.seconds:g} s measured, {args.rounds} rounds (medians):"
    )
    print(
        f"  {'server':40s} {'req/s':>8s} {'P50 ms':>8s} {'P99 ms':>8s} {'CPU':>6s} "
        f"{'µs/req':>7s}   req/s per round"
    )
    for target in targets:
        rates = " / ".join(f"{run['rate']:.0f}" for run in target.runs)
        print(
            f"  {target.name:40s} {median(target.runs, 'rate'):8.0f} {median(target.runs, 'p50_ms'):8.2f} "
            f"{median(target.runs, 'p99_ms'):8.2f} {median(target.runs, 'cpu_share'):6.0%} "
            f"{median(target.runs, 'cpu_us_per_request'):7.0f}   {rates}"
        )
    if len(targets) == 2:
        ours, peer = (median(t.runs, "rate") for t in targets)
        print(f"  ratio (dnah / {targets[1].name.split()[0]}): {ours / peer:.2f}×")


# paid requests ------------------------------------------------------------------------------------


PAID_WARMUP = 3
"""Paid requests made and thrown away first (connections, imports, the devnet's caches)."""


async def paid_requests(gateway_url: str, chain: Any, count: int) -> dict[str, list[float]]:
    """``count`` sequential paid ``GET /sandbox`` (after ``PAID_WARMUP`` more), each in three
    timed legs: the unpaid request (402), the client making the credential (pympp signs; it
    asks the devnet for chain id, gas price and a gas estimate), and the paid retry (gateway
    verify, credit check, broadcast, record, forward)."""
    import httpx

    from tests.gateway.payment_fixtures import challenges, new_payer

    payer = new_payer(chain)
    legs: dict[str, list[float]] = {"402": [], "sign": [], "paid": [], "total": []}
    async with httpx.AsyncClient(base_url=gateway_url, timeout=60) as client:
        for n in range(PAID_WARMUP + count):
            started = time.perf_counter()
            unpaid = await client.get("/sandbox")
            challenged = time.perf_counter()
            authorization = await payer.authorization(challenges(unpaid)[0])
            signed = time.perf_counter()
            paid = await client.get("/sandbox", headers={"authorization": authorization})
            done = time.perf_counter()
            assert paid.status_code == 200, paid.text
            assert "payment-receipt" in paid.headers, paid.headers
            if n < PAID_WARMUP:
                continue
            legs["402"].append((challenged - started) * 1000)
            legs["sign"].append((signed - challenged) * 1000)
            legs["paid"].append((done - signed) * 1000)
            legs["total"].append((done - started) * 1000)
    return legs


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    return f"P50 {statistics.median(ordered):7.2f} ms   P90 {p90:7.2f} ms"


def print_paid(gateway: Any, chain: Any, count: int) -> None:
    legs = asyncio.run(paid_requests(gateway.url, chain, count))
    events = gateway.events("payment")[-count:]
    print(f"\npaid GET /sandbox ($0.0001, pympp client, devnet), {count} sequential requests:")
    print(f"  {'client: whole paid call':34s} {summary(legs['total'])}")
    print(f"  {'client: unpaid request → 402':34s} {summary(legs['402'])}")
    print(f"  {'client: make credential (sign)':34s} {summary(legs['sign'])}")
    print(f"  {'client: paid retry → 200':34s} {summary(legs['paid'])}")
    for key in ("verify_ms", "credit_ms", "broadcast_ms", "record_ms", "forward_ms"):
        values = [float(e[key]) for e in events if key in e]
        if values:
            print(f"  {'  gateway ' + key.removesuffix('_ms'):34s} {summary(values)}")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "drive":
        return drive_main(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", choices=["mppx"], help="also measure this peer's 402 issuance")
    parser.add_argument("--seconds", type=float, default=10.0, help="each measured run")
    parser.add_argument("--warmup", type=float, default=3.0, help="the warm-up before each run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--paid", type=int, default=30, help="sequential paid requests (0: none)")
    args = parser.parse_args()

    from cli.stack import Stack, StackConfig
    from tests.gateway.payment_fixtures import start_devnet, start_payment_gateway
    from tests.support import free_port

    busy = subprocess.run(["pgrep", "-f", "pytest"], capture_output=True, text=True).stdout.split()
    if busy:
        print(f"warning: pytest is running (pids {', '.join(busy)}): these numbers will be noise")
    installed = install_mppx() if args.peer == "mppx" else None
    print(f"machine: {machine()}\ndate: {time.strftime('%Y-%m-%d %H:%M %Z')}")
    print(f"load average at start: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    print(f"versions: {versions(installed)}")
    print(
        f"pinning: servers on CPU {SERVER_CPU}, load client on CPU {CLIENT_CPU}"
        if TASKSET
        else "pinning: none (no taskset): server and client share the cores"
    )

    work = Path(tempfile.mkdtemp(prefix="dnah-bench-pay-"))
    stack = Stack(
        StackConfig(
            var_dir=work / "stack",
            gateway_port=free_port(),
            core_port=free_port(),
            hostd_port=free_port(),
            ssh_port=free_port(),
            bridge="dnahbp",
            subnet="10.217.9.0/24",
            cgroup="dnahbp",
            host_name="bench-pay",
            egress="none",  # benchmark sandboxes reach nothing beyond the machine
        ),
        say=lambda _: None,
    )
    chain = start_devnet(work)
    stack.start()
    try:
        # 402 issuance flat out from one address: the address rate limit (docs/reliability.md,
        # "Rate limits") would measure itself, and mppx's proxy has none
        gateway = start_payment_gateway(stack, chain.url, work, DNAH_RATELIMIT_ADDRESS="0")
        try:
            ours = Target("dnah gateway (1 Granian worker)", gateway.url, gateway.server.proc.pid)
            with peer_server(args, installed, work, stack.config.core_url, chain.url) as peer:
                targets = [ours] if peer is None else [ours, peer]
                pin([pid for t in targets for pid in t.pids()], SERVER_CPU)
                print("what each server's 402 says:")
                for target in targets:
                    print(f"  {target.name}: {describe_402(target.url)}")
                for _ in range(args.rounds):
                    for target in targets:
                        target.runs.append(measure(target, args))
                print_402_table(targets, args)
            pin(ours.pids(), all_cpus())

            if args.paid:
                print_paid(gateway, chain, args.paid)
        finally:
            gateway.stop()
    finally:
        stack.remove()
        chain.stop()
    return 0


@contextmanager
def peer_server(
    args: argparse.Namespace, installed: Path | None, work: Path, core_url: str, rpc_url: str
) -> Iterator[Target | None]:
    if args.peer != "mppx" or installed is None:
        yield None
        return
    with mppx_server(installed, work, core_url, rpc_url) as target:
        yield target


if __name__ == "__main__":
    sys.exit(main())
