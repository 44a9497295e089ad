"""Sandbox lifecycle through the gateway, both shapes: stop/start (data kept), pause/resume,
archive (and the unarchive a start implies), recover, resize, labels, the timers, the
presets and the reaper (including two reapers racing over the same due sandboxes).

Every test checks the resulting state and, where data is involved, the files inside the
sandbox (through ``exec``).
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
import httpx

from cli.stack import Stack
from tests.core.test_files import create, sh
from tests.support import wait_for


def state(org: httpx.Client, sid: str) -> str:
    return str(org.get(f"/v1/sandboxes/{sid}").json()["state"])


def op(org: httpx.Client, sid: str, verb: str, status: int = 200) -> dict:
    resp = org.post(f"/v1/sandboxes/{sid}/{verb}")
    assert resp.status_code == status, resp.text
    return dict(resp.json())


def wait_state(org: httpx.Client, sid: str, wanted: set[str], timeout: float = 20) -> str:
    """The sandbox's state once it is one of ``wanted`` (or whatever it is at the timeout)."""
    deadline = time.monotonic() + timeout
    while (now := state(org, sid)) not in wanted and time.monotonic() < deadline:
        time.sleep(0.2)
    return now


def put_in_error(stack: Stack, sid: str) -> None:
    """Set the row to ``error`` behind the core's back, as a failed host call would."""

    async def go() -> None:
        conn = await asyncpg.connect(stack.database_url)
        try:
            await conn.execute(
                "UPDATE sandboxes SET state = 'error', error_reason = 'test' WHERE id = $1", sid
            )
        finally:
            await conn.close()

    asyncio.run(go())


def test_stop_keeps_the_disk_and_start_brings_it_back(org: httpx.Client) -> None:
    sid = create(org)
    sh(org, sid, "echo kept > ~/data.txt")
    stopped = op(org, sid, "stop")
    assert stopped["state"] == "stopped" and stopped["stopped_at"]
    # a stopped sandbox takes no commands
    assert org.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": ["true"]}).status_code == 409
    assert op(org, sid, "stop")["state"] == "stopped"  # idempotent
    assert op(org, sid, "start")["state"] == "started"
    assert sh(org, sid, "cat ~/data.txt") == "kept\n"
    assert op(org, sid, "start")["state"] == "started"  # idempotent


def test_daytona_start_stop_labels_and_timers(org: httpx.Client) -> None:
    sid = create(org)
    stopped = org.post(f"/sandbox/{sid}/stop")
    assert stopped.status_code == 200 and stopped.json()["state"] == "stopped"
    started = org.post(f"/sandbox/{sid}/start")
    assert started.status_code == 200 and started.json()["state"] == "started"

    labels = org.put(
        f"/sandbox/{sid}/labels", json={"labels": {"team": "a", "code-toolbox-language": "python"}}
    )
    assert labels.status_code == 200 and labels.json() == {
        "labels": {"code-toolbox-language": "python", "team": "a"}
    }
    replaced = org.put(f"/v1/sandboxes/{sid}/labels", json={"labels": {"env": "ci"}})
    assert replaced.json()["labels"] == {"env": "ci"}  # the whole set is replaced

    for path in ("autostop/30", "autoarchive/0", "autodelete/-1"):
        assert org.post(f"/sandbox/{sid}/{path}").status_code == 200
    body = org.get(f"/sandbox/{sid}").json()
    assert (body["autoStopInterval"], body["autoArchiveInterval"], body["autoDeleteInterval"]) == (
        30,
        43200,
        -1,
    )
    native = org.get(f"/v1/sandboxes/{sid}").json()
    assert (native["auto_stop_minutes"], native["auto_archive_days"], native["auto_delete_days"]) == (
        30,
        30,
        0,
    )
    assert native["auto_delete_minutes"] is None
    assert org.post(f"/sandbox/{sid}/autodelete/0").status_code == 200
    assert org.get(f"/v1/sandboxes/{sid}").json()["auto_delete_minutes"] == 0
    assert org.post(f"/sandbox/{sid}/autostop/0").status_code == 200
    assert org.get(f"/sandbox/{sid}").json()["autoStopInterval"] == 0

    before = org.get(f"/v1/sandboxes/{sid}").json()["last_activity_at"]
    time.sleep(1.1)
    assert org.post(f"/sandbox/{sid}/last-activity").status_code == 200
    assert org.get(f"/v1/sandboxes/{sid}").json()["last_activity_at"] > before


