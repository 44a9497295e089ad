"""hostd's lifecycle routes (``hosts/lifecycle.py``) on the real hostd under granian with real
OCI sandboxes: pause/resume, resize, signed snapshots (take, seal, restore, clone,
tampering, key rotation), archives, and SIGKILLs in the middle of a snapshot or an archive.

Snapshots are read-only btrfs subvolumes in the pool's ``snapshots/`` (tampering with their
data takes turning read-only off); archives are tar + zstd in ``var/archives``.

The test plays the core's part in signing: it holds the Ed25519 keys and uses
``contracts.snapshots`` exactly as the core does.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import msgspec
import pytest

from contracts.host import HostErrorBody, SandboxInfo, SnapshotTaken
from contracts.snapshots import SnapshotClaim, encode_verify_key, new_signing_key, parse_signing_key, sign
from hosts.config import load_config
from hosts.runtime.factory import make_runtime
from hosts.runtime.oci.runc import Runc
from hosts.templates import TemplateStore
from tests.hosts._hostd_fixtures import (
    HostdProcess,
    KernelNames,
    RecordingCore,
    free_port,
    hostd_env,
    kernel_names,
    wait_for,
)

SPEC = {"template": "dnah-base", "cpu": 1, "ram_mb": 256, "disk_gb": 1}


class Keys:
    """The core's side of signing: an old and a new key, both accepted (a rotation)."""

    def __init__(self) -> None:
        self.old = parse_signing_key(new_signing_key("old"))
        self.new = parse_signing_key(new_signing_key("new"))
        self.stranger = parse_signing_key(new_signing_key("stranger"))
        self.wire = {kid: encode_verify_key(key.verify_key) for kid, key in (self.old, self.new)}

    def seal(self, http: httpx.Client, taken: SnapshotTaken, *, by: str = "new", status: int = 204) -> None:
        kid, key = {"old": self.old, "new": self.new, "stranger": self.stranger}[by]
        claim = SnapshotClaim(
            sandbox_id=taken.sandbox_id,
            snapshot_id=taken.snapshot_id,
            manifest_hash=taken.manifest_hash,
            size=taken.size,
            ts=int(time.time()),
        )
        response = http.put(
            f"/snapshots/{taken.snapshot_id}/signature", content=msgspec.json.encode(sign(claim, kid, key))
        )
        assert response.status_code == status, response.text


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


@pytest.fixture(scope="module")
def names() -> KernelNames:
    return kernel_names(2)


@pytest.fixture(scope="module")
def var_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostd-lifecycle")


@pytest.fixture(scope="module")
def core() -> Iterator[RecordingCore]:
    recorder = RecordingCore(free_port(), heartbeat_interval_s=0.5)
    recorder.start()
    yield recorder
    recorder.close()


@pytest.fixture(scope="module")
async def hostd(
    core: RecordingCore, template_store: TemplateStore, var_dir: Path, names: KernelNames
) -> AsyncIterator[HostdProcess]:
    port = free_port()
    env = hostd_env(
        core_url=core.url, port=port, var_dir=var_dir, template_cache=template_store.cache_dir, names=names
    )
    process = HostdProcess(env, port, var_dir / "hostd.log")
    process.start()
    yield process
    with client_for(process, core) as http:
        for info in http.get("/sandboxes").json():
            assert http.delete(f"/sandboxes/{info['id']}").status_code == 204
    assert process.stop() == 0, process.log()
    runtime = make_runtime(load_config(env), template_store)
    await runtime.recover()
    await runtime.remove_host_setup()


def client_for(process: HostdProcess, core: RecordingCore) -> httpx.Client:
    token = wait_for(lambda: core.registrations, timeout=15, what="a registration")[-1].api_token
    return httpx.Client(base_url=process.url, headers={"authorization": f"Bearer {token}"}, timeout=60)


