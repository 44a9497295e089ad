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
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from cli.stack import Stack
from hosts.config import load_config as load_hostd_config
from hosts.runtime.oci import _host as oci_host
from hosts.runtime.oci.runc import Runc
from tests.private_stack import private_stack
from tests.support import mint_key, wait_for


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


# crashes under load ---------------------------------------------------------------------------

TRANSITIONAL_ROWS = ("creating", "starting", "stopping", "destroying", "pausing", "resuming")


def _churn(base_url: str, token: str, stop: threading.Event, statuses: list[int], workers: int = 4) -> None:
    """``workers`` clients looping create → exec → stop → start → delete until ``stop`` is
    set, adding every status seen to ``statuses`` (0: no answer; errors while a service is
    down are expected)."""

    async def worker() -> None:
        async with httpx.AsyncClient(
            base_url=base_url, headers={"authorization": f"Bearer {token}"}, timeout=60
        ) as client:
            while not stop.is_set():
                try:
                    resp = await client.post("/v1/sandboxes", json={})
                    statuses.append(resp.status_code)
                    if resp.status_code != 201:
                        await asyncio.sleep(0.2)
                        continue
                    sid = resp.json()["id"]
                    for method, path, body in (
                        ("POST", f"/v1/sandboxes/{sid}/exec", {"cmd": ["true"]}),
                        ("POST", f"/v1/sandboxes/{sid}/stop", None),
                        ("POST", f"/v1/sandboxes/{sid}/start", None),
                        ("DELETE", f"/v1/sandboxes/{sid}", None),
                    ):
                        resp = await client.request(method, path, json=body)
                        statuses.append(resp.status_code)
                except httpx.HTTPError:
                    statuses.append(0)
                    await asyncio.sleep(0.2)

    async def all_workers() -> None:
        await asyncio.gather(*(worker() for _ in range(workers)))

    asyncio.run(all_workers())


def _under_load(stack: Stack, token: str, *, url: str, fault: Callable[[], None]) -> list[int]:
    """Run ``_churn`` against ``url``, apply ``fault`` once sandboxes are mid-operation, let
    the load run on a little after it, and return the statuses seen."""
    stop = threading.Event()
    statuses: list[int] = []
    churn = threading.Thread(target=_churn, args=(url, token, stop, statuses))
    churn.start()
    try:
        in_flight = "SELECT count(*) AS n FROM sandboxes WHERE state = ANY($1::text[])"
        wait_for(lambda: sql(stack, in_flight, list(TRANSITIONAL_ROWS))[0]["n"] >= 2, what="operations")
        fault()
        done = len(statuses)
        wait_for(lambda: len(statuses) > done + 20, what="the load to go on after the fault", timeout_s=60)
    finally:
        stop.set()
        churn.join()
    return statuses


def host_resources(stack: Stack) -> dict[str, set[str]]:
    """What the host holds for booted sandboxes, read from the kernel and runc directly."""
    config = load_hostd_config(stack.env())
    netns_prefix = f"{config.bridge}@"
    ports = Path(f"/sys/class/net/{config.bridge}/brif")
    return {
        "runc containers": set(Runc(config.state_dir / "runc").ids()),
        "netns": {p.name[len(netns_prefix) :] for p in Path("/run/netns").glob(f"{netns_prefix}*")},
        "cgroups": oci_host.sandbox_ids(config.cgroup),
        "veths": {p.name for p in ports.iterdir()} if ports.is_dir() else set(),
    }


def _agrees(stack: Stack) -> str:
    """'' once rows, host inventory and host resources agree; else what does not."""
    rows = {
        r["id"]: r["state"]
        for r in sql(
            stack,
            "SELECT s.id, s.state FROM sandboxes s JOIN hosts h ON h.id = s.host_id"
            " WHERE h.name = $1 AND s.state <> 'destroyed'",
            stack.config.host_name,
        )
    }
    inventory = {s["id"]: s["state"] for s in host_inventory(stack)}
    booted = {sid for sid, state in inventory.items() if state in ("running", "paused")}
    problems = []
    if unsettled := {sid for sid, state in rows.items() if state in TRANSITIONAL_ROWS}:
        problems.append(f"rows still mid-operation: {unsettled}")
    if alive_in_error := {sid for sid, state in rows.items() if state == "error" and sid in booted}:
        problems.append(f"rows in error whose sandbox runs: {alive_in_error}")
    if orphans := inventory.keys() - rows.keys():
        problems.append(f"sandboxes on the host without a row: {orphans}")
    if missing := {sid for sid, state in rows.items() if state in ("started", "paused")} - booted:
        problems.append(f"rows started or paused that the host does not run: {missing}")
    resources = host_resources(stack)
    for kind in ("runc containers", "netns", "cgroups"):
        if resources[kind] != booted:
            problems.append(f"{kind} {sorted(resources[kind])} != booted sandboxes {sorted(booted)}")
    if len(resources["veths"]) != len(booted):
        problems.append(f"{len(resources['veths'])} veths for {len(booted)} booted sandboxes")
    return "; ".join(problems)