def test_presets_and_explicit_values(org: httpx.Client) -> None:
    plain = org.post("/v1/sandboxes", json={}).json()
    assert plain["lifecycle"] == "persistent"
    assert (plain["auto_stop_minutes"], plain["auto_archive_minutes"], plain["auto_delete_minutes"]) == (
        0,
        None,
        None,
    )
    eph = org.post("/v1/sandboxes", json={"lifecycle": "ephemeral"}).json()
    assert (eph["auto_stop_minutes"], eph["auto_archive_minutes"], eph["auto_delete_minutes"]) == (
        15,
        10080,
        43200,
    )
    assert (eph["auto_archive_days"], eph["auto_delete_days"]) == (7, 30)
    mixed = org.post(
        "/v1/sandboxes", json={"lifecycle": "ephemeral", "auto_stop_minutes": 0, "auto_delete_days": 2}
    ).json()
    assert (mixed["auto_stop_minutes"], mixed["auto_archive_minutes"], mixed["auto_delete_minutes"]) == (
        0,
        10080,
        2880,
    )
    dt = org.post("/sandbox", json={"ephemeral": True, "autoStopInterval": 5}).json()
    assert (dt["autoStopInterval"], dt["autoDeleteInterval"]) == (5, 0)
    for bad in ({"lifecycle": "forever"}, {"auto_stop_minutes": -3}):
        resp = org.post("/v1/sandboxes", json=bad)
        assert resp.status_code == 400, resp.text
    for sb in (plain["id"], eph["id"], mixed["id"], dt["id"]):
        org.delete(f"/v1/sandboxes/{sb}")


def test_resize_rules(org: httpx.Client) -> None:
    sid = create(org)
    assert org.post(f"/v1/sandboxes/{sid}/resize", json={"disk_gb": 1}).status_code == 400  # disk only grows
    assert org.post(f"/v1/sandboxes/{sid}/resize", json={"cpu": 99}).status_code == 400
    op(org, sid, "stop")
    grown = org.post(f"/v1/sandboxes/{sid}/resize", json={"cpu": 2, "ram_mb": 768, "disk_gb": 4})
    assert grown.status_code == 200, grown.text
    assert (grown.json()["cpu"], grown.json()["ram_mb"], grown.json()["disk_gb"]) == (2, 768, 4)
    shrunk = org.post(f"/sandbox/{sid}/resize", json={"cpu": 1, "memory": 1})  # stopped: may shrink
    assert shrunk.status_code == 200 and (shrunk.json()["cpu"], shrunk.json()["memory"]) == (1, 1)
    op(org, sid, "start")
    seen = org.get(f"/v1/sandboxes/{sid}/metrics").json()  # the sandbox's own cgroup view
    assert (seen["cpu_count"], seen["mem_total_mb"]) == (1, 1024)
    # started: growing is applied live, inside the running sandbox
    hot = org.post(f"/v1/sandboxes/{sid}/resize", json={"cpu": 2, "ram_mb": 1536})
    assert hot.status_code == 200, hot.text
    seen = org.get(f"/v1/sandboxes/{sid}/metrics").json()
    assert (seen["cpu_count"], seen["mem_total_mb"]) == (2, 1536)
    assert org.post(f"/v1/sandboxes/{sid}/resize", json={"ram_mb": 512}).status_code == 409  # no hot shrink
    assert org.get(f"/v1/sandboxes/{sid}").json()["ram_mb"] == 1536


def test_conflicting_operations_get_409(org: httpx.Client) -> None:
    sid = create(org)
    assert op(org, sid, "recover", 409)["code"] == "conflict"  # not in error
    assert op(org, sid, "archive", 409)["code"] == "conflict"  # must be stopped
    assert op(org, sid, "resume")["state"] == "started"  # already running: nothing to do
    op(org, sid, "stop")
    assert op(org, sid, "resume", 409)["code"] == "conflict"  # stopped, not paused
    assert op(org, sid, "pause", 409)["code"] == "conflict"  # only a started sandbox pauses
    assert org.post("/v1/sandboxes/sb-nope/stop").status_code == 404