@pytest.fixture
def http(hostd: HostdProcess, core: RecordingCore) -> Iterator[httpx.Client]:
    with client_for(hostd, core) as client:
        yield client


_counter = iter(range(1_000_000))


@pytest.fixture
def sandbox(http: httpx.Client) -> Iterator[str]:
    """A running sandbox, destroyed after the test."""
    sandbox_id = f"lc{next(_counter)}-{int(time.time() * 1000) % 100000}"
    create(http, sandbox_id)
    yield sandbox_id
    http.delete(f"/sandboxes/{sandbox_id}")


def create(http: httpx.Client, sandbox_id: str) -> SandboxInfo:
    response = http.post("/sandboxes", json={"id": sandbox_id, **SPEC})
    assert response.status_code == 200, response.text
    return msgspec.json.decode(response.content, type=SandboxInfo)


def sh(http: httpx.Client, sandbox_id: str, script: str) -> str:
    response = http.post(f"/sandboxes/{sandbox_id}/exec", json={"cmd": ["sh", "-c", script]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["exit_code"] == 0, body
    return str(body["stdout"]).strip()


def state(http: httpx.Client, sandbox_id: str) -> str | None:
    return next((i["state"] for i in http.get("/sandboxes").json() if i["id"] == sandbox_id), None)


def error(response: httpx.Response, status: int) -> HostErrorBody:
    assert response.status_code == status, response.text
    return msgspec.json.decode(response.content, type=HostErrorBody)


def take(http: httpx.Client, sandbox_id: str, snapshot_id: str) -> SnapshotTaken:
    response = http.post(f"/sandboxes/{sandbox_id}/snapshots", json={"snapshot_id": snapshot_id})
    assert response.status_code == 200, response.text
    return msgspec.json.decode(response.content, type=SnapshotTaken)


def disk(var_dir: Path, sandbox_id: str) -> Path:
    """The sandbox's disk in the storage pool, as the host sees it."""
    return var_dir / "hostd" / "pool" / "disks" / sandbox_id


def snapshots(var_dir: Path) -> Path:
    """The snapshot store: inside the pool, since a snapshot is a btrfs snapshot of a disk."""
    return var_dir / "hostd" / "pool" / "snapshots"


LIFECYCLE_ROUTES = [
    ("POST", "/sandboxes/x/pause"),
    ("POST", "/sandboxes/x/resume"),
    ("POST", "/sandboxes/x/resize"),
    ("POST", "/sandboxes/x/snapshots"),
    ("PUT", "/snapshots/s/signature"),
    ("DELETE", "/snapshots/s"),
    ("POST", "/sandboxes/x/restore"),
    ("POST", "/snapshots/s/clone"),
    ("POST", "/sandboxes/x/archive"),
    ("POST", "/sandboxes/x/unarchive"),
]


@pytest.mark.parametrize(("method", "path"), LIFECYCLE_ROUTES)
def test_every_lifecycle_route_requires_the_token(hostd: HostdProcess, method: str, path: str) -> None:
    response = httpx.request(
        method, hostd.url + path, headers={"authorization": "Bearer wrong-token-0123456"}
    )
    assert error(response, 401).code == "unauthorized"


# pause / resume ------------------------------------------------------------------------------


def test_pause_stops_progress_and_resume_restarts_it(http: httpx.Client, sandbox: str, var_dir: Path) -> None:
    counter = disk(var_dir, sandbox) / "tmp" / "counter"
    sh(
        http,
        sandbox,
        "setsid sh -c 'i=0; while true; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.02; done' "
        "</dev/null >/dev/null 2>&1 &",
    )
    wait_for(lambda: counter.exists() and counter.read_text().strip(), timeout=10, what="the loop")

    paused = http.post(f"/sandboxes/{sandbox}/pause")
    assert paused.status_code == 200 and paused.json()["state"] == "paused"
    assert state(http, sandbox) == "paused"
    assert http.post(f"/sandboxes/{sandbox}/pause").json()["state"] == "paused"  # idempotent
    frozen_at = counter.read_text()
    time.sleep(0.5)
    assert counter.read_text() == frozen_at

    assert http.post(f"/sandboxes/{sandbox}/resume").json()["state"] == "running"
    wait_for(lambda: counter.read_text() != frozen_at, timeout=10, what="the loop to go on")
    assert http.post(f"/sandboxes/{sandbox}/resume").json()["state"] == "running"  # idempotent

    assert http.post(f"/sandboxes/{sandbox}/stop").json()["state"] == "stopped"
    assert error(http.post(f"/sandboxes/{sandbox}/pause"), 409).code == "sandbox_conflict"
    assert error(http.post(f"/sandboxes/{sandbox}/resume"), 409).code == "sandbox_conflict"


# resize --------------------------------------------------------------------------------------


def test_resize_grows_a_running_sandbox_live_and_shrinks_only_a_stopped_one(
    http: httpx.Client, sandbox: str, names: KernelNames
) -> None:
    response = http.post(f"/sandboxes/{sandbox}/resize", json={"cpu": 2, "ram_mb": 512, "disk_gb": 2})
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "running"
    # The sandbox sees its own cgroup at /sys/fs/cgroup (cgroup v2) — the new limits, live.
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").exists():
        cgroup = root / names.cgroup / sandbox
        assert (cgroup / "memory.max").read_text().strip() == str(512 * 2**20)
        assert (cgroup / "cpu.max").read_text().split() == ["200000", "100000"]
    else:
        memory, cpu = root / "memory" / names.cgroup / sandbox, root / "cpu" / names.cgroup / sandbox
        assert (memory / "memory.limit_in_bytes").read_text().strip() == str(512 * 2**20)
        assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "200000"

    shrink = error(http.post(f"/sandboxes/{sandbox}/resize", json={"ram_mb": 256}), 409)
    assert "only grow live" in shrink.message
    assert "only grows" in error(http.post(f"/sandboxes/{sandbox}/resize", json={"disk_gb": 1}), 400).message
    assert error(http.post(f"/sandboxes/{sandbox}/resize", json={"cpu": 0}), 400).code == "bad_request"
    assert error(http.post(f"/sandboxes/{sandbox}/resize", json={"cpu": "x"}), 400).code == "bad_request"

    http.post(f"/sandboxes/{sandbox}/stop")
    assert http.post(f"/sandboxes/{sandbox}/resize", json={"cpu": 1, "ram_mb": 128}).status_code == 200
    assert error(http.post("/sandboxes/nope/resize", json={"cpu": 2}), 404).code == "sandbox_not_found"


# snapshots -----------------------------------------------------------------------------------


def test_snapshot_seal_restore_brings_back_the_disk_signed_by_an_old_key(
    http: httpx.Client, sandbox: str, keys: Keys, var_dir: Path
) -> None:
    sh(http, sandbox, "echo before > ~/kept")
    taken = take(http, sandbox, f"{sandbox}-s1")
    stored = snapshots(var_dir) / taken.snapshot_id
    assert taken.sandbox_id == sandbox and taken.memory is False
    assert taken.manifest_hash == hashlib.sha256((stored / "manifest.json").read_bytes()).hexdigest()
    manifest = json.loads((stored / "manifest.json").read_text())
    assert manifest["kind"] == "subvolume" and taken.size == manifest["disk"]["size"] > 0
    assert (stored / "disk" / "home" / "daytona" / "kept").read_text() == "before\n"
    assert state(http, sandbox) == "running"  # thawed after the copy
    keys.seal(http, taken, by="old")

    sh(http, sandbox, "echo after > ~/kept; echo new > ~/later")
    restored = http.post(
        f"/sandboxes/{sandbox}/restore", json={"snapshot_id": taken.snapshot_id, "verify_keys": keys.wire}
    )
    assert restored.status_code == 200, restored.text
    assert restored.json()["state"] == "running"
    assert sh(http, sandbox, "cat ~/kept; test -e ~/later || echo gone") == "before\ngone"

    # The same snapshot once the old key is retired: refused, and the sandbox untouched.
    sh(http, sandbox, "echo again > ~/later")
    only_new = {"new": keys.wire["new"]}
    refused = http.post(
        f"/sandboxes/{sandbox}/restore", json={"snapshot_id": taken.snapshot_id, "verify_keys": only_new}
    )
    assert "unknown key 'old'" in error(refused, 422).message
    assert sh(http, sandbox, "cat ~/later") == "again"


def test_a_stopped_sandbox_snapshots_and_a_duplicate_id_conflicts(http: httpx.Client, sandbox: str) -> None:
    http.post(f"/sandboxes/{sandbox}/stop")
    taken = take(http, sandbox, f"{sandbox}-s")
    assert state(http, sandbox) == "stopped"
    again = http.post(f"/sandboxes/{sandbox}/snapshots", json={"snapshot_id": taken.snapshot_id})
    assert error(again, 409).code == "sandbox_conflict"


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0x01
    path.write_bytes(bytes(data))


def _flip_in_subvolume(snapshot: Path) -> None:
    """Flip one byte of a file in the snapshot's read-only disk: writable, write, read-only."""
    subvolume = snapshot / "disk"
    subprocess.run(["btrfs", "property", "set", "-ts", str(subvolume), "ro", "false"], check=True)
    _flip(subvolume / "home" / "daytona" / "f", 0)
    subprocess.run(["btrfs", "property", "set", "-ts", str(subvolume), "ro", "true"], check=True)


def _flip_signature(path: Path) -> None:
    record = json.loads(path.read_text())
    raw = bytearray(base64.b64decode(record["signature"]))
    raw[0] ^= 0x01
    record["signature"] = base64.b64encode(bytes(raw)).decode()
    path.write_text(json.dumps(record))


TAMPERINGS = {
    "data byte": (_flip_in_subvolume, "does not match its manifest"),
    "manifest byte": (lambda d: _flip(d / "manifest.json", 20), "manifest does not match its signature"),
    "signature byte": (lambda d: _flip_signature(d / "signature.json"), "signature does not match the claim"),
    "signature file byte": (lambda d: _flip(d / "signature.json", 30), "rejected"),
    "unsigned": (lambda d: (d / "signature.json").unlink(), "is not signed"),
}


@pytest.mark.parametrize("how", [*TAMPERINGS, "unknown key"])
def test_a_tampered_or_untrusted_snapshot_is_refused_and_nothing_changes(
    http: httpx.Client, sandbox: str, keys: Keys, var_dir: Path, how: str
) -> None:
    sh(http, sandbox, "echo v1 > ~/f")
    taken = take(http, sandbox, f"{sandbox}-t")
    keys.seal(http, taken, by="stranger" if how == "unknown key" else "new")
    sh(http, sandbox, "echo v2 > ~/f; echo later > ~/g")
    if how == "unknown key":
        expected = "unknown key 'stranger'"
    else:
        tamper, expected = TAMPERINGS[how]
        tamper(snapshots(var_dir) / taken.snapshot_id)
    body = {"snapshot_id": taken.snapshot_id, "verify_keys": keys.wire}

    refused = error(http.post(f"/sandboxes/{sandbox}/restore", json=body), 422)
    assert refused.code == "snapshot_rejected" and expected in refused.message, refused
    assert state(http, sandbox) == "running"
    assert sh(http, sandbox, "cat ~/f ~/g") == "v2\nlater"

    clone = {"spec": {"id": f"{sandbox}-c", **SPEC}, "verify_keys": keys.wire}
    refused = error(http.post(f"/snapshots/{taken.snapshot_id}/clone", json=clone), 422)
    assert expected in refused.message
    assert state(http, f"{sandbox}-c") is None


def test_a_snapshot_restores_only_into_its_own_sandbox(http: httpx.Client, sandbox: str, keys: Keys) -> None:
    other = f"{sandbox}-o"
    create(http, other)
    try:
        taken = take(http, other, f"{other}-s")
        keys.seal(http, taken)
        body = {"snapshot_id": taken.snapshot_id, "verify_keys": keys.wire}
        refused = error(http.post(f"/sandboxes/{sandbox}/restore", json=body), 422)
        assert f"is of sandbox {other}" in refused.message
    finally:
        http.delete(f"/sandboxes/{other}")


def test_clone_makes_a_new_sandbox_from_a_snapshot_while_the_source_runs(
    http: httpx.Client, sandbox: str, keys: Keys
) -> None:
    sh(http, sandbox, "echo shared > ~/f")
    taken = take(http, sandbox, f"{sandbox}-c")
    keys.seal(http, taken)
    clone_id = f"{sandbox}-k"
    body = {"spec": {"id": clone_id, **SPEC}, "verify_keys": keys.wire}
    response = http.post(f"/snapshots/{taken.snapshot_id}/clone", json=body)
    try:
        assert response.status_code == 200, response.text
        assert response.json()["state"] == "running"
        sh(http, sandbox, "echo source-only > ~/f")
        assert sh(http, clone_id, "cat ~/f; hostname") == f"shared\n{clone_id}"
        assert sh(http, sandbox, "cat ~/f") == "source-only"
        again = http.post(f"/snapshots/{taken.snapshot_id}/clone", json=body)
        assert error(again, 409).code == "sandbox_conflict"
    finally:
        http.delete(f"/sandboxes/{clone_id}")


def test_seal_and_delete_and_bad_input(http: httpx.Client, sandbox: str, keys: Keys, var_dir: Path) -> None:
    taken = take(http, sandbox, f"{sandbox}-d")
    wrong = msgspec.structs.replace(taken, manifest_hash="00" * 32)
    keys.seal(http, wrong, status=422)
    assert not (snapshots(var_dir) / taken.snapshot_id / "signature.json").exists()
    good = {"snapshot_id": taken.snapshot_id, "verify_keys": keys.wire}

    assert http.delete(f"/snapshots/{taken.snapshot_id}").status_code == 204
    assert http.delete(f"/snapshots/{taken.snapshot_id}").status_code == 204  # idempotent
    assert not (snapshots(var_dir) / taken.snapshot_id).exists()
    assert error(http.post(f"/sandboxes/{sandbox}/restore", json=good), 404).code == "snapshot_not_found"
    keys.seal(http, taken, status=404)
    clone = {"spec": {"id": f"{sandbox}-x", **SPEC}, "verify_keys": keys.wire}
    assert error(http.post("/snapshots/no.such/clone", json=clone), 404).code == "snapshot_not_found"
    assert (
        error(http.post("/sandboxes/nope/snapshots", json={"snapshot_id": "s"}), 404).code
        == "sandbox_not_found"
    )
    bad_id = http.post(f"/sandboxes/{sandbox}/snapshots", json={"snapshot_id": "../escape"})
    assert error(bad_id, 404).code == "snapshot_not_found"
    assert error(http.post(f"/sandboxes/{sandbox}/snapshots", json={}), 400).code == "bad_request"
    no_keys = {"snapshot_id": taken.snapshot_id, "verify_keys": {}}
    assert "verify_keys" in error(http.post(f"/sandboxes/{sandbox}/restore", json=no_keys), 400).message
    bad_key = {"snapshot_id": taken.snapshot_id, "verify_keys": {"k": "short"}}
    assert error(http.post(f"/sandboxes/{sandbox}/restore", json=bad_key), 400).code == "bad_request"
    assert state(http, sandbox) == "running"


# archives ------------------------------------------------------------------------------------


def test_archive_moves_the_disk_away_and_start_brings_it_back(
    http: httpx.Client, sandbox: str, var_dir: Path
) -> None:
    sh(http, sandbox, "echo precious > ~/f")
    assert error(http.post(f"/sandboxes/{sandbox}/archive"), 409).code == "sandbox_conflict"
    http.post(f"/sandboxes/{sandbox}/stop")
    archived = http.post(f"/sandboxes/{sandbox}/archive")
    assert archived.status_code == 200, archived.text
    assert archived.json() == {"id": sandbox, "state": "archived", "ip": None}
    assert state(http, sandbox) == "archived"
    assert not disk(var_dir, sandbox).exists()
    stored = var_dir / "archives" / sandbox
    assert sorted(p.name for p in stored.iterdir()) == ["manifest.json", "rootfs.tar.zst"]
    assert http.post(f"/sandboxes/{sandbox}/archive").json()["state"] == "archived"  # idempotent
    for refused in ("pause", "restore"):
        assert http.post(
            f"/sandboxes/{sandbox}/{refused}", json={"snapshot_id": "s", "verify_keys": {}}
        ).status_code in (
            400,
            409,
        )
    assert error(http.post(f"/sandboxes/{sandbox}/snapshots", json={"snapshot_id": "s"}), 409).code == (
        "sandbox_conflict"
    )

    started = http.post(f"/sandboxes/{sandbox}/start", json={"id": sandbox, **SPEC})
    assert started.status_code == 200, started.text
    assert sh(http, sandbox, "cat ~/f") == "precious"
    assert not stored.exists()

    # The explicit way, leaving the sandbox stopped.
    http.post(f"/sandboxes/{sandbox}/stop")
    assert http.post(f"/sandboxes/{sandbox}/archive").json()["state"] == "archived"
    assert http.post(f"/sandboxes/{sandbox}/unarchive").json()["state"] == "stopped"
    assert http.post(f"/sandboxes/{sandbox}/unarchive").json()["state"] == "stopped"  # idempotent
    http.post(f"/sandboxes/{sandbox}/start", json={"id": sandbox, **SPEC})
    assert sh(http, sandbox, "cat ~/f") == "precious"


def test_a_corrupt_archive_is_refused_and_kept(http: httpx.Client, sandbox: str, var_dir: Path) -> None:
    http.post(f"/sandboxes/{sandbox}/stop")
    http.post(f"/sandboxes/{sandbox}/archive")
    _flip(var_dir / "archives" / sandbox / "rootfs.tar.zst", 50)
    refused = error(http.post(f"/sandboxes/{sandbox}/unarchive"), 422)
    assert refused.code == "snapshot_rejected" and "does not match" in refused.message
    assert state(http, sandbox) == "archived"
    assert (var_dir / "archives" / sandbox).exists()
    http.delete(f"/sandboxes/{sandbox}")
    assert not (var_dir / "archives" / sandbox).exists()  # destroy removes the archive too


def test_a_restarted_hostd_registers_archived_and_paused_sandboxes(
    hostd: HostdProcess, core: RecordingCore, var_dir: Path
) -> None:
    with client_for(hostd, core) as http:
        create(http, "lc-archived")
        create(http, "lc-paused")
        http.post("/sandboxes/lc-archived/stop")
        assert http.post("/sandboxes/lc-archived/archive").json()["state"] == "archived"
        assert http.post("/sandboxes/lc-paused/pause").json()["state"] == "paused"
    assert hostd.stop() == 0
    restart(hostd, core)
    inventory = {info.id: info.state for info in core.registrations[-1].sandboxes}
    assert inventory["lc-archived"] == "archived" and inventory["lc-paused"] == "paused"
    with client_for(hostd, core) as http:
        assert http.post("/sandboxes/lc-paused/resume").json()["state"] == "running"
        started = http.post("/sandboxes/lc-archived/start", json={"id": "lc-archived", **SPEC})
        assert started.json()["state"] == "running"
        for sandbox_id in ("lc-archived", "lc-paused"):
            assert http.delete(f"/sandboxes/{sandbox_id}").status_code == 204


# crashes -------------------------------------------------------------------------------------


def _kill_when(hostd: HostdProcess, ready: Path, request: threading.Thread) -> None:
    """SIGKILL hostd as soon as ``ready`` exists and holds data, with the request in flight."""
    request.start()
    wait_for(lambda: ready.exists() and ready.stat().st_size > 0, timeout=60, what=f"{ready}")
    assert request.is_alive(), "the operation finished before it could be interrupted"
    hostd.kill()
    request.join()


def restart(hostd: HostdProcess, core: RecordingCore) -> None:
    """Start hostd again and wait for its registration (whose token ``client_for`` uses)."""
    before = len(core.registrations)
    hostd.start()
    wait_for(lambda: len(core.registrations) > before, timeout=15, what="the new registration")


def _in_flight(http: httpx.Client, method: str, path: str, **kwargs: object) -> threading.Thread:
    def call() -> None:
        with contextlib.suppress(httpx.TransportError):
            http.request(method, path, **kwargs)  # type: ignore[arg-type]

    return threading.Thread(target=call)


def test_hostd_killed_mid_snapshot_leaves_no_snapshot_and_a_running_sandbox(
    hostd: HostdProcess, core: RecordingCore, sandbox: str, var_dir: Path
) -> None:
    """A snapshot takes milliseconds, too short to kill hostd inside reliably, so the test
    leaves exactly what a hostd killed at the worst moment leaves: the sandbox frozen (with the
    runtime's marker saying the freeze was a snapshot's) and a staging entry holding the
    read-only disk but no manifest yet."""
    with client_for(hostd, core) as http:
        sh(http, sandbox, "echo kept > ~/f")
    hostd.kill()
    snapshot_id = f"{sandbox}-crash"
    staging = snapshots(var_dir) / f".tmp-{snapshot_id}"
    staging.mkdir(mode=0o700)
    Runc(var_dir / "hostd" / "runc").pause(sandbox)
    (var_dir / "hostd" / "sandboxes" / sandbox / "frozen-for-snapshot").touch()
    subprocess.run(
        ["btrfs", "subvolume", "snapshot", "-r", str(disk(var_dir, sandbox)), str(staging / "disk")],
        check=True,
    )

    restart(hostd, core)
    assert not staging.exists(), "the half-written snapshot was swept"
    assert not (snapshots(var_dir) / snapshot_id).exists()
    with client_for(hostd, core) as http:
        assert state(http, sandbox) == "running", "the snapshot's freeze was undone"
        assert sh(http, sandbox, "cat ~/f") == "kept"
        taken = take(http, sandbox, snapshot_id)  # the id is free again
        assert taken.snapshot_id == snapshot_id


def test_hostd_killed_mid_archive_leaves_the_disk_in_place(
    hostd: HostdProcess, core: RecordingCore, sandbox: str, var_dir: Path
) -> None:
    with client_for(hostd, core) as http:
        sh(http, sandbox, "head -c 400M /dev/urandom > ~/big; echo kept > ~/f")
        http.post(f"/sandboxes/{sandbox}/stop")
        staging = var_dir / "archives" / f".tmp-{sandbox}" / "rootfs.tar.zst"
        _kill_when(hostd, staging, _in_flight(http, "POST", f"/sandboxes/{sandbox}/archive"))
    restart(hostd, core)
    assert not staging.parent.exists() and not (var_dir / "archives" / sandbox).exists()
    with client_for(hostd, core) as http:
        assert state(http, sandbox) == "stopped"
        assert disk(var_dir, sandbox).exists()
        assert http.post(f"/sandboxes/{sandbox}/start", json={"id": sandbox, **SPEC}).status_code == 200
        assert sh(http, sandbox, "cat ~/f") == "kept"