def _wait_for_agreement(stack: Stack) -> None:
    seen = [""]

    def agreed() -> bool:
        seen[0] = _agrees(stack)
        return not seen[0]

    try:
        wait_for(agreed, what="rows, host and resources to agree")
    except AssertionError:
        raise AssertionError(f"rows, host and resources disagree: {seen[0]}") from None


def test_hostd_killed_under_concurrent_lifecycle_calls_adopts_everything(
    stack: Stack, org: httpx.Client
) -> None:
    token = org.headers["authorization"].removeprefix("Bearer ")

    def kill_hostd() -> None:
        victim = stack.pid("hostd")
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        stack.restart("hostd")  # returns once the new hostd has registered

    statuses = _under_load(stack, token, url=stack.config.gateway_url, fault=kill_hostd)
    assert statuses.count(201) >= 4, statuses
    _wait_for_agreement(stack)


@pytest.fixture(scope="module")
def patient_stack() -> Iterator[Stack]:
    """A stack whose sweeper settles nothing for ten minutes: what is settled within the
    test's waits was settled by the core's start-up."""
    with private_stack({"DNAH_STALE_OPERATION_S": "600", "DNAH_STALE_LONG_OPERATION_S": "6000"}) as stack:
        yield stack


def test_core_killed_mid_operation_settles_rows_at_start_up(patient_stack: Stack) -> None:
    stack = patient_stack
    with httpx.Client(base_url=stack.config.core_url, timeout=60) as admin:
        admin.headers["authorization"] = f"Bearer {stack.admin_token}"
        token = mint_key(admin, "core-crash")
    left: list[str] = []

    def kill_core() -> None:
        victim = stack.pid("core")
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        rows = sql(stack, "SELECT id FROM sandboxes WHERE state = ANY($1::text[])", list(TRANSITIONAL_ROWS))
        left.extend(r["id"] for r in rows)
        stack.restart("core")

    _under_load(stack, token, url=stack.config.core_url, fault=kill_core)
    assert left, "the core died with no operation in flight"
    _wait_for_agreement(stack)
    settled = sql(stack, "SELECT id, state, error_reason FROM sandboxes WHERE id = ANY($1)", left)
    assert {r["id"] for r in settled} == set(left)
    assert not [r for r in settled if r["state"] in TRANSITIONAL_ROWS], settled


def test_postgres_killed_mid_operation_settles_rows_once_it_is_back(patient_stack: Stack) -> None:
    """An operation whose final UPDATE met a dead database sits in its transitional state as
    if its core had died: the core notices the restarted database and settles those rows."""
    stack = patient_stack
    with httpx.Client(base_url=stack.config.core_url, timeout=60) as admin:
        admin.headers["authorization"] = f"Bearer {stack.admin_token}"
        token = mint_key(admin, "postgres-crash")

    def kill_postgres() -> None:
        victim = stack.pid("postgres")
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: stack.pid("postgres") is None, what="the postmaster to be gone")
        wait_for(_respawned(stack, "postgres"), what="Postgres to start again")

    statuses = _under_load(stack, token, url=stack.config.core_url, fault=kill_postgres)
    assert statuses.count(201) >= 4, statuses
    assert 500 not in statuses, statuses  # a request that meets the dead database gets a 503
    _wait_for_agreement(stack)


def _respawned(stack: Stack, name: str) -> Callable[[], bool]:
    """One try at what the supervisor does for a dead child (backends of a killed postmaster
    may still hold its shared memory for a moment: then the start fails, and is tried again)."""

    def attempt() -> bool:
        try:
            stack.respawn(name)
        except Exception:
            return False
        return True

    return attempt
