"""The warm pool end to end: a create of the default size claims a pre-started sandbox (one
row update) with the caller's name, environment, labels and language; the pool refills; pool
sandboxes never appear in any org's listings; a claim is announced to the org's webhooks as a
new started sandbox. The test stack keeps ``dnah-base=2`` per host (``cli/stack.py``)."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import httpx

from tests.core.test_files import sh
from tests.core.test_webhooks import Receiver, sandbox_events, subscribe


async def pool_ids(stack_db: asyncpg.Pool) -> set[str]:
    rows = await stack_db.fetch("SELECT id FROM sandboxes WHERE org_id = 'org_pool' AND state = 'started'")
    return {r["id"] for r in rows}


async def wait_for_pool(stack_db: asyncpg.Pool, size: int = 2, timeout: float = 30) -> set[str]:
    deadline = time.monotonic() + timeout
    while len(ids := await pool_ids(stack_db)) < size and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return ids


async def test_a_default_create_claims_a_warm_sandbox_and_the_pool_refills(
    org: httpx.Client, stack_db: asyncpg.Pool
) -> None:
    warm = await wait_for_pool(stack_db)
    assert len(warm) >= 2
    resp = org.post(
        "/v1/sandboxes",
        json={
            "name": f"warm-{time.time_ns()}",
            "env": {"GREETING": "hi warm"},
            "labels": {"k": "v"},
            "language": "javascript",
        },
    )
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["id"] in warm  # it was one of the pool's
    assert body["state"] == "started" and body["labels"] == {"k": "v"} and body["language"] == "javascript"
    assert sh(org, body["id"], "echo $GREETING") == "hi warm\n"  # env applied at claim
    run = org.post(f"/v1/sandboxes/{body['id']}/run-code", json={"code": "console.log(6*7)"})
    assert run.json()["stdout"] == "42\n"  # the claimed language is the sandbox's
    refilled = await wait_for_pool(stack_db)
    assert len(refilled) >= 2 and body["id"] not in refilled
    # pool sandboxes are in nobody's listing
    listed = {s["id"] for s in org.get("/v1/sandboxes", params={"limit": 1000}).json()["items"]}
    assert not listed & refilled
    for sid in refilled:
        assert org.get(f"/v1/sandboxes/{sid}").status_code == 404
    # a size the pool does not hold boots cold
    cold = org.post("/v1/sandboxes", json={"ram_mb": 512}).json()
    assert cold["id"] not in refilled and cold["ram_mb"] == 512


async def test_concurrent_creates_never_share_a_warm_sandbox(
    org: httpx.Client, stack_db: asyncpg.Pool
) -> None:
    await wait_for_pool(stack_db)
    async with httpx.AsyncClient(base_url=org.base_url, headers=org.headers, timeout=60) as client:
        made = await asyncio.gather(*(client.post("/v1/sandboxes", json={}) for _ in range(5)))
    ids = [r.json()["id"] for r in made]
    assert all(r.status_code == 201 for r in made) and len(set(ids)) == 5
    for sid in ids:
        assert sh(org, sid, "echo ok") == "ok\n"


def test_a_claim_is_announced_as_a_new_started_sandbox(org: httpx.Client) -> None:
    receiver = Receiver()
    subscribe(org, receiver.url, ["sandbox.state_updated"])
    sid = org.post("/v1/sandboxes", json={}).json()["id"]
    got = sandbox_events(receiver.wait(lambda r: len(sandbox_events(r, sid)) >= 1), sid)
    data = got[0].payload["data"]
    assert (data["state"], data["previous_state"], data["org_id"]) == (
        "started",
        None,
        org.get(f"/v1/sandboxes/{sid}").json()["org_id"],
    )
    receiver.close()


def test_a_name_already_taken_is_a_conflict_and_leaves_the_pool_alone(org: httpx.Client) -> None:
    name = f"dup-{time.time_ns()}"
    assert org.post("/v1/sandboxes", json={"name": name}).status_code == 201
    again = org.post("/v1/sandboxes", json={"name": name})
    assert again.status_code == 409, again.text
