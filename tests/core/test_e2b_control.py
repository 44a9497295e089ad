"""E2B's control plane over plain HTTP against the core of a real stack, in E2B's shapes
(``contracts/e2b_api.py``; what the ``e2b`` SDK 2.63.0 sends and parses): create, read, list
with E2B's metadata encoding and pagination, kill, pause/connect/resume, the deadline the
reaper enforces, network options, metrics and logs, snapshots and forks, and every refusal
as ``{"code", "message"}``. The real SDKs' flows are in ``tests/sdk``."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from cli.stack import Stack
from contracts.e2b import ENVD_VERSION
from core.config import CoreConfig
from core.errors import NotFound, Unauthorized
from core.hostclient import HostClient
from core.services.sandboxes import SandboxService
from tests.support import mint_key, wait_for

CONFIG = CoreConfig(database_url="unused", redis_url="unused", bootstrap_token="unused")
TEMPLATE = "base"
"""E2B's default template's name: the operator's default template here."""
OURS = "dnah-base"
"""The stack's default template."""


@pytest.fixture
def keys(core: httpx.Client) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """(E2B client with ``X-API-KEY``, native client with the same key) for a fresh org; the
    org's sandboxes are deleted afterwards, forks and clones before their parents."""
    key = mint_key(core, "e2b")
    base = str(core.base_url)
    with (
        httpx.Client(base_url=base, headers={"x-api-key": key}, timeout=120) as e2b,
        httpx.Client(base_url=base, headers={"authorization": f"Bearer {key}"}, timeout=120) as native,
    ):
        yield e2b, native
        for _ in range(3):  # parents refuse deletion (409) until their children are gone
            for item in native.get("/v1/sandboxes").json().get("items", []):
                native.delete(f"/v1/sandboxes/{item['id']}")


@pytest.fixture
def e2b(keys: tuple[httpx.Client, httpx.Client]) -> httpx.Client:
    return keys[0]


def create(e2b: httpx.Client, **body: object) -> dict[str, Any]:
    resp = e2b.post("/v2/sandboxes", json={"templateID": TEMPLATE, **body})
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def sdk_metadata(metadata: dict[str, str]) -> str:
    """The ``metadata`` query as the SDK builds it (``SandboxPaginator.next_items``)."""
    return urllib.parse.urlencode({urllib.parse.quote(k): urllib.parse.quote(v) for k, v in metadata.items()})


