"""Seed 004's last Daytona routes through the gateway: backups (a signed snapshot the sandbox
points at, one at a time, replacing the previous one), the build log behind
``build-logs-url``, and ``GET /sandbox/paginated``."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
import httpx
import pytest

from cli.stack import Stack
from tests.core.test_files import create, sh

pytestmark = pytest.mark.stack


def ok(resp: httpx.Response, status: int = 200) -> Any:
    assert resp.status_code == status, resp.text
    return resp.json()


def backup(org: httpx.Client, sid: str) -> Any:
    return ok(org.post(f"/sandbox/{sid}/backup"))


def snapshot_ids(org: httpx.Client, sid: str) -> list[str]:
    return [s["id"] for s in ok(org.get(f"/v1/sandboxes/{sid}/snapshots"))["items"]]


def test_a_backup_is_a_snapshot_the_sandbox_points_at_and_the_next_replaces_it(org: httpx.Client) -> None:
    sid = create(org)
    fresh = ok(org.get(f"/sandbox/{sid}"))
    assert fresh["backupState"] == "None" and fresh["backupCreatedAt"] is None
    sh(org, sid, "echo first > ~/kept.txt")

    first = backup(org, sid)
    assert first["backupState"] == "Completed" and first["backupCreatedAt"]
    assert first["state"] == "started"  # it went on running
    assert sh(org, sid, "cat ~/kept.txt") == "first\n"
    assert snapshot_ids(org, sid) == [first["backupSnapshotId"]]
    assert ok(org.get(f"/sandbox/{sid}"))["backupSnapshotId"] == first["backupSnapshotId"]

    sh(org, sid, "echo second > ~/kept.txt")
    second = backup(org, sid)
    assert second["backupState"] == "Completed"
    assert second["backupSnapshotId"] != first["backupSnapshotId"]
    assert second["backupCreatedAt"] >= first["backupCreatedAt"]
    assert snapshot_ids(org, sid) == [second["backupSnapshotId"]]  # the first one is gone
    assert org.get(f"/v1/snapshots/{first['backupSnapshotId']}").status_code == 404

    # the backup is a snapshot like any other: a restore brings its disk back
    sh(org, sid, "echo third > ~/kept.txt")
    ok(org.post(f"/v1/sandboxes/{sid}/restore", json={"snapshot_id": second["backupSnapshotId"]}))
    assert sh(org, sid, "cat ~/kept.txt") == "second\n"


def test_concurrent_backups_leave_exactly_one(org: httpx.Client) -> None:
    sid = create(org)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: org.post(f"/sandbox/{sid}/backup"), range(4)))
    statuses = sorted(r.status_code for r in answers)
    assert set(statuses) <= {200, 409} and 200 in statuses, [r.text for r in answers]
    for refused in (r for r in answers if r.status_code == 409):
        assert "in progress" in refused.json()["message"]
    final = ok(org.get(f"/sandbox/{sid}"))
    assert final["backupState"] == "Completed"
    assert snapshot_ids(org, sid) == [final["backupSnapshotId"]]


async def test_a_backup_in_progress_refuses_another_until_it_is_stale(
    org: httpx.Client, stack_db: asyncpg.Pool
) -> None:
    sid = create(org)
    # another core is taking a backup of it right now
    await stack_db.execute(
        "UPDATE sandboxes SET backup_state = 'InProgress', backup_started_at = now() WHERE id = $1", sid
    )
    refused = org.post(f"/sandbox/{sid}/backup")
    assert refused.status_code == 409, refused.text
    assert ok(org.get(f"/sandbox/{sid}"))["backupState"] == "InProgress"
    assert snapshot_ids(org, sid) == []
    # that core died an hour ago (past the stack's 20 s long-operation limit): taken over
    await stack_db.execute(
        "UPDATE sandboxes SET backup_started_at = now() - interval '1 hour' WHERE id = $1", sid
    )
    taken = backup(org, sid)
    assert taken["backupState"] == "Completed"
    assert snapshot_ids(org, sid) == [taken["backupSnapshotId"]]


def test_a_refused_backup_leaves_the_previous_one(org: httpx.Client) -> None:
    sid = create(org)
    kept = backup(org, sid)
    ok(org.post(f"/sandbox/{sid}/stop"))
    ok(org.post(f"/sandbox/{sid}/archive"))
    refused = org.post(f"/sandbox/{sid}/backup")
    assert refused.status_code == 409, refused.text
    after = ok(org.get(f"/sandbox/{sid}"))
    assert after["backupState"] == "Completed"
    assert after["backupSnapshotId"] == kept["backupSnapshotId"]
    assert org.post("/sandbox/no-such-sandbox/backup").status_code == 404


def test_deleting_the_backups_snapshot_leaves_no_backup(org: httpx.Client) -> None:
    sid = create(org)
    taken = backup(org, sid)
    assert org.delete(f"/v1/snapshots/{taken['backupSnapshotId']}").status_code == 204
    after = ok(org.get(f"/sandbox/{sid}"))
    assert (after["backupState"], after["backupSnapshotId"], after["backupCreatedAt"]) == ("None", None, None)
    assert backup(org, sid)["backupState"] == "Completed"  # and the next one is made as the first


def test_build_logs_url_serves_the_template_build_log(
    stack: Stack, org: httpx.Client, gateway: httpx.Client
) -> None:
    sid = create(org)
    url = ok(org.get(f"/sandbox/{sid}/build-logs-url"))["url"]
    assert url == f"{stack.config.gateway_url}/sandbox/{sid}/build-logs"
    for query in ("", "?follow=true"):  # the SDK follows it
        served = org.get(url + query)
        assert served.status_code == 200, served.text
        assert served.headers["content-type"].startswith("text/plain")
        assert served.text.startswith("# template dnah-base-")
        assert len(served.text.splitlines()) >= 2
    # the API's authentication: no key, or another org's key, sees nothing
    assert httpx.get(url, timeout=30).status_code == 401
    assert gateway.get(url).status_code == 404
    assert org.get("/sandbox/no-such-sandbox/build-logs-url").status_code == 404


def test_paginated_pages_filters_and_sorts(org: httpx.Client) -> None:
    made = []
    for name, team in (("pg-alpha", "red"), ("pg-bravo", "red"), ("pg-charlie", "blue")):
        sandbox = ok(org.post("/sandbox", json={"name": name, "labels": {"team": team}}))
        made.append(sandbox["id"])
    ok(org.post(f"/sandbox/{made[2]}/stop"))

    def page(**params: Any) -> Any:
        return ok(org.get("/sandbox/paginated", params=params))

    everything = page()
    assert (everything["total"], everything["page"], everything["totalPages"]) == (3, 1, 1)
    assert [s["id"] for s in everything["items"]] == made[::-1]  # newest first by default

    pages = [page(limit=2, page=n, sort="name", order="asc") for n in (1, 2, 3)]
    assert [p["totalPages"] for p in pages] == [2, 2, 2] and [p["total"] for p in pages] == [3, 3, 3]
    assert [[s["name"] for s in p["items"]] for p in pages] == [["pg-alpha", "pg-bravo"], ["pg-charlie"], []]

    red = page(labels=json.dumps({"team": "red"}))
    assert sorted(s["name"] for s in red["items"]) == ["pg-alpha", "pg-bravo"] and red["total"] == 2
    python = page(labels=json.dumps({"code-toolbox-language": "python", "team": "blue"}))
    assert [s["name"] for s in python["items"]] == ["pg-charlie"]
    assert page(states="stopped")["total"] == 1
    assert page(states=["stopped", "started"])["total"] == 3
    assert page(states="started,stopped")["total"] == 3
    assert page(states="build_failed")["total"] == 0  # Daytona's, never ours
    assert page(name="bra")["items"][0]["id"] == made[1] and page(name="BRA")["total"] == 1
    assert page(id=made[0][-6:])["items"][0]["id"] == made[0]
    assert page(regions="elsewhere")["total"] == 0 and page(regions="local")["total"] == 3
    assert page(minCpu=64)["total"] == 0 and page(maxMemoryGiB=1024)["total"] == 3
    assert page(lastEventAfter="2999-01-01T00:00:00Z")["total"] == 0

    for bad in ({"sort": "colour"}, {"order": "sideways"}, {"page": 0}, {"limit": 0}, {"states": "nap"}):
        assert org.get("/sandbox/paginated", params=bad).status_code == 400, bad
    assert org.get("/sandbox/paginated", params={"labels": "{not json"}).status_code == 400


def test_the_sdk_list_pages_by_cursor_with_its_filters_and_sorts(org: httpx.Client) -> None:
    """``GET /sandbox`` as SDK 0.226.1's ``list`` calls it: keyset pages in any of its sorts."""
    made = {}
    for name, cpu in (("ks-c", 1), ("ks-a", 2), ("ks-b", 1)):
        made[name] = ok(org.post("/sandbox", json={"name": name, "cpu": cpu, "labels": {"ks": "1"}}))["id"]
    ok(org.post(f"/sandbox/{made['ks-b']}/public/true"))

    def walk(**params: Any) -> list[str]:
        names, cursor = [], None
        for _ in range(10):
            page = ok(
                org.get("/sandbox", params={**params, "limit": 1, **({"cursor": cursor} if cursor else {})})
            )
            names += [s["name"] for s in page["items"]]
            cursor = page["nextCursor"]
            if cursor is None:
                return names
        raise AssertionError(f"more pages than sandboxes: {names}")

    assert walk() == ["ks-b", "ks-a", "ks-c"]  # newest first, as before
    assert walk(sort="name", order="asc") == ["ks-a", "ks-b", "ks-c"]
    assert walk(sort="name", order="desc") == ["ks-c", "ks-b", "ks-a"]
    ties = sorted(["ks-b", "ks-c"], key=lambda name: made[name], reverse=True)
    assert walk(sort="cpu", order="desc") == ["ks-a", *ties]  # ties by id, descending too
    assert walk(sort="memoryGib") == walk(sort="diskGib") and len(walk(sort="lastActivityAt")) == 3
    assert walk(isPublic="true") == ["ks-b"] and walk(isPublic="false", sort="name", order="asc") == [
        "ks-a",
        "ks-c",
    ]
    assert walk(states=["started", "stopped"], name="KS-A") == ["ks-a"]  # the start, any case
    assert walk(name="s-a") == []
    assert walk(regionIds="local", minCpu=2) == ["ks-a"]
    assert walk(regionIds="us") == [] and walk(minGpu=1) == [] and walk(isRecoverable="true") == []
    assert walk(labels=json.dumps({"ks": "1", "code-toolbox-language": "python"}), id=made["ks-c"][:8]) == [
        "ks-c"
    ]

    first = ok(org.get("/sandbox", params={"limit": 1, "sort": "name", "order": "asc"}))
    other_sort = org.get("/sandbox", params={"limit": 1, "sort": "cpu", "cursor": first["nextCursor"]})
    assert other_sort.status_code == 400 and "sorted by name asc" in other_sort.json()["message"]
    for bad in ({"cursor": "not-a-cursor"}, {"sort": "colour"}, {"order": "up"}, {"states": "exploded"}):
        assert org.get("/sandbox", params=bad).status_code == 400, bad
