"""Failures across processes: a failed create leaves nothing, hostd restarts adopt running
sandboxes, lost sandbox processes are restarted on their disks, and one request id ties the
log lines of every hop together."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import signal
import uuid
from pathlib import Path

import asyncpg
import httpx

from cli.stack import Stack
from tests.support import wait_for


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
    sql(
        stack,
        "UPDATE hosts SET templates = array_append(templates, 'ghost') WHERE name = $1",
        stack.config.host_name,
    )
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
    org.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": ["sh", "-c", "echo kept > /home/daytona/f"]})
    stack.restart("hostd", hard=True)
    out = org.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": ["cat", "/home/daytona/f"]}).json()
    assert out["stdout"] == "kept\n"


def test_lost_sandbox_processes_are_restarted_on_their_disk(stack: Stack, org: httpx.Client) -> None:
    sid = org.post("/v1/sandboxes", json={}).json()["id"]
    org.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": ["sh", "-c", "echo on-disk > /home/daytona/g"]})
    # Simulate a machine restart under hostd: the sandbox's processes die while hostd is down.
    stack.stop_service("hostd")
    try:
        assert _kill_sandbox_processes(stack, sid) >= 2  # the agent's init and its server
    finally:
        stack.restart("hostd")  # whatever happened, the next tests get a hostd
    wait_for(lambda: org.get(f"/v1/sandboxes/{sid}").json()["state"] == "started", what="the restart")
    out = org.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": ["cat", "/home/daytona/g"]})
    assert out.json()["stdout"] == "on-disk\n"


def _kill_sandbox_processes(stack: Stack, sandbox_id: str) -> int:
    """SIGKILL every process of the sandbox, found through its pids cgroup on the host."""
    procs = Path(f"/sys/fs/cgroup/pids/{stack.config.cgroup}/{sandbox_id}/cgroup.procs")
    pids = [int(p) for p in procs.read_text().split()]
    for pid in pids:
        # Killing the sandbox's PID 1 takes the rest of its PID namespace with it.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def emptied() -> bool:  # SIGKILL lands asynchronously; a machine restart leaves nothing
        try:
            return not procs.read_text().split()
        except FileNotFoundError:  # the container was deleted with its cgroup
            return True
        except OSError as error:  # a cgroup being removed answers ENODEV before it disappears
            if error.errno == errno.ENODEV:
                return True
            raise

    wait_for(emptied, what=f"sandbox {sandbox_id}'s processes to be gone")
    return len(pids)


def test_one_request_id_across_every_hop(stack: Stack, org: httpx.Client) -> None:
    sid = org.post("/v1/sandboxes", json={}).json()["id"]
    rid = uuid.uuid4().hex
    resp = org.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": ["true"]}, headers={"x-request-id": rid})
    assert resp.headers["x-request-id"] == rid
    for service in ("gateway", "core", "hostd"):
        tagged = _logged_with(stack.var / "log" / f"{service}.log", rid)
        assert tagged, f"{service} logged nothing with the request id"
        assert all(entry["request_id"] == rid for entry in tagged)


def _logged_with(log: Path, request_id: str) -> list[dict]:
    """The log lines carrying ``request_id``; each service writes its request line just after
    answering, so wait for it."""

    def tagged() -> list[dict]:
        try:
            return [json.loads(line) for line in log.read_text().splitlines() if request_id in line]
        except json.JSONDecodeError:  # caught a line mid-write: read again
            return []

    return wait_for(tagged, what=f"a line in {log.name} with the request id")


def test_after_a_host_restart_nothing_stopped_is_reported_started_or_claimed(
    stack: Stack, org: httpx.Client
) -> None:
    # A user's sandbox and a full warm pool, all running.
    sid = org.post("/v1/sandboxes", json={}).json()["id"]
    pool = wait_for(lambda: _full_pool(stack), what="a full warm pool")
    # A machine restart under hostd: every sandbox's processes die while hostd is down.
    stack.stop_service("hostd")
    for victim in [sid, *pool]:
        _kill_sandbox_processes(stack, victim)
    stack.restart("hostd")  # returns once the new hostd has registered

    # From the registration on, a row says started only if the host runs the sandbox (rows
    # first, then the host: a restart finishing in between only makes the host agree more).
    started = {r["id"] for r in sql(stack, "SELECT id FROM sandboxes WHERE state = 'started'")}
    running = {s["id"] for s in host_inventory(stack) if s["state"] == "running"}
    assert started <= running, f"started but not running: {started - running}"

    # Creates made at once right now all work from their first call: no stopped pool
    # sandbox is handed out.
    async def create_three() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=org.base_url, headers=org.headers, timeout=60) as client:
            return await asyncio.gather(*(client.post("/v1/sandboxes", json={}) for _ in range(3)))

    for resp in asyncio.run(create_three()):
        assert resp.status_code == 201, resp.text
        out = org.post(f"/v1/sandboxes/{resp.json()['id']}/exec", json={"cmd": ["echo", "ok"]})
        assert out.status_code == 200 and out.json()["stdout"] == "ok\n", out.text

    # The user's sandbox comes back on its disk.
    wait_for(lambda: org.get(f"/v1/sandboxes/{sid}").json()["state"] == "started", what="the restart")
    assert org.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": ["true"]}).status_code == 200


def _full_pool(stack: Stack) -> list[str]:
    """The started pool sandboxes once there are two (the test stack's pool size), else none."""
    rows = sql(stack, "SELECT id FROM sandboxes WHERE org_id = 'org_pool' AND state = 'started'")
    return [r["id"] for r in rows] if len(rows) >= 2 else []
