"""The core stores what each host's runtime can do (declared at registration) and acts on it:
a started sandbox on a host that cannot resize live changes CPU or memory only once stopped."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from cli.stack import Stack
from tests.core.test_files import create
from tests.core.test_lifecycle import op


def _sql(stack: Stack, query: str, *args: Any) -> list[asyncpg.Record]:
    async def go() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(stack.database_url)
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    return asyncio.run(go())


def test_registration_stores_the_runtime_and_its_capabilities(stack: Stack) -> None:
    [host] = _sql(
        stack, "SELECT runtime, memory_snapshot, live_resize, fork FROM hosts WHERE state = 'ready'"
    )
    # The stack's hostd runs containers (auto on this machine, or named): disk-only snapshots,
    # filesystem forks, live resize through the cgroup.
    assert dict(host) == {"runtime": "oci", "memory_snapshot": False, "live_resize": True, "fork": False}


@pytest.fixture
def no_live_resize(stack: Stack) -> Iterator[None]:
    """The stack's host declares, for this test, what a VM runtime declares: no live resize.
    Put back afterwards, as its next registration would."""
    _sql(stack, "UPDATE hosts SET live_resize = false")
    try:
        yield
    finally:
        _sql(stack, "UPDATE hosts SET live_resize = true")


def test_a_host_without_live_resize_resizes_cpu_and_memory_only_when_stopped(
    org: httpx.Client, no_live_resize: None
) -> None:
    sid = create(org)
    before = org.get(f"/v1/sandboxes/{sid}").json()
    refused = org.post(f"/v1/sandboxes/{sid}/resize", json={"cpu": before["cpu"] + 1})
    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == "resize_needs_stop"
    assert "stop the sandbox" in refused.json()["message"]
    daytona = org.post(f"/sandbox/{sid}/resize", json={"memory": before["ram_mb"] // 1024 + 1})
    assert (daytona.status_code, daytona.json()["code"]) == (409, "resize_needs_stop")
    after = org.get(f"/v1/sandboxes/{sid}").json()
    assert (after["cpu"], after["ram_mb"]) == (before["cpu"], before["ram_mb"])
    # The disk is the host's to grow, running or not; sizes already held are no change.
    grown = org.post(f"/v1/sandboxes/{sid}/resize", json={"disk_gb": 4, "cpu": before["cpu"]})
    assert grown.status_code == 200 and grown.json()["disk_gb"] == 4, grown.text
    op(org, sid, "stop")
    stopped = org.post(f"/v1/sandboxes/{sid}/resize", json={"cpu": 2, "ram_mb": 1536})
    assert stopped.status_code == 200, stopped.text
    assert op(org, sid, "start")["cpu"] == 2
    seen = org.get(f"/v1/sandboxes/{sid}/metrics").json()
    assert (seen["cpu_count"], seen["mem_total_mb"]) == (2, 1536)
