"""The real hostd, served by granian as ``make up`` serves it, driven over HTTP, registering
with a recording stand-in for the core."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import msgspec
import pytest

from contracts import guest
from contracts.host import DiskUsage, ExecResult, HostErrorBody, HostHealth, SandboxInfo
from hosts.config import load_config
from hosts.errors import TemplateNotFound
from hosts.runtime.factory import make_runtime
from hosts.templates import TemplateStore
from tests.hosts._hostd_fixtures import (
    BOOTSTRAP_TOKEN,
    HostdProcess,
    RecordingCore,
    free_port,
    hostd_env,
    kernel_names,
    wait_for,
)

SPEC = {"template": "dnah-base", "cpu": 1, "ram_mb": 256, "disk_gb": 1}
ROUTES = [
    ("GET", "/health"),
    ("GET", "/sandboxes"),
    ("POST", "/sandboxes"),
    ("POST", "/sandboxes/x/start"),
    ("POST", "/sandboxes/x/stop"),
    ("DELETE", "/sandboxes/x"),
    ("POST", "/sandboxes/x/exec"),
    ("POST", "/sandboxes/x/agent"),
    ("GET", "/sandboxes/x/disk"),
]


@pytest.fixture(scope="module")
def core() -> Iterator[RecordingCore]:
    """The core stand-in; ``hostd`` starts it only after hostd has found no core."""
    recorder = RecordingCore(free_port(), heartbeat_interval_s=0.2)
    yield recorder
    recorder.close()


@pytest.fixture(scope="module")
async def hostd(
    core: RecordingCore, template_store: TemplateStore, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[HostdProcess]:
    names = kernel_names(1)
    var_dir = tmp_path_factory.mktemp("hostd-app")
    port = free_port()
    env = hostd_env(
        core_url=core.url,
        port=port,
        var_dir=var_dir,
        template_cache=template_store.cache_dir,
        names=names,
        DNAH_HOST_CPU="3",
        DNAH_HOST_RAM_MB="3072",
        DNAH_HOST_DISK_GB="30",
    )
    process = HostdProcess(env, port, var_dir / "hostd.log")
    process.start()
    # Like `make up`, where hostd may come up before the core: it must keep trying.
    wait_for(lambda: process.log().count("core not reachable") >= 2, timeout=10, what="retries")
    core.start()
    yield process
    # hostd leaves sandboxes running when it stops, by design: destroy them first, then remove
    # the host setup (bridge, nft table, cgroup parent) it made, as `dnah down` does.
    with client_for(process, core) as http:
        for info in http.get("/sandboxes").json():
            assert http.delete(f"/sandboxes/{info['id']}").status_code == 204
    assert process.stop() == 0, process.log()
    runtime = make_runtime(load_config(env), template_store)
    await runtime.recover()
    await runtime.remove_host_setup()


def client_for(process: HostdProcess, core: RecordingCore, token: str | None = None) -> httpx.Client:
    """A client authenticated with ``token``, by default the one hostd last registered with."""
    token = token or current_token(core)
    return httpx.Client(base_url=process.url, headers={"authorization": f"Bearer {token}"}, timeout=30)


def current_token(core: RecordingCore) -> str:
    return wait_for(lambda: core.registrations, timeout=15, what="a registration")[-1].api_token


def latest_host_id(core: RecordingCore) -> str:
    """The id the recorder gave hostd's latest registration (it numbers them from 1)."""
    return f"host-{len(wait_for(lambda: core.registrations, timeout=15, what='a registration'))}"


@pytest.fixture
def http(hostd: HostdProcess, core: RecordingCore) -> Iterator[httpx.Client]:
    with client_for(hostd, core) as client:
        yield client


def error(response: httpx.Response) -> HostErrorBody:
    """The response's body, which must be a ``HostErrorBody`` and nothing more."""
    return msgspec.json.decode(response.content, type=HostErrorBody)


def log_lines(hostd: HostdProcess) -> list[dict[str, Any]]:
    """hostd's structured log lines (granian's own plain lines are skipped)."""
    return [json.loads(line) for line in hostd.log().splitlines() if line.startswith("{")]


def create(http: httpx.Client, sandbox_id: str) -> SandboxInfo:
    response = http.post("/sandboxes", json={"id": sandbox_id, **SPEC})
    assert response.status_code == 200, response.text
    return msgspec.json.decode(response.content, type=SandboxInfo)