def error(resp: httpx.Response, status: int) -> str:
    """The message of an E2B error with ``status``; fails on any other answer or shape."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"code", "message"} and body["code"] == status, body
    assert isinstance(body["message"], str) and body["message"]
    return str(body["message"])


def state(e2b: httpx.Client, sid: object) -> str | None:
    resp = e2b.get(f"/sandboxes/{sid}")
    return None if resp.status_code == 404 else str(resp.json()["state"])


def end_at(e2b: httpx.Client, sid: object) -> datetime:
    return datetime.fromisoformat(e2b.get(f"/sandboxes/{sid}").json()["endAt"])


def run(native: httpx.Client, sid: object, command: str) -> str:
    resp = native.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": ["sh", "-c", command]})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["stdout"])


def test_create_read_list_kill(keys: tuple[httpx.Client, httpx.Client]) -> None:
    e2b, native = keys
    created = create(e2b, metadata={"user": "a b&c=d", "team": "x"}, envVars={"GREETING": "hi"}, timeout=600)
    sid = created["sandboxID"]
    assert created["templateID"] == OURS and created["envdVersion"] == ENVD_VERSION
    assert isinstance(created["clientID"], str) and isinstance(created["envdAccessToken"], str)
    assert "trafficAccessToken" not in created  # public by default
    assert run(native, sid, "echo $GREETING") == "hi\n"

    detail = e2b.get(f"/sandboxes/{sid}").json()
    assert detail["state"] == "running" and detail["metadata"] == {"user": "a b&c=d", "team": "x"}
    assert detail["envdAccessToken"] == created["envdAccessToken"]
    assert detail["lifecycle"] == {"autoResume": False, "onTimeout": "kill"}
    assert detail["network"] == {"allowPublicTraffic": True}
    for field in ("cpuCount", "memoryMB", "diskSizeMB"):
        assert isinstance(detail[field], int) and detail[field] > 0, field
    started, ends = datetime.fromisoformat(detail["startedAt"]), datetime.fromisoformat(detail["endAt"])
    assert timedelta(seconds=590) < ends - started < timedelta(seconds=660)

    other = create(e2b, metadata={"team": "y"})
    listed = e2b.get("/v2/sandboxes", params={"metadata": sdk_metadata({"user": "a b&c=d"})})
    assert listed.status_code == 200 and [s["sandboxID"] for s in listed.json()] == [sid]
    assert "x-next-token" not in listed.headers
    item = listed.json()[0]
    assert item["state"] == "running" and item["metadata"]["team"] == "x" and item["envdVersion"]
    everyone = {s["sandboxID"] for s in e2b.get("/v2/sandboxes").json()}
    assert everyone == {sid, other["sandboxID"]}
    assert [s["sandboxID"] for s in e2b.get("/sandboxes", params={"metadata": "team=y"}).json()] == [
        other["sandboxID"]
    ]

    assert e2b.delete(f"/sandboxes/{sid}").status_code == 204
    error(e2b.get(f"/sandboxes/{sid}"), 404)
    error(e2b.delete(f"/sandboxes/{sid}"), 404)  # the SDK's kill() answers False
    assert {s["sandboxID"] for s in e2b.get("/v2/sandboxes").json()} == {other["sandboxID"]}


def test_pages_follow_next_token(e2b: httpx.Client) -> None:
    ids = [create(e2b, metadata={"batch": "p"})["sandboxID"] for _ in range(3)]
    first = e2b.get("/v2/sandboxes", params={"limit": 2, "order": "asc"})
    token = first.headers["x-next-token"]
    second = e2b.get("/v2/sandboxes", params={"limit": 2, "order": "asc", "nextToken": token})
    assert "x-next-token" not in second.headers
    assert [s["sandboxID"] for s in first.json() + second.json()] == ids
    newest = e2b.get("/v2/sandboxes", params={"limit": 1})
    assert [s["sandboxID"] for s in newest.json()] == ids[-1:]
    error(e2b.get("/v2/sandboxes", params={"nextToken": "not-a-token"}), 400)
    error(e2b.get("/v2/sandboxes", params={"state": "stopped"}), 400)


def test_pause_connect_resume(keys: tuple[httpx.Client, httpx.Client]) -> None:
    e2b, native = keys
    sid = create(e2b, timeout=600)["sandboxID"]
    run(native, sid, "echo kept > /tmp/mark")
    assert e2b.post(f"/sandboxes/{sid}/pause", json={}).status_code == 204
    assert state(e2b, sid) == "paused"
    assert "already paused" in error(e2b.post(f"/sandboxes/{sid}/pause", json={}), 409)
    paused = e2b.get("/v2/sandboxes", params={"state": "paused"}).json()
    assert [s["sandboxID"] for s in paused] == [sid]
    assert e2b.get("/v2/sandboxes", params={"state": "running"}).json() == []

    resumed = e2b.post(f"/v2/sandboxes/{sid}/connect", json={})
    assert resumed.status_code == 201, resumed.text  # brought back
    assert resumed.json()["sandboxID"] == sid and resumed.json()["envdAccessToken"]
    assert state(e2b, sid) == "running" and run(native, sid, "cat /tmp/mark") == "kept\n"
    assert e2b.post(f"/v2/sandboxes/{sid}/connect", json={}).status_code == 200  # was running
    assert e2b.post(f"/sandboxes/{sid}/connect").status_code == 200  # v1's, no body
    assert "already running" in error(e2b.post(f"/sandboxes/{sid}/resume", json={}), 409)

    assert e2b.post(f"/sandboxes/{sid}/pause").status_code == 204  # no body at all
    legacy = e2b.post(f"/sandboxes/{sid}/resume", json={"timeout": 900})
    assert legacy.status_code == 201 and state(e2b, sid) == "running"
    assert end_at(e2b, sid) > datetime.now(UTC) + timedelta(seconds=800)


def test_deadline_kills_a_sandbox_whose_timeout_passed(e2b: httpx.Client) -> None:
    short = create(e2b, timeout=1)["sandboxID"]
    later = create(e2b, timeout=600)["sandboxID"]
    wait_for(lambda: state(e2b, short) is None, what="the reaper to kill the sandbox at its deadline")
    assert state(e2b, later) == "running"
    # set_timeout: the deadline is now + timeout, shorter as well as longer
    assert e2b.post(f"/sandboxes/{later}/timeout", json={"timeout": 1}).status_code == 204
    wait_for(lambda: state(e2b, later) is None, what="the reaper to kill the sandbox at its new deadline")


def test_deadline_pauses_with_auto_pause_and_connect_gives_a_new_one(e2b: httpx.Client) -> None:
    sid = create(e2b, timeout=1, autoPause=True, autoResume={"enabled": True})["sandboxID"]
    detail = e2b.get(f"/sandboxes/{sid}").json()
    assert detail["lifecycle"] == {"autoResume": True, "onTimeout": "pause"}
    wait_for(lambda: state(e2b, sid) == "paused", what="the reaper to pause the sandbox at its deadline")
    resumed = e2b.post(f"/v2/sandboxes/{sid}/connect", json={"timeout": 600})
    assert resumed.status_code == 201, resumed.text
    assert end_at(e2b, sid) > datetime.now(UTC) + timedelta(seconds=500)
    assert state(e2b, sid) == "running"


def test_connect_and_refresh_only_lengthen(e2b: httpx.Client) -> None:
    sid = create(e2b, timeout=600)["sandboxID"]
    before = end_at(e2b, sid)
    assert e2b.post(f"/v2/sandboxes/{sid}/connect", json={"timeout": 10}).status_code == 200
    assert end_at(e2b, sid) == before
    assert e2b.post(f"/v2/sandboxes/{sid}/connect", json={"timeout": 3000}).status_code == 200
    longer = end_at(e2b, sid)
    assert longer > before + timedelta(seconds=2000)
    assert e2b.post(f"/sandboxes/{sid}/refreshes", json={"duration": 60}).status_code == 204
    assert end_at(e2b, sid) == longer
    assert e2b.post(f"/sandboxes/{sid}/timeout", json={"timeout": 3600}).status_code == 204
    assert end_at(e2b, sid) > longer
    error(e2b.post(f"/sandboxes/{sid}/refreshes", json={"duration": 3601}), 400)


def test_network_options_become_the_egress_policy(keys: tuple[httpx.Client, httpx.Client]) -> None:
    e2b, native = keys
    closed = create(e2b, allow_internet_access=False)
    detail = e2b.get(f"/sandboxes/{closed['sandboxID']}").json()
    assert detail["allowInternetAccess"] is False
    assert detail["network"] == {"allowPublicTraffic": True, "allowOut": [], "denyOut": ["0.0.0.0/0"]}

    private = create(
        e2b,
        network={
            "allowOut": ["1.1.1.1", "Example.com"],
            "denyOut": ["0.0.0.0/0"],
            "allowPublicTraffic": False,
        },
    )
    assert isinstance(private["trafficAccessToken"], str) and private["trafficAccessToken"]
    policy = native.get(f"/v1/sandboxes/{private['sandboxID']}/egress-policy").json()
    assert (policy["mode"], policy["cidrs"], policy["domains"]) == ("deny", ["1.1.1.1"], ["example.com"])
    detail = e2b.get(f"/sandboxes/{private['sandboxID']}").json()
    assert detail["network"]["allowPublicTraffic"] is False

    some = create(e2b, network={"denyOut": ["10.0.0.0/8"]})
    policy = native.get(f"/v1/sandboxes/{some['sandboxID']}/egress-policy").json()
    assert (policy["mode"], policy["cidrs"]) == ("allow", ["10.0.0.0/8"])
    assert e2b.put(f"/sandboxes/{some['sandboxID']}/network").status_code == 204  # no body: all cleared
    assert native.get(f"/v1/sandboxes/{some['sandboxID']}/egress-policy").json()["mode"] == "allow"
    assert native.get(f"/v1/sandboxes/{some['sandboxID']}/egress-policy").json()["cidrs"] == []

    refused: list[dict[str, object]] = [
        {"denyOut": ["example.com"]},  # E2B denies addresses only
        {"allowOut": ["1.1.1.1"], "denyOut": ["10.0.0.0/8"]},  # allow inside a partial deny
        {"allowOut": ["not a host!"]},
        {"rules": {"api.example.com": []}},
    ]
    for network in refused:
        error(e2b.post("/v2/sandboxes", json={"templateID": TEMPLATE, "network": network}), 400)
    error(e2b.post("/v2/sandboxes", json={"templateID": TEMPLATE, "mcp": {"x": {}}}), 400)


def test_metrics_and_logs(e2b: httpx.Client) -> None:
    sid = create(e2b, timeout=600)["sandboxID"]
    samples = e2b.get(f"/sandboxes/{sid}/metrics").json()
    assert len(samples) == 1
    sample = samples[0]
    assert sample["cpuCount"] >= 1 and 0 <= sample["cpuUsedPct"] <= 100
    assert 0 < sample["memUsed"] <= sample["memTotal"] and 0 <= sample["diskUsed"] <= sample["diskTotal"]
    many = e2b.get("/sandboxes/metrics", params={"sandbox_ids": f"{sid},unknown"}).json()
    assert list(many["sandboxes"]) == [sid]

    v1 = e2b.get(f"/sandboxes/{sid}/logs").json()
    assert [line["line"] for line in v1["logs"]] == [
        f"sandbox created from template {OURS}",
        "sandbox started",
    ]
    assert v1["logEntries"][0]["level"] == "info" and v1["logEntries"][0]["fields"]["event"] == "created"

    assert e2b.post(f"/sandboxes/{sid}/pause").status_code == 204
    assert e2b.get(f"/sandboxes/{sid}/metrics").json() == []
    v2 = e2b.get(f"/v2/sandboxes/{sid}/logs").json()["logs"]
    assert [entry["message"] for entry in v2] == [f"sandbox created from template {OURS}", "sandbox paused"]
    backward = e2b.get(f"/v2/sandboxes/{sid}/logs", params={"direction": "backward", "limit": 1})
    assert [entry["message"] for entry in backward.json()["logs"]] == ["sandbox paused"]
    assert e2b.get(f"/v2/sandboxes/{sid}/logs", params={"level": "error"}).json()["logs"] == []


def test_snapshots_templates_and_forks(keys: tuple[httpx.Client, httpx.Client]) -> None:
    e2b, native = keys
    sid = create(e2b, timeout=600, autoPause=True)["sandboxID"]
    run(native, sid, "echo from-parent > /tmp/origin")
    taken = e2b.post(f"/sandboxes/{sid}/snapshots", json={})
    assert taken.status_code == 201, taken.text
    snapshot_id = taken.json()["snapshotID"]
    assert taken.json()["names"] == [snapshot_id]
    listed = e2b.get("/snapshots", params={"sandboxID": sid}).json()
    assert [s["snapshotID"] for s in listed] == [snapshot_id]
    assert e2b.get("/snapshots", params={"name": snapshot_id}).json() == listed

    clone = create(e2b, templateID=snapshot_id, metadata={"from": "snapshot"}, envVars={"EXTRA": "1"})
    assert clone["sandboxID"] != sid and clone["envdAccessToken"]
    assert run(native, clone["sandboxID"], "cat /tmp/origin; echo $EXTRA") == "from-parent\n1\n"
    assert e2b.get(f"/sandboxes/{clone['sandboxID']}").json()["metadata"] == {"from": "snapshot"}

    forked = e2b.post(f"/sandboxes/{sid}/fork", json={"count": 2})
    assert forked.status_code == 201, forked.text
    results = forked.json()
    assert len(results) == 2 and all(set(r) == {"sandbox"} for r in results), results
    tokens = {r["sandbox"]["envdAccessToken"] for r in results}
    assert len(tokens) == 2
    for result in results:
        fork_id = result["sandbox"]["sandboxID"]
        assert run(native, fork_id, "cat /tmp/origin") == "from-parent\n"
        assert e2b.get(f"/sandboxes/{fork_id}").json()["lifecycle"]["onTimeout"] == "pause"

    assert e2b.delete(f"/templates/{snapshot_id}").status_code == 204
    error(e2b.delete(f"/templates/{snapshot_id}"), 404)
    error(e2b.post(f"/sandboxes/{sid}/snapshots", json={"name": "mine"}), 400)


def test_refusals_are_e2b_errors(stack: Stack, core: httpx.Client, e2b: httpx.Client) -> None:
    assert "template" in error(e2b.post("/v2/sandboxes", json={"templateID": "no-such-template"}), 400)
    assert "timeout" in error(e2b.post("/v2/sandboxes", json={"templateID": TEMPLATE, "timeout": -1}), 400)
    assert "metadata" in error(
        e2b.post("/v2/sandboxes", json={"templateID": TEMPLATE, "metadata": {"a": 1}}), 400
    )
    error(e2b.post("/v2/sandboxes", json={"templateID": TEMPLATE, "metadata": ["a"]}), 400)
    error(e2b.post("/v2/sandboxes", json={}), 400)
    malformed = e2b.post(
        "/v2/sandboxes", content=b'{"templateID": ', headers={"content-type": "application/json"}
    )
    error(malformed, 400)
    error(e2b.get("/v2/sandboxes", params={"metadata": "a=1&&=&"}), 400)

    base = stack.config.core_url
    error(httpx.post(f"{base}/v2/sandboxes", json={"templateID": TEMPLATE}), 401)
    error(httpx.get(f"{base}/v2/sandboxes", headers={"x-api-key": "dnah_wrong"}), 401)
    error(httpx.get(f"{base}/sandboxes/x", headers={"x-api-key": "not-even-ours"}), 401)

    sid = create(e2b)["sandboxID"]
    with httpx.Client(base_url=base, headers={"x-api-key": mint_key(core, "other")}, timeout=60) as other:
        error(other.get(f"/sandboxes/{sid}"), 404)
        error(other.delete(f"/sandboxes/{sid}"), 404)
        error(other.post(f"/sandboxes/{sid}/pause"), 404)
        error(other.post(f"/v2/sandboxes/{sid}/connect", json={}), 404)
        error(other.post(f"/sandboxes/{sid}/timeout", json={"timeout": 5}), 404)
        assert other.get("/v2/sandboxes").json() == []
    assert state(e2b, sid) == "running"
    for method, path in (
        ("GET", "/sandboxes/nope"),
        ("POST", "/sandboxes/nope/pause"),
        ("POST", "/v2/sandboxes/nope/connect"),
        ("GET", "/sandboxes/nope/metrics"),
        ("GET", "/sandboxes/nope/logs"),
        ("POST", "/sandboxes/nope/fork"),
    ):
        error(e2b.request(method, path), 404)
    error(e2b.post(f"/sandboxes/{sid}/timeout", json={}), 400)


async def test_envd_token_is_issued_once_and_opens_only_its_sandbox(
    keys: tuple[httpx.Client, httpx.Client], stack_db: asyncpg.Pool
) -> None:
    """``SandboxService.by_envd_token``, envd's check: a sandbox made through another API has
    no token, and nothing opens it, until E2B's info or connect issues one (once)."""
    e2b, native = keys
    made = native.post("/v1/sandboxes", json={})
    assert made.status_code == 201, made.text
    sid = made.json()["id"]
    hosts = HostClient(timeout_s=5)
    service = SandboxService(stack_db, hosts, CONFIG)
    try:
        for token in (None, "", "guess"):
            with pytest.raises(Unauthorized):
                await service.by_envd_token(sid, token)
        issued = e2b.get(f"/sandboxes/{sid}").json()["envdAccessToken"]
        assert e2b.post(f"/v2/sandboxes/{sid}/connect", json={}).json()["envdAccessToken"] == issued
        assert (await service.by_envd_token(sid, issued)).id == sid
        for token in (None, issued[:-1], issued + "x"):
            with pytest.raises(Unauthorized):
                await service.by_envd_token(sid, token)
        other = create(e2b)
        with pytest.raises(Unauthorized):
            await service.by_envd_token(other["sandboxID"], issued)
        with pytest.raises(NotFound):
            await service.by_envd_token("no-such-sandbox", issued)
    finally:
        await hosts.close()


def test_a_parent_with_live_forks_is_paused_at_its_deadline(e2b: httpx.Client) -> None:
    """A sandbox with live forks cannot be deleted (409, to kill as to the reaper), so its
    deadline pauses it instead; the fork runs on."""
    parent = create(e2b, timeout=600)["sandboxID"]
    forked = e2b.post(f"/sandboxes/{parent}/fork", json={"timeout": 600})
    assert forked.status_code == 201, forked.text
    child = forked.json()[0]["sandbox"]["sandboxID"]
    assert "forks or clones" in error(e2b.delete(f"/sandboxes/{parent}"), 409)
    assert e2b.post(f"/sandboxes/{parent}/timeout", json={"timeout": 0}).status_code == 204
    wait_for(lambda: state(e2b, parent) == "paused", what="the reaper to pause the parent at its deadline")
    assert state(e2b, child) == "running"
    assert e2b.delete(f"/sandboxes/{child}").status_code == 204
    assert e2b.delete(f"/sandboxes/{parent}").status_code == 204
