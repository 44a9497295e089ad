"""The live price table: reloads on change and on SIGHUP, keeps the last good table when the
file breaks (also across Granian's worker respawn), and never re-prices a request in flight."""

# The fixtures are imported from payment_fixtures, so test arguments "redefine" them.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from cli.stack import Stack
from gateway.prices import LivePrices
from pricing import PricingError
from tests.gateway.payment_fixtures import (  # noqa: F401 - fixtures are used by name
    Devnet,
    challenges,
    devnet,
    start_payment_gateway,
)
from tests.support import await_for

TABLE = """
version = 1
default = "0.0001"

[[route]]
method = "POST"
path = "/sandbox"
price = "{price}"
description = "Create a sandbox"
"""


def write(path: Path, text: str) -> None:
    """Replace the file the way editors and config managers do (new inode, atomic)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


async def eventually(check: object, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "not reloaded in time"
        await asyncio.sleep(0.02)


def price(prices: LivePrices) -> int:
    return prices.table.quote("POST", "/sandbox").amount


async def test_reloads_when_the_file_changes_and_keeps_the_old_table_when_it_breaks(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    write(path, TABLE.format(price="0.01"))
    prices = LivePrices(path, poll_s=0.02)
    async with prices:
        assert price(prices) == 10_000
        in_flight = prices.table
        write(path, TABLE.format(price="0.02"))
        await eventually(lambda: price(prices) == 20_000)
        assert in_flight.quote("POST", "/sandbox").amount == 10_000  # a request keeps its table

        write(path, TABLE.format(price="0.02").replace("version = 1", 'version = "one"'))
        await asyncio.sleep(0.2)
        assert price(prices) == 20_000
        path.unlink()
        await asyncio.sleep(0.2)
        assert price(prices) == 20_000

        write(path, TABLE.format(price="0.03"))
        await eventually(lambda: price(prices) == 30_000)


async def test_sighup_reloads(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    write(path, TABLE.format(price="0.01"))
    prices = LivePrices(path, poll_s=3600)  # only the signal can reload it
    async with prices:
        path.write_text(TABLE.format(price="0.05"))
        if signal.getsignal(signal.SIGHUP) in (signal.SIG_DFL, signal.SIG_IGN, None):
            pytest.skip("no SIGHUP handler here (not the main thread): the signal would kill pytest")
        os.kill(os.getpid(), signal.SIGHUP)
        await eventually(lambda: price(prices) == 50_000)


def test_a_broken_file_at_start_is_an_error_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    write(path, TABLE.format(price="free-ish"))
    with pytest.raises(PricingError) as caught:
        LivePrices(path)
    assert str(caught.value).startswith(f"{path}:")


def test_a_respawned_worker_starts_from_the_last_good_table(tmp_path: Path, stack: Stack) -> None:
    """Granian answers SIGHUP by respawning workers; one that finds the file broken takes
    the last table its predecessors served (kept in Redis for this main process)."""
    path = tmp_path / "prices.toml"
    write(path, TABLE.format(price="0.07"))
    LivePrices(path, stack.redis_url)
    write(path, "this is not toml [")
    respawned = LivePrices(path, stack.redis_url)
    assert price(respawned) == 70_000
    other = tmp_path / "other.toml"
    write(other, "this is not toml [")
    with pytest.raises(PricingError):
        LivePrices(other, stack.redis_url)  # nothing kept for this file: a cold start fails


async def test_a_402_shows_the_new_price_right_after_an_edit(
    stack: Stack, devnet: Devnet, tmp_path: Path
) -> None:
    pricing = tmp_path / "prices.toml"
    write(pricing, TABLE.format(price="0.01"))
    gateway = start_payment_gateway(stack, devnet.url, tmp_path, pricing_file=pricing)
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:

            async def quoted() -> str:
                [challenge] = challenges(await client.post("/sandbox", content=b"{}"))
                return str(challenge.request["amount"])

            assert await quoted() == "10000"
            write(pricing, TABLE.format(price="0.25"))

            async def repriced() -> bool:
                return await quoted() == "250000"

            await await_for(repriced, what="the edited price in a 402")

            write(pricing, TABLE.format(price="0.5").replace("[[route]]", "[[route]"))

            async def refused() -> list[dict[str, object]]:
                return gateway.events("prices_reload_failed")

            [failure] = await await_for(refused, what="the broken edit's reload failure")
            assert str(pricing) in str(failure["error"])
            assert await quoted() == "250000"

            # SIGHUP to Granian's main process respawns the worker: the file is still broken,
            # so the new worker serves the last good table.
            os.kill(gateway.server.proc.pid, signal.SIGHUP)

            async def kept_last_good() -> list[dict[str, object]]:
                failures = gateway.events("prices_reload_failed")
                return [e for e in failures if e.get("kept") == "last good copy"]

            kept = await await_for(kept_last_good, what="the respawned worker starting from the last good")
            assert await quoted() == "250000"
            assert kept, "the respawned worker did not start from the last good table"
    finally:
        gateway.stop()