def _built(store: TemplateStore, name: str) -> bool:
    try:
        store.get(name)
    except TemplateNotFound:
        return False
    return True


def run(http: httpx.Client, sandbox_id: str, cmd: list[str], **fields: object) -> httpx.Response:
    return http.post(f"/sandboxes/{sandbox_id}/exec", json={"cmd": cmd, **fields})


# registration -------------------------------------------------------------------------------


def test_registration_describes_the_host(
    hostd: HostdProcess, core: RecordingCore, template_store: TemplateStore
) -> None:
    registration = wait_for(lambda: core.registrations, timeout=15, what="a registration")[0]

    assert registration.bootstrap_token == BOOTSTRAP_TOKEN
    assert registration.api_url == hostd.url
    assert len(registration.api_token) >= 32
    assert registration.runtime == "oci"
    assert (registration.cpu, registration.ram_mb, registration.disk_gb) == (3, 3072, 30)
    # every template whose current build is in the cache: the base, and the layered ones built
    built = [name for name in template_store.names() if _built(template_store, name)]
    assert registration.templates == built and built[0] == "dnah-base"
    assert registration.sandboxes == []


def test_heartbeats_follow_registration(hostd: HostdProcess, core: RecordingCore) -> None:
    host_id = latest_host_id(core)
    wait_for(lambda: len(core.heartbeats_for(host_id)) >= 2, timeout=10, what="two heartbeats")
    assert all(rid and len(rid) == 32 for rid in core.request_ids)
    assert len(set(core.request_ids)) == len(core.request_ids), "request ids were reused"


def test_registration_is_retried_until_the_core_is_up(hostd: HostdProcess, core: RecordingCore) -> None:
    attempts = [line for line in log_lines(hostd) if line.get("event") == "core not reachable, will retry"]
    assert [line["attempt"] for line in attempts[:2]] == [1, 2]
    # Alone on its xdist worker this may run before hostd's next retry reached the core.
    assert len(wait_for(lambda: core.registrations, timeout=15, what="a registration")) == 1


@pytest.mark.parametrize("status", [404, 401])
def test_a_refused_heartbeat_makes_hostd_register_again_with_its_inventory(
    hostd: HostdProcess, core: RecordingCore, http: httpx.Client, status: int
) -> None:
    info = create(http, "app-inventory")
    try:
        host_id = latest_host_id(core)
        wait_for(
            lambda: any(beat.sandboxes == [info] for beat in core.heartbeats_for(host_id)),
            timeout=10,
            what="a heartbeat listing the sandbox",
        )
        registered_before = len(core.registrations)
        core.refuse[host_id] = status

        again = wait_for(
            lambda: core.registrations[registered_before:], timeout=10, what="a new registration"
        )[0]
        assert again.sandboxes == [info]
        new_id = f"host-{registered_before + 1}"
        wait_for(lambda: core.heartbeats_for(new_id), timeout=10, what="heartbeats under the new id")
    finally:
        assert http.delete("/sandboxes/app-inventory").status_code == 204


# auth ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong-token", "Basic Zm9vOmJhcg==", "Bearer", "Token x"]
)
def test_every_route_requires_the_token(
    hostd: HostdProcess, method: str, path: str, authorization: str | None
) -> None:
    headers = {"authorization": authorization} if authorization else {}
    response = httpx.request(method, hostd.url + path, headers=headers, json={})

    assert response.status_code == 401
    assert error(response) == HostErrorBody(code="unauthorized", message="missing or wrong bearer token")


def test_the_right_token_is_accepted(hostd: HostdProcess, core: RecordingCore) -> None:
    for scheme in ("Bearer", "bearer"):
        headers = {"authorization": f"{scheme} {current_token(core)}"}
        response = httpx.get(f"{hostd.url}/health", headers=headers)
        assert response.status_code == 200
        health = msgspec.json.decode(response.content, type=HostHealth)
        assert (health.status, health.runtime) == ("ok", "oci")


# sandboxes ----------------------------------------------------------------------------------


