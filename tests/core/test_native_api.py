"""The native /v1 API end to end: gateway → core → hostd → a real sandbox."""

from __future__ import annotations

import httpx


def create(client: httpx.Client, **body: object) -> dict:
    resp = client.post("/v1/sandboxes", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_create_exec_get_list_delete(org: httpx.Client) -> None:
    sbx = create(org, template="dnah-base", cpu=1, ram_mb=512, env={"GREETING": "hi"}, language="bash")
    assert sbx["state"] == "started"
    assert (sbx["cpu"], sbx["ram_mb"], sbx["language"]) == (1, 512, "bash")

    run = org.post(
        f"/v1/sandboxes/{sbx['id']}/exec", json={"cmd": ["sh", "-c", "echo $GREETING; hostname; id -u"]}
    )
    assert run.status_code == 200, run.text
    out = run.json()
    assert out["exit_code"] == 0
    assert out["stdout"].split() == ["hi", sbx["id"], "1000"]
    assert out["duration_ms"] > 0

    assert org.get(f"/v1/sandboxes/{sbx['id']}").json()["id"] == sbx["id"]
    listed = org.get("/v1/sandboxes", params={"state": "running"}).json()["items"]
    assert [s["id"] for s in listed] == [sbx["id"]]

    gone = org.delete(f"/v1/sandboxes/{sbx['id']}")
    assert gone.status_code == 200 and gone.json()["state"] == "destroyed"
    assert org.get("/v1/sandboxes").json()["items"] == []
    assert org.get("/v1/sandboxes", params={"state": "destroyed"}).json()["items"][0]["id"] == sbx["id"]
    assert org.post(f"/v1/sandboxes/{sbx['id']}/exec", json={"cmd": ["true"]}).status_code == 404


def test_exec_stderr_exit_code_env_cwd_and_timeout(org: httpx.Client) -> None:
    sid = create(org)["id"]
    out = org.post(
        f"/v1/sandboxes/{sid}/exec",
        json={"cmd": ["sh", "-c", "pwd; echo $X >&2; exit 3"], "env": {"X": "to-stderr"}, "cwd": "/tmp"},
    ).json()
    assert (out["stdout"], out["stderr"], out["exit_code"]) == ("/tmp\n", "to-stderr\n", 3)

    slow = org.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": ["sleep", "30"], "timeout_ms": 300}).json()
    assert slow["timed_out"] is True
    assert slow["duration_ms"] < 5000


def test_e2b_create_shape(org: httpx.Client) -> None:
    sbx = create(org, templateID="dnah-base", metadata={"team": "a"}, envVars={"FROM_E2B": "yes"})
    assert sbx["template"] == "dnah-base"
    assert sbx["labels"] == {"team": "a"}
    out = org.post(f"/v1/sandboxes/{sbx['id']}/exec", json={"cmd": ["printenv", "FROM_E2B"]}).json()
    assert out["stdout"] == "yes\n"


def test_list_limit_and_cursor(org: httpx.Client) -> None:
    ids = {create(org)["id"] for _ in range(3)}
    page1 = org.get("/v1/sandboxes", params={"limit": 2}).json()
    assert len(page1["items"]) == 2 and page1["next_cursor"]
    page2 = org.get("/v1/sandboxes", params={"limit": 2, "cursor": page1["next_cursor"]}).json()
    assert {s["id"] for s in page1["items"] + page2["items"]} == ids
    assert page2["next_cursor"] is None


def test_names_are_unique_per_org_and_resolve(org: httpx.Client) -> None:
    sbx = create(org, name="my-box")
    assert org.get("/v1/sandboxes/my-box").json()["id"] == sbx["id"]
    dup = org.post("/v1/sandboxes", json={"name": "my-box"})
    assert dup.status_code == 409 and dup.json()["code"] == "conflict"


def test_bad_input_gets_clear_errors(org: httpx.Client) -> None:
    def err(resp: httpx.Response, status: int, needle: str) -> None:
        assert resp.status_code == status, resp.text
        body = resp.json()
        assert body["statusCode"] == status and body["code"] and needle in body["message"], body

    err(
        org.post("/v1/sandboxes", content=b"{not json", headers={"content-type": "application/json"}), 400, ""
    )
    err(org.post("/v1/sandboxes", json={"cpu": "two"}), 400, "cpu")
    err(org.post("/v1/sandboxes", json={"bogus": 1}), 400, "bogus")
    err(org.post("/v1/sandboxes", json={"template": "no-such-template"}), 400, "unknown template")
    err(org.post("/v1/sandboxes", json={"cpu": 99}), 400, "cpu must be between")
    err(org.post("/v1/sandboxes", json={"ram_mb": 1}), 400, "ram_mb must be between")
    err(org.post("/v1/sandboxes", json={"disk_gb": 100000}), 400, "disk_gb must be between")
    err(org.post("/v1/sandboxes", json={"language": "cobol"}), 400, "language")
    err(org.post("/v1/sandboxes", json={"name": "../etc"}), 400, "name")
    err(org.get("/v1/sandboxes/does-not-exist"), 404, "not found")
    err(org.delete("/v1/sandboxes/does-not-exist"), 404, "not found")
    err(org.post("/v1/sandboxes/does-not-exist/exec", json={"cmd": ["true"]}), 404, "not found")
    err(org.get("/v1/sandboxes", params={"state": "sleeping"}), 400, "unknown state")
    sid = create(org)["id"]
    err(org.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": []}), 400, "cmd")
    err(org.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": "ls"}), 400, "cmd")
    err(org.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": ["true"], "timeout_ms": 0}), 400, "timeout_ms")


def test_health(stack, gateway: httpx.Client, core: httpx.Client) -> None:  # type: ignore[no-untyped-def]
    assert core.get("/health").json() == {"status": "ok", "checks": {"postgres": "ok", "redis": "ok"}}
    assert gateway.get("/health").status_code == 200


def test_internal_routes_are_not_public(gateway: httpx.Client) -> None:
    for path in ("/internal/hosts/register", "/%69nternal/hosts/register", "//internal/hosts/x/heartbeat"):
        resp = gateway.post(path, json={})
        assert resp.status_code == 404, (path, resp.text)


def test_exec_says_when_its_output_was_cut(org: httpx.Client) -> None:
    sid = org.post("/v1/sandboxes", json={}).json()["id"]
    big = org.post(
        f"/v1/sandboxes/{sid}/exec", json={"cmd": ["sh", "-c", "head -c 2000000 /dev/zero | tr '\\\\0' x"]}
    )
    assert big.status_code == 200
    assert (len(big.json()["stdout"]), big.json()["truncated"]) == (1024 * 1024, True)
    small = org.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": ["echo", "hi"]}).json()
    assert (small["stdout"], small["truncated"]) == ("hi\n", False)
