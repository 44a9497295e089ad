"""Payment-mode numbers: how many 402s one gateway worker issues per second, and where the time
of a paid request goes (verify, credit check, broadcast, record, forward).

    sudo .venv/bin/python -m tests.gateway.bench_payments [--seconds 10] [--connections 32] [--paid 30]

It starts what the test suite starts: a devnet, the whole stack (root: it runs hostd), and a
payment-mode gateway (one Granian worker) in front of the stack's core. The 402 load comes
from a minimal keep-alive HTTP/1.1 client on raw sockets (no ``wrk`` here), so the client
costs far less CPU than the worker it measures; on a 2-core machine they still share it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from cli.stack import Stack, StackConfig
from tests.gateway.payment_fixtures import Devnet, new_payer, start_devnet, start_payment_gateway
from tests.support import free_port

REQUESTS = {
    "GET /sandbox (no body)": b"GET /sandbox HTTP/1.1\r\nHost: bench\r\n\r\n",
    "POST /sandbox ({} digest)": (
        b"POST /sandbox HTTP/1.1\r\nHost: bench\r\ncontent-type: application/json\r\n"
        b"content-length: 2\r\n\r\n{}"
    ),
}


async def _connection(host: str, port: int, request: bytes, stop: float, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.monotonic() < stop:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 402"):
                raise RuntimeError(head.decode("latin-1"))
            counts[0] += 1
    finally:
        writer.close()


async def issue_402s(url: str, request: bytes, seconds: float, connections: int) -> float:
    host, port = url.removeprefix("http://").split(":")
    counts = [0]
    started = time.monotonic()
    stop = started + seconds
    await asyncio.gather(*(_connection(host, int(port), request, stop, counts) for _ in range(connections)))
    return counts[0] / (time.monotonic() - started)


async def paid_requests(gateway_url: str, chain: Devnet, count: int) -> list[float]:
    payer = new_payer(chain)
    totals = []
    async with payer.client(gateway_url) as client:
        for _ in range(count):
            started = time.perf_counter()
            response = await client.get("/sandbox")
            assert response.status_code == 200, response.text
            totals.append((time.perf_counter() - started) * 1000)
    return totals


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    return f"median {statistics.median(ordered):7.2f} ms   p90 {p90:7.2f} ms"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--paid", type=int, default=30)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="dnah-bench-pay-"))
    stack = Stack(
        StackConfig(
            var_dir=work / "stack",
            gateway_port=free_port(),
            core_port=free_port(),
            hostd_port=free_port(),
            bridge="dnahbp",
            subnet="10.217.9.0/24",
            cgroup="dnahbp",
            host_name="bench-pay",
        ),
        say=lambda _: None,
    )
    chain = start_devnet(work)
    stack.start()
    try:
        gateway = start_payment_gateway(stack, chain.url, work)
        try:
            print(f"402 issuance, one worker, {args.connections} keep-alive connections, {args.seconds:g} s:")
            for name, request in REQUESTS.items():
                rate = asyncio.run(issue_402s(gateway.url, request, args.seconds, args.connections))
                print(f"  {name:28s} {rate:8.0f} req/s")
            totals = asyncio.run(paid_requests(gateway.url, chain, args.paid))
            events = gateway.events("payment")[-args.paid :]
            print(f"\npaid GET /sandbox ($0.0001, pympp client, devnet), {args.paid} sequential requests:")
            print(f"  {'client, 402 + sign + paid retry':32s} {summary(totals)}")
            for key in ("verify_ms", "credit_ms", "broadcast_ms", "record_ms", "forward_ms"):
                values = [float(e[key]) for e in events if key in e]
                if values:
                    print(f"  {'gateway ' + key.removesuffix('_ms'):32s} {summary(values)}")
        finally:
            gateway.stop()
    finally:
        stack.remove()
        chain.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