def test_create_exec_stop_start_destroy(http: httpx.Client) -> None:
    info = create(http, "app-life")
    assert info.state == "running" and info.ip is not None
    assert info in msgspec.json.decode(http.get("/sandboxes").content, type=list[SandboxInfo])

    response = run(http, "app-life", ["sh", "-c", 'echo "$A" $(pwd); exit 7'], env={"A": "x"}, cwd="/tmp")
    assert response.status_code == 200
    result = msgspec.json.decode(response.content, type=ExecResult)
    assert (result.stdout, result.exit_code, result.timed_out) == ("x /tmp\n", 7, False)

    stopped = http.post("/sandboxes/app-life/stop")
    assert stopped.status_code == 200 and stopped.json() == {"id": "app-life", "state": "stopped", "ip": None}
    refused = run(http, "app-life", ["true"])
    assert refused.status_code == 409 and error(refused).code == "sandbox_conflict"

    started = http.post("/sandboxes/app-life/start", json={"id": "app-life", **SPEC})
    assert started.status_code == 200 and started.json()["state"] == "running"
    assert run(http, "app-life", ["echo", "back"]).json()["stdout"] == "back\n"

    assert http.delete("/sandboxes/app-life").status_code == 204
    assert http.get("/sandboxes").json() == []
    gone = run(http, "app-life", ["true"])
    assert gone.status_code == 404 and error(gone).code == "sandbox_not_found"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/sandboxes", b"not json"),
        ("/sandboxes", b""),
        ("/sandboxes", b'{"id": "a", "template": "dnah-base"}'),
        ("/sandboxes", b'{"id": "a", "template": "dnah-base", "cpu": "1", "ram_mb": 1, "disk_gb": 1}'),
        (
            "/sandboxes",
            b'{"id": "a", "template": "dnah-base", "cpu": 1, "ram_mb": 1, "disk_gb": 1, "gpu": 1}',
        ),
        ("/sandboxes", b'{"id": "../etc", "template": "dnah-base", "cpu": 1, "ram_mb": 1, "disk_gb": 1}'),
        ("/sandboxes/a/start", b'{"id": "b", "template": "dnah-base", "cpu": 1, "ram_mb": 1, "disk_gb": 1}'),
        ("/sandboxes/a/exec", b'{"cmd": "echo hi"}'),
        ("/sandboxes/a/exec", b'{"argv": ["echo"]}'),
        ("/sandboxes/a/agent", b"not json"),
        ("/sandboxes/a/agent", b'["dirs"]'),
        ("/sandboxes/a/agent", b'{"t": "launch"}'),
        ("/sandboxes/a/agent", b'{"t": "pong", "version": 2, "agent": "me"}'),
        ("/sandboxes/a/agent", b'{"t": "code.run", "language": "cobol", "code": ""}'),
        ("/sandboxes/a/agent", b'{"t": "exec", "argv": "ls"}'),
    ],
)
def test_bad_bodies_get_400(http: httpx.Client, path: str, body: bytes) -> None:
    response = http.post(path, content=body, headers={"content-type": "application/json"})

    assert response.status_code == 400, response.text
    assert error(response).code == "bad_request"
    assert error(response).message


def relay(http: httpx.Client, sandbox_id: str, message: dict[str, object]) -> httpx.Response:
    return http.post(f"/sandboxes/{sandbox_id}/agent", json=message)


def reply(response: httpx.Response) -> guest.GuestToHost:
    assert response.status_code == 200, response.text
    return guest.decode_from_guest(response.content)


def test_agent_relay_carries_any_operation(http: httpx.Client) -> None:
    create(http, "app-relay")
    try:
        dirs = reply(relay(http, "app-relay", {"t": "dirs"}))
        assert dirs == guest.DirsResult(
            id=dirs.id, home="/home/daytona", work="/home/daytona", project="/workspace"
        )

        ran = reply(
            relay(
                http,
                "app-relay",
                {"t": "code.run", "language": "python", "code": "import os; print(os.getuid())", "id": 9},
            )
        )
        assert isinstance(ran, guest.ExecResult)
        assert (ran.stdout, ran.exit_code) == ("1000\n", 0)

        metrics = reply(relay(http, "app-relay", {"t": "metrics"}))
        assert isinstance(metrics, guest.MetricsResult)
        assert (metrics.cpus, metrics.mem_limit_bytes) == (SPEC["cpu"], SPEC["ram_mb"] * 2**20)

        # An agent error is the agent's answer, relayed with 200 for the caller to interpret.
        refused = reply(relay(http, "app-relay", {"t": "fs.stat", "path": "/no/such/file"}))
        assert isinstance(refused, guest.Error) and refused.code == "not_found"
        # What the contract itself refuses (a NUL cannot reach execve) never reaches the agent.
        nul = relay(http, "app-relay", {"t": "code.run", "language": "bash", "code": "\u0000"})
        assert nul.status_code == 400 and "invalid agent request" in nul.json()["message"], nul.text
    finally:
        assert http.delete("/sandboxes/app-relay").status_code == 204


