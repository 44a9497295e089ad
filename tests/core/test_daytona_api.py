"""The Daytona shape: exactly what the Daytona SDK's strict models require."""

from __future__ import annotations

import httpx

REQUIRED = {
    "id": str,
    "organizationId": str,
    "name": str,
    "user": str,
    "env": dict,
    "labels": dict,
    "public": bool,
    "networkBlockAll": bool,
    "kvm": bool,
    "target": str,
    "cpu": int,
    "gpu": int,
    "memory": int,
    "disk": int,
    "toolboxProxyUrl": str,
}


def test_create_returns_200_with_every_required_field(org: httpx.Client) -> None:
    resp = org.post(
        "/sandbox",
        json={
            "env": {"A": "1"},
            "labels": {"code-toolbox-language": "python", "team": "x"},
            "volumes": [],
            "memory": 1,
            "cpu": 1,
            "someFutureField": True,
        },
    )
    assert resp.status_code == 200, resp.text
    dto = resp.json()
    for field, kind in REQUIRED.items():
        assert isinstance(dto[field], kind) and not (kind is int and isinstance(dto[field], bool)), field
    assert dto["state"] == "started" and dto["memory"] == 1 and dto["env"] == {"A": "1"}
    assert dto["labels"] == {"code-toolbox-language": "python", "team": "x"}
    # Through the gateway the toolbox URL is the gateway's own, so SDK toolbox calls come back to it.
    assert dto["toolboxProxyUrl"] == str(org.base_url).rstrip("/") + "/toolbox"

    sid = dto["id"]
    assert org.get(f"/sandbox/{sid}").json()["id"] == sid
    assert org.get(f"/sandbox/{dto['name']}").json()["id"] == sid
    listing = org.get("/sandbox", params={"labels": '{"team":"x"}'}).json()
    assert [s["id"] for s in listing["items"]] == [sid] and listing["nextCursor"] is None
    assert org.get("/sandbox", params={"labels": '{"team":"y"}'}).json()["items"] == []
    assert org.get(f"/sandbox/{sid}/toolbox-proxy-url").json() == {"url": dto["toolboxProxyUrl"]}

    deleted = org.delete(f"/sandbox/{sid}")
    assert deleted.status_code == 200 and deleted.json()["state"] == "destroyed"


def test_toolbox_execute_both_paths(org: httpx.Client) -> None:
    sid = org.post("/sandbox", json={}).json()["id"]
    for path in (f"/toolbox/{sid}/process/execute", f"/sandbox/{sid}/toolbox/process/execute"):
        resp = org.post(
            path, json={"command": "echo out; echo err >&2; cd /tmp && pwd; exit 4", "envs": {"Q": "1"}}
        )
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["exitCode"] == 4
        assert body["result"].splitlines() == ["out", "/tmp", "err"]
    env = org.post(
        f"/toolbox/{sid}/process/execute", json={"command": "echo $Q", "envs": {"Q": "1"}, "cwd": "/"}
    )
    assert env.json()["result"] == "1\n"


def test_toolbox_timeout_is_408(org: httpx.Client) -> None:
    sid = org.post("/sandbox", json={}).json()["id"]
    resp = org.post(f"/toolbox/{sid}/process/execute", json={"command": "sleep 20", "timeout": 1})
    assert resp.status_code == 408
    assert resp.json()["code"] == "timeout"


def test_errors_have_the_daytona_shape(org: httpx.Client) -> None:
    resp = org.get("/sandbox/nope")
    assert resp.status_code == 404
    assert set(resp.json()) >= {"statusCode", "message", "code"}
    bad = org.post("/sandbox", json={"cpu": "lots"})
    assert bad.status_code == 400 and "cpu" in bad.json()["message"]
