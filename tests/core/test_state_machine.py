"""Conflicting operations: exactly one wins, the rest get 409, nothing is left stuck."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx


def test_concurrent_deletes_one_wins(org: httpx.Client) -> None:
    sid = org.post("/v1/sandboxes", json={}).json()["id"]
    with ThreadPoolExecutor(6) as pool:
        statuses = sorted(pool.map(lambda _: org.delete(f"/v1/sandboxes/{sid}").status_code, range(6)))
    assert statuses.count(200) == 1
    assert set(statuses) <= {200, 404, 409}
    assert org.get(f"/v1/sandboxes/{sid}").json()["state"] == "destroyed"


def test_exec_racing_delete_never_leaves_a_stuck_state(org: httpx.Client) -> None:
    sid = org.post("/v1/sandboxes", json={}).json()["id"]

    def run(i: int) -> int:
        if i == 3:
            return org.delete(f"/v1/sandboxes/{sid}").status_code
        return org.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": ["sleep", "0.2"]}).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(run, range(8)))
    assert statuses[3] == 200
    assert set(statuses) <= {200, 404, 409, 502}
    assert org.get(f"/v1/sandboxes/{sid}").json()["state"] == "destroyed"


def test_concurrent_creates_get_distinct_sandboxes(org: httpx.Client) -> None:
    with ThreadPoolExecutor(6) as pool:
        made = list(pool.map(lambda _: org.post("/v1/sandboxes", json={}), range(6)))
    assert all(r.status_code == 201 for r in made), [r.text for r in made if r.status_code != 201]
    ids = {r.json()["id"] for r in made}
    assert len(ids) == 6
    outs = {
        org.post(f"/v1/sandboxes/{i}/exec", json={"cmd": ["hostname"]}).json()["stdout"].strip() for i in ids
    }
    assert outs == ids