def test_agent_relay_and_disk_follow_the_sandbox_state(http: httpx.Client) -> None:
    create(http, "app-states")
    try:
        before = msgspec.json.decode(http.get("/sandboxes/app-states/disk").content, type=DiskUsage)
        assert (
            run(http, "app-states", ["dd", "if=/dev/urandom", "of=/tmp/blob", "bs=1M", "count=8"]).json()[
                "exit_code"
            ]
            == 0
        )
        after = msgspec.json.decode(http.get("/sandboxes/app-states/disk").content, type=DiskUsage)
        assert after.used_bytes - before.used_bytes >= 8 * 2**20

        assert http.post("/sandboxes/app-states/stop").status_code == 200
        refused = relay(http, "app-states", {"t": "dirs"})
        assert refused.status_code == 409 and error(refused).code == "sandbox_conflict"
        kept = msgspec.json.decode(http.get("/sandboxes/app-states/disk").content, type=DiskUsage)
        assert kept.used_bytes >= after.used_bytes - 2**20  # a stopped sandbox keeps its disk
    finally:
        assert http.delete("/sandboxes/app-states").status_code == 204


def test_unknown_sandboxes_get_404(http: httpx.Client) -> None:
    for response in (
        run(http, "app-nope", ["true"]),
        relay(http, "app-nope", {"t": "dirs"}),
        http.get("/sandboxes/app-nope/disk"),
        http.get("/sandboxes/%2E%2E/disk"),
        http.post("/sandboxes/app-nope/stop"),
        http.post("/sandboxes/app-nope/start", json={"id": "app-nope", **SPEC}),
        http.post("/sandboxes/%2E%2E/stop"),
    ):
        assert response.status_code == 404
        assert error(response).code == "sandbox_not_found"
    assert http.delete("/sandboxes/app-nope").status_code == 204  # destroy is idempotent
    unknown_template = http.post("/sandboxes", json={"id": "app-t", **SPEC, "template": "nope"})
    assert unknown_template.status_code == 404 and error(unknown_template).code == "template_not_found"


def test_unknown_routes_answer_in_the_error_shape(http: httpx.Client) -> None:
    assert error(http.get("/nothing-here")) == HostErrorBody(code="not_found", message="Not Found")
    assert http.put("/sandboxes").status_code == 405


def test_request_id_is_echoed_and_logged(hostd: HostdProcess, http: httpx.Client) -> None:
    response = http.get("/sandboxes", headers={"x-request-id": "test-request-0123"})
    assert response.headers["x-request-id"] == "test-request-0123"
    minted = http.get("/sandboxes").headers["x-request-id"]
    assert len(minted) == 32

    logged = [line for line in log_lines(hostd) if line.get("request_id") == "test-request-0123"]
    assert logged == [
        {
            "event": "request",
            "method": "GET",
            "path": "/sandboxes",
            "status": 200,
            "duration_ms": logged[0]["duration_ms"],
            "service": "hostd",
            "request_id": "test-request-0123",
            "level": "info",
            "timestamp": logged[0]["timestamp"],
        }
    ]


# restart (last: it replaces the hostd process) ----------------------------------------------


def test_a_restarted_hostd_adopts_the_running_sandboxes(hostd: HostdProcess, core: RecordingCore) -> None:
    pid1_started = ["cut", "-d", " ", "-f", "22", "/proc/1/stat"]  # the agent's start time, in ticks
    old_token = current_token(core)
    with client_for(hostd, core, old_token) as http:
        info = create(http, "app-survivor")
        booted_at = run(http, "app-survivor", pid1_started).json()["stdout"]

    assert hostd.stop() == 0
    registered_before = len(core.registrations)
    hostd.start()

    registration = wait_for(
        lambda: core.registrations[registered_before:], timeout=15, what="the new hostd's registration"
    )[0]
    assert registration.sandboxes == [info]
    assert registration.api_token != old_token, "each start has its own API token"
    assert (
        httpx.get(f"{hostd.url}/health", headers={"authorization": f"Bearer {old_token}"}).status_code == 401
    )
    with client_for(hostd, core) as http:
        # Adopted, not rebooted: the agent is the very process that was running before.
        assert run(http, "app-survivor", pid1_started).json()["stdout"] == booted_at
