"""What the rate limiter adds to a request: two gateways (bearer mode, one Granian worker each)
in front of the same stand-in core (``tests/gateway/upstream.py``), one with rate limits (a
private Redis on a Unix socket, the default limits) and one without (no ``DNAH_REDIS_URL``).

    .venv/bin/python -m load.bench_ratelimit [--requests 3000] [--warmup 300]

Small ``GET /v1/sandboxes`` requests go one at a time over keep-alive httpx clients, to the
limited and the unlimited gateway alternately (the order flips every pair), so drift on the
machine touches both alike: once with an API key (the key's bucket) and once without (the
client address's bucket). It prints P50/P95 of each, the difference of the percentiles and
the median of the per-pair differences, and the Lua script's own round trip from a client
(redis-py, the gateway's client). Needs no root: no sandbox is involved. Results are recorded
in docs/performance.md, "Rate limits".
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from cli.datastores import Redis
from gateway.config import RateLimitConfig
from gateway.ratelimit import RateLimiter
from load.bench_core import machine, pct
from tests.gateway.servers import Server, gateway_env, start


def timed(send: Callable[[], httpx.Response]) -> float:
    started = time.perf_counter()
    response = send()
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"unexpected {response.status_code}: {response.text}")
    return elapsed


def compare(
    name: str, limited: Callable[[], httpx.Response], plain: Callable[[], httpx.Response], n: int, warmup: int
) -> None:
    for _ in range(warmup):
        timed(limited)
        timed(plain)
    with_ms: list[float] = []
    without_ms: list[float] = []
    for i in range(n):
        if i % 2:
            without_ms.append(timed(plain))
            with_ms.append(timed(limited))
        else:
            with_ms.append(timed(limited))
            without_ms.append(timed(plain))
    paired = statistics.median(a - b for a, b in zip(with_ms, without_ms, strict=True))
    print(f"{name} (n={n} each, after {warmup} warm-ups):")
    for label, samples in (("without rate limits", without_ms), ("with rate limits", with_ms)):
        print(f"  {label:20s} P50 {pct(samples, 0.5):6.3f} ms   P95 {pct(samples, 0.95):6.3f} ms")
    added50 = pct(with_ms, 0.5) - pct(without_ms, 0.5)
    added95 = pct(with_ms, 0.95) - pct(without_ms, 0.95)
    print(
        f"  added: P50 {added50:+.3f} ms, P95 {added95:+.3f} ms, median of pair differences {paired:+.3f} ms"
    )


async def script_round_trip(redis_url: str, n: int) -> list[float]:
    """The limiter's own call (one EVALSHA of the GCRA script), timed from Python."""
    limiter = RateLimiter(RateLimitConfig(), redis_url)
    samples: list[float] = []
    async with limiter:
        for i in range(n + 100):
            started = time.perf_counter()
            decision = await limiter.take("key", f"bench-{i % 50}")
            if decision is None:
                raise RuntimeError("the limiter did not answer")
            if i >= 100:
                samples.append((time.perf_counter() - started) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=300)
    args = parser.parse_args()
    print(machine())
    work = Path(tempfile.mkdtemp(prefix="dnah-bench-ratelimit-"))
    redis = Redis(work)
    redis.start()
    servers: list[Server] = []
    try:
        upstream = start("tests.gateway.upstream:create_app", dict(os.environ), work / "upstream.log")
        servers.append(upstream)
        limited = start(
            "gateway.app:create_app",
            gateway_env(upstream.url, DNAH_REDIS_URL=redis.url),
            work / "limited.log",
        )
        servers.append(limited)
        plain = start("gateway.app:create_app", gateway_env(upstream.url), work / "plain.log")
        servers.append(plain)
        key = {"authorization": "Bearer dnah_bench_key"}
        with httpx.Client(base_url=limited.url) as a, httpx.Client(base_url=plain.url) as b:
            if "ratelimit-limit" not in a.get("/v1/sandboxes", headers=key).headers:
                raise RuntimeError("the limited gateway does not limit")
            compare(
                "GET /v1/sandboxes with an API key",
                lambda: a.get("/v1/sandboxes", headers=key),
                lambda: b.get("/v1/sandboxes", headers=key),
                args.requests,
                args.warmup,
            )
            compare(
                "GET /v1/sandboxes without one (client address)",
                lambda: a.get("/v1/sandboxes"),
                lambda: b.get("/v1/sandboxes"),
                args.requests,
                args.warmup,
            )
        samples = asyncio.run(script_round_trip(redis.url, args.requests))
        print(
            f"the GCRA script from redis-py (n={len(samples)}): P50 {pct(samples, 0.5):.3f} ms, "
            f"P95 {pct(samples, 0.95):.3f} ms"
        )
    finally:
        for server in reversed(servers):
            server.stop()
        redis.stop()


if __name__ == "__main__":
    main()
