"""Persistent shell sessions end to end (gateway, core, hostd's relay, the guest agent), in
the native shape and the Daytona shape (both ``/process/session`` and ``/process/sessions``,
and the gateway's ``/sandbox/{id}/toolbox/…`` spelling)."""

from __future__ import annotations

import time

import httpx

from cli.stack import Stack
from tests.support import mint_key


def create_sandbox(client: httpx.Client) -> str:
    resp = client.post("/v1/sandboxes", json={})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


def test_native_sessions(org: httpx.Client) -> None:
    sid = create_sandbox(org)
    base = f"/v1/sandboxes/{sid}/sessions"
    made = org.post(base, json={"cwd": "/tmp"})
    assert made.status_code == 201, made.text
    session = made.json()
    assert session["cwd"] == "/tmp" and session["id"]
    sess = f"{base}/{session['id']}"

    first = org.post(f"{sess}/exec", json={"cmd": "cd /usr && export GREETING=hi"})
    assert first.status_code == 200, first.text
    assert (first.json()["exit_code"], first.json()["cwd"]) == (0, "/usr")
    out = org.post(
        f"{sess}/exec", json={"cmd": "echo $GREETING; pwd; echo oops >&2; exit_code=1; false"}
    ).json()
    assert (out["stdout"], out["stderr"], out["exit_code"], out["cwd"]) == ("hi\n/usr\n", "oops\n", 1, "/usr")
    assert out["command_id"] and out["timed_out"] is False

    started = time.monotonic()
    slow = org.post(f"{sess}/exec", json={"cmd": "sleep 30", "timeout_ms": 500}).json()
    assert (slow["timed_out"], slow["exit_code"]) == (True, -9)
    assert time.monotonic() - started < 10
    assert org.post(f"{sess}/exec", json={"cmd": "pwd"}).json()["stdout"] == "/usr\n"

    history = org.get(f"{sess}/commands")
    assert history.status_code == 200, history.text
    items = history.json()["items"]
    assert [i["cmd"] for i in items][::2] == ["cd /usr && export GREETING=hi", "sleep 30"]
    assert items[1]["command_id"] == out["command_id"]
    assert items[1]["stdout"] == "hi\n/usr\n" and items[3]["stdout"] == "/usr\n"

    listed = org.get(base).json()["items"]
    assert [s["id"] for s in listed] == [session["id"]]
    assert org.delete(sess).status_code == 204
    assert org.get(base).json()["items"] == []
    assert org.post(f"{sess}/exec", json={"cmd": "true"}).status_code == 404
    assert org.delete(sess).status_code == 404
    assert org.post(base, json={"cwd": "/no/such/dir"}).status_code == 400


def test_daytona_sessions_both_spellings(org: httpx.Client) -> None:
    sid = create_sandbox(org)
    for base in (f"/toolbox/{sid}/process/session", f"/sandbox/{sid}/toolbox/process/sessions"):
        assert org.post(base, json={"sessionId": "dev"}).status_code == 201
        assert org.post(base, json={"sessionId": "dev"}).status_code == 409
        ran = org.post(f"{base}/dev/exec", json={"command": "cd /tmp; echo out; echo err >&2"})
        assert ran.status_code == 200, ran.text
        body = ran.json()
        assert (body["stdout"], body["stderr"], body["output"], body["exitCode"]) == (
            "out\n",
            "err\n",
            "out\nerr\n",
            0,
        )
        started = org.post(
            f"{base}/dev/exec", json={"command": "sleep 0.5; pwd; exit_code=0; (exit 5)", "runAsync": True}
        )
        assert started.status_code == 202, started.text
        cmd_id = started.json()["cmdId"]
        pending = org.get(f"{base}/dev/command/{cmd_id}").json()
        assert pending["id"] == cmd_id and "exitCode" not in pending
        for _ in range(100):
            command = org.get(f"{base}/dev/command/{cmd_id}").json()
            if "exitCode" in command:
                break
            time.sleep(0.05)
        assert command == {"id": cmd_id, "command": "sleep 0.5; pwd; exit_code=0; (exit 5)", "exitCode": 5}
        logs = org.get(f"{base}/dev/command/{cmd_id}/logs").json()
        assert logs == {"output": "/tmp\n", "stdout": "/tmp\n", "stderr": ""}
        legacy = org.post(f"{base}/dev/exec", json={"command": "true", "async": True})
        assert legacy.status_code == 202

        got = org.get(f"{base}/dev").json()
        assert got["sessionId"] == "dev"
        assert [c["id"] for c in got["commands"]][:1] == [body["cmdId"]]
        assert [s["sessionId"] for s in org.get(base).json()] == ["dev"]
        assert org.delete(f"{base}/dev").status_code == 204
        assert org.get(f"{base}/dev").status_code == 404
        assert org.get(f"{base}/dev/command/{cmd_id}/logs").status_code == 404


def test_sessions_are_scoped_to_the_org(org: httpx.Client, stack: Stack, gateway: httpx.Client) -> None:
    sid = create_sandbox(org)
    session = org.post(f"/v1/sandboxes/{sid}/sessions", json={}).json()
    key = mint_key(gateway, "sessions-other")
    with httpx.Client(
        base_url=stack.config.gateway_url, headers={"authorization": f"Bearer {key}"}, timeout=60
    ) as other:
        assert other.get(f"/v1/sandboxes/{sid}/sessions").status_code == 404
        assert (
            other.post(f"/v1/sandboxes/{sid}/sessions/{session['id']}/exec", json={"cmd": "id"}).status_code
            == 404
        )
        assert other.delete(f"/v1/sandboxes/{sid}/sessions/{session['id']}").status_code == 404
        assert other.post(f"/toolbox/{sid}/process/session", json={"sessionId": "x"}).status_code == 404
        assert other.get(f"/toolbox/{sid}/process/session/{session['id']}").status_code == 404
    assert org.get(f"/v1/sandboxes/{sid}/sessions").json()["items"][0]["id"] == session["id"]


def test_sessions_count_as_activity(org: httpx.Client) -> None:
    sid = create_sandbox(org)
    before = org.get(f"/v1/sandboxes/{sid}").json()["last_activity_at"]
    time.sleep(1.1)
    org.post(f"/toolbox/{sid}/process/session", json={"sessionId": "a"})
    after = org.get(f"/v1/sandboxes/{sid}").json()["last_activity_at"]
    assert after > before