async def test_the_reaper_stops_idle_sandboxes_and_deletes_stopped_ones(
    org: httpx.Client, stack_db: asyncpg.Pool
) -> None:
    idle = org.post("/v1/sandboxes", json={"auto_stop_minutes": 1}).json()["id"]
    doomed = org.post("/v1/sandboxes", json={"auto_delete_days": 1}).json()["id"]
    busy = org.post("/v1/sandboxes", json={"auto_stop_minutes": 1}).json()["id"]
    await stack_db.execute(
        "UPDATE sandboxes SET last_activity_at = now() - interval '2 minutes' WHERE id = $1", idle
    )
    op(org, doomed, "stop")
    await stack_db.execute(
        "UPDATE sandboxes SET stopped_at = now() - interval '2 days' WHERE id = $1", doomed
    )
    # the core's own reaper runs every second in the test stack
    assert await asyncio.to_thread(wait_state, org, idle, {"stopped"}) == "stopped"
    assert await asyncio.to_thread(wait_state, org, doomed, {"destroyed"}) == "destroyed"
    assert state(org, busy) == "started"  # active recently: left alone


def test_pause_freezes_in_place_and_resume_continues(org: httpx.Client) -> None:
    sid = create(org)
    # a loop that appends "tick nanoseconds" (the kernel's clock, the same as the test's)
    ticker = "i=0; while :; do i=$((i+1)); echo $i $(date +%s%N) >> /tmp/ticks; sleep 0.05; done"
    sh(org, sid, f"nohup sh -c '{ticker}' >/dev/null 2>&1 &")

    def ticks() -> list[tuple[int, int]]:
        out = sh(org, sid, "cat /tmp/ticks 2>/dev/null || true")
        return [(int(n), int(ns)) for n, ns in (line.split() for line in out.splitlines() if line.strip())]

    def ticked_past(count: int) -> list[tuple[int, int]]:
        seen = ticks()
        return seen if seen and seen[-1][0] > count else []

    wait_for(lambda: ticked_past(2), what="the loop to tick")
    assert op(org, sid, "pause")["state"] == "paused"
    paused_at = time.time_ns()
    assert org.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": ["true"]}).status_code == 409
    assert org.get(f"/sandbox/{sid}").json()["state"] == "paused"
    time.sleep(1.0)  # the window the frozen loop must not tick in (~20 ticks if it ran)
    resumed_at = time.time_ns()
    assert op(org, sid, "resume")["state"] == "started"
    during = [t for t in ticks() if paused_at < t[1] < resumed_at]
    assert during == [], "the loop ran while the sandbox was paused"
    last = ticks()[-1][0]
    wait_for(lambda: ticked_past(last + 2), what="the same loop to run on")
    # Daytona's start resumes a paused sandbox too
    assert org.post(f"/sandbox/{sid}/pause").json()["state"] == "paused"
    assert org.post(f"/sandbox/{sid}/start").json()["state"] == "started"
    again = ticks()[-1][0]
    wait_for(lambda: ticked_past(again), what="the loop to run on after start")


def test_archive_and_start_unarchives_with_the_data(org: httpx.Client, stack: Stack) -> None:
    sid = create(org)
    sh(org, sid, "head -c 3000000 /dev/urandom > ~/blob; sha256sum ~/blob > ~/blob.sha")
    op(org, sid, "stop")
    archived = op(org, sid, "archive")
    assert archived["state"] == "archived"
    assert op(org, sid, "archive")["state"] == "archived"  # idempotent
    assert list(stack.var.glob(f"**/archives/{sid}")), "the archive is in the archive store"
    assert org.get(f"/sandbox/{sid}").json()["state"] == "archived"
    started = op(org, sid, "start")  # unarchives, then starts
    assert started["state"] == "started"
    assert sh(org, sid, "sha256sum -c ~/blob.sha >/dev/null && echo intact") == "intact\n"


def test_recover_from_error(org: httpx.Client, stack: Stack) -> None:
    sid = create(org)
    sh(org, sid, "echo survived > ~/s.txt")

    put_in_error(stack, sid)
    assert org.get(f"/sandbox/{sid}").json()["recoverable"] is True
    recovered = op(org, sid, "recover")  # the host still runs it: adopted as it is
    assert recovered["state"] == "started" and recovered["error_reason"] is None
    assert sh(org, sid, "cat ~/s.txt") == "survived\n"


def test_recover_starts_a_sandbox_whose_host_holds_it_stopped(org: httpx.Client, stack: Stack) -> None:
    sid = create(org)
    sh(org, sid, "echo kept > ~/k.txt")
    op(org, sid, "stop")

    put_in_error(stack, sid)
    assert org.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": ["true"]}).status_code == 409
    recovered = org.post(f"/sandbox/{sid}/recover")  # the Daytona spelling
    assert recovered.status_code == 200, recovered.text
    assert recovered.json()["state"] == "started" and recovered.json()["recoverable"] is False
    assert sh(org, sid, "cat ~/k.txt") == "kept\n"
