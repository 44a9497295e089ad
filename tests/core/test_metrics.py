"""``GET /metrics`` (Prometheus text) on the core: admin only, every family present and well
formed, and the sandbox gauge agrees with the database."""

from __future__ import annotations

import re

import asyncpg
import httpx

from cli.stack import Stack

SAMPLE = re.compile(r'^[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? -?[0-9.e+]+$')


def scrape(core: httpx.Client) -> dict[str, float]:
    resp = core.get("/metrics")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for line in resp.text.splitlines():
        if line.startswith("#"):
            assert line.startswith(("# HELP dnah_", "# TYPE dnah_")), line
            continue
        assert SAMPLE.match(line), line
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    return samples


async def test_metrics_describe_the_cluster(core: httpx.Client, org: httpx.Client, stack: Stack) -> None:
    sid = org.post("/v1/sandboxes", json={"ram_mb": 512}).json()["id"]
    samples = scrape(core)
    for family in (
        'dnah_sandboxes{state="started"}',
        'dnah_warm_pool_sandboxes{template="dnah-base"}',
        "dnah_snapshots",
        'dnah_webhook_deliveries{status="pending"}',
        'dnah_http_requests_total{status="2xx"}',
    ):
        assert family in samples, family
    host = next(name for name in samples if name.startswith("dnah_host_up{"))
    assert samples[host] == 1
    assert samples[host.replace("dnah_host_up", "dnah_host_used_ram_mb")] >= 512
    conn = await asyncpg.connect(stack.database_url)
    try:
        stopped = await conn.fetchval(
            "SELECT count(*) FROM sandboxes WHERE state = 'stopped' AND org_id <> 'org_pool'"
        )
    finally:
        await conn.close()
    assert samples['dnah_sandboxes{state="stopped"}'] == stopped  # nothing stops by itself here
    assert samples['dnah_http_requests_total{status="2xx"}'] >= 1
    org.delete(f"/v1/sandboxes/{sid}")


def test_metrics_need_the_admin_key(org: httpx.Client, stack: Stack) -> None:
    assert org.get("/metrics").status_code == 403  # an org key (through the gateway)
    assert httpx.get(stack.config.core_url + "/metrics").status_code == 401
