"""Failures across processes: a failed create leaves nothing, hostd restarts adopt running
sandboxes, lost sandbox processes are restarted on their disks, and one request id ties the
log lines of every hop together."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import httpx

from cli.stack import Stack


def sql(stack: Stack, query: str, *args: object) -> list[asyncpg.Record]:
    async def go() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(stack.database_url)
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    return asyncio.run(go())


def host_inventory(stack: Stack) -> list[dict]:
    host = sql(stack, "SELECT api_url, api_token FROM hosts WHERE name = $1", stack.config.host_name)[0]
    resp = httpx.get(host["api_url"] + "/sandboxes", headers={"authorization": f"Bearer {host['api_token']}"})
    assert resp.status_code == 200
    return resp.json()


def test_failed_create_leaves_nothing_live(stack: Stack, org: httpx.Client) -> None:
    # The core believes the host has a template the host does not: the host's create fails.
    sql(stack, "UPDATE hosts SET templates = array_append(templates, 'ghost') WHERE name = $1",
        stack.config.host_name)
    try:
        resp = org.post("/v1/sandboxes", json={"template": "ghost"})
    finally:
        sql(stack, "UPDATE hosts SET templates = array_remove(templates, 'ghost')")
    assert resp.status_code == 502, resp.text
    assert "template" in resp.json()["message"]
    rows = sql(stack, "SELECT id, state, error_reason FROM sandboxes WHERE template = 'ghost'")
    assert rows and all(r["state"] == "destroyed" and r["error_reason"] for r in rows)
    assert not {r["id"] for r in rows} & {s["id"] for s in host_inventory(stack)}
    assert org.get("/v1/sandboxes").json()["items"] == []


def test_hostd_restart_adopts_running_sandboxes(stack: Stack, org: httpx.Client) -> None:
    sid = org.post("/v1/sandboxes", json={}).json()["id"]
    org.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": ["sh", "-c", "echo kept > /home/user/f"]})
    stack.restart("hostd", hard=True)
    out = org.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": ["cat", "/home/user/f"]}).json()
    assert out["stdout"] == "kept\n"


def test_lost_sandbox_processes_are_restarted_on_their_disk(stack: Stack, org: httpx.Client) -> None:
    sid = org.post("/v1/sandboxes", json={}).json()["id"]
    org.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": ["sh", "-c", "echo on-disk > /home/user/g"]})
    # Simulate a machine restart under hostd: the sandbox's processes die while hostd is down.
    stack._terminate("hostd")
    pid1 = sql(stack, "SELECT 1")  # keep the DB warm; the sandbox's init is found via /proc
    assert pid1
    killed = _kill_sandbox_init(sid)
    assert killed
    stack.restart("hostd")
    for _ in range(100):
        state = org.get(f"/v1/sandboxes/{sid}").json()["state"]
        out = org.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": ["cat", "/home/user/g"]})
        if out.status_code == 200 and out.json()["stdout"] == "on-disk\n":
            break
        asyncio.run(asyncio.sleep(0.1))
    assert state == "started"
    assert out.json()["stdout"] == "on-disk\n"


def _kill_sandbox_init(sandbox_id: str) -> bool:
    """Kill the sandbox's PID 1 as seen from the host (its hostname is the sandbox id)."""
    import os
    import signal
    from pathlib import Path

    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "root" / "etc" / "hostname").exists() and os.readlink(proc / "ns" / "uts"):
                cmdline = (proc / "cmdline").read_bytes()
                if b"guest.agent" in cmdline and sandbox_id.encode() in _uts_hostname(int(proc.name)):
                    os.kill(int(proc.name), signal.SIGKILL)
                    return True
        except OSError:
            continue
    return False


def _uts_hostname(pid: int) -> bytes:
    import subprocess

    out = subprocess.run(["nsenter", "-t", str(pid), "-u", "hostname"], capture_output=True, check=False)
    return out.stdout


def test_one_request_id_across_every_hop(stack: Stack, org: httpx.Client) -> None:
    sid = org.post("/v1/sandboxes", json={}).json()["id"]
    rid = uuid.uuid4().hex
    resp = org.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": ["true"]}, headers={"x-request-id": rid})
    assert resp.headers["x-request-id"] == rid
    for service in ("gateway", "core", "hostd"):
        lines = (stack.var / "log" / f"{service}.log").read_text().splitlines()
        tagged = [json.loads(line) for line in lines if rid in line]
        assert tagged, f"{service} logged nothing with the request id"
        assert all(entry["request_id"] == rid for entry in tagged)
