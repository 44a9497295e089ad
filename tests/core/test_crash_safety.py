"""Crash safety of lifecycle operations at the core: a core (or reaper) that dies between
claiming an operation and finishing it leaves the sandbox in a transitional state, and the
sweeper settles it from what the host reports; a snapshot left half-made is never trusted, and
one deleted while its host is down is removed from the host once it is back.

Two kinds of kill point: the SQL ones put the row exactly where a dead core leaves it (the
claim committed, nothing after it) — deterministic; the real one SIGKILLs the core in the
middle of an archive of 200 MB. The test stack settles abandoned operations after 3 s (20 s
for disk copies) and sweeps every second (``tests/conftest.py``). hostd's own crash points
(killed mid-snapshot and mid-archive) are in ``tests/hosts/test_lifecycle.py``.
"""

from __future__ import annotations

import threading
import time

import asyncpg
import httpx

from cli.stack import Stack
from tests.core.test_files import create, sh
from tests.core.test_lifecycle import wait_state
from tests.support import wait_for


async def abandon(stack_db: asyncpg.Pool, sid: str, state: str) -> None:
    """Leave the row as a core that died right after claiming ``state`` leaves it."""
    await stack_db.execute(
        "UPDATE sandboxes SET state = $2, updated_at = now() - interval '1 hour' WHERE id = $1", sid, state
    )


async def test_a_claim_left_by_a_dead_core_is_settled_from_the_host(
    org: httpx.Client, stack_db: asyncpg.Pool
) -> None:
    # claimed 'stopping', died before asking the host: the host still runs it → started
    running = create(org)
    sh(org, running, "echo a > ~/a")
    await abandon(stack_db, running, "stopping")
    assert wait_state(org, running, {"started", "error"}) == "started"
    assert sh(org, running, "cat ~/a") == "a\n"

    # claimed 'pausing', the host paused it, died before recording it → paused
    paused = create(org)
    org.post(f"/v1/sandboxes/{paused}/pause")
    await abandon(stack_db, paused, "pausing")
    assert wait_state(org, paused, {"paused", "error"}) == "paused"
    assert org.post(f"/v1/sandboxes/{paused}/resume").json()["state"] == "started"

    # claimed 'archiving' of a stopped sandbox, died before the host did anything → stopped
    stopped = create(org)
    org.post(f"/v1/sandboxes/{stopped}/stop")
    await abandon(stack_db, stopped, "archiving")
    assert wait_state(org, stopped, {"stopped", "error"}, timeout=90) == "stopped"
    assert org.post(f"/v1/sandboxes/{stopped}/start").json()["state"] == "started"


async def test_a_half_made_snapshot_is_never_used(org: httpx.Client, stack_db: asyncpg.Pool) -> None:
    sid = create(org)
    snap = org.post(f"/v1/sandboxes/{sid}/snapshot").json()
    # as if the core died between the host writing it and the core signing it
    await stack_db.execute(
        "UPDATE snapshots SET state = 'creating', created_at = now() - interval '1 hour' WHERE id = $1",
        snap["id"],
    )
    assert org.post(f"/v1/sandboxes/{sid}/restore", json={"snapshot_id": snap["id"]}).status_code == 404
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        row = await stack_db.fetchval("SELECT state FROM snapshots WHERE id = $1", snap["id"])
        if row == "deleted":
            break
        time.sleep(0.2)
    assert row == "deleted"  # swept, and removed from the host's store


def test_a_snapshot_deleted_while_its_host_is_down_leaves_the_host_once_it_is_back(
    org: httpx.Client, stack: Stack
) -> None:
    sid = create(org)
    snap = org.post(f"/v1/sandboxes/{sid}/snapshot").json()
    entry = stack.var / "hostd" / "pool" / "snapshots" / snap["id"]
    assert entry.is_dir()
    stack.stop_service("hostd")
    try:
        assert org.delete(f"/v1/snapshots/{snap['id']}").status_code == 204  # gone for the org at once
        assert entry.is_dir()  # its data is still on the host, which was down
    finally:
        stack.restart("hostd")  # whatever happened, the next tests get a hostd
    wait_for(lambda: not entry.exists(), what="the sweeper to remove the deleted snapshot from the host")


def test_killing_the_core_mid_archive_leaves_a_state_the_restart_settles(
    org: httpx.Client, stack: Stack
) -> None:
    sid = create(org)
    sh(org, sid, "head -c 200000000 /dev/urandom > ~/big; sha256sum ~/big > ~/big.sha")
    assert org.post(f"/v1/sandboxes/{sid}/stop").json()["state"] == "stopped"
    answers: list[int] = []

    def archive() -> None:
        try:
            answers.append(org.post(f"/v1/sandboxes/{sid}/archive", timeout=120).status_code)
        except httpx.HTTPError:
            answers.append(0)  # the connection died with the core

    thread = threading.Thread(target=archive)
    thread.start()
    deadline = time.monotonic() + 10
    while org.get(f"/v1/sandboxes/{sid}").json()["state"] != "archiving" and time.monotonic() < deadline:
        time.sleep(0.01)
    stack.restart("core", hard=True)
    thread.join()
    assert answers != [200] or org.get(f"/v1/sandboxes/{sid}").json()["state"] == "archived"
    # whatever the host got to (archived, or still stopped), the row ends up saying so
    settled = wait_state(org, sid, {"archived", "stopped"}, timeout=90)
    assert settled in ("archived", "stopped")
    assert org.post(f"/v1/sandboxes/{sid}/start").json()["state"] == "started"
    assert sh(org, sid, "sha256sum -c ~/big.sha >/dev/null && echo intact") == "intact\n"
