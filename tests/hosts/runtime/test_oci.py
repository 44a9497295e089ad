"""The OCI runtime's lifecycle, on real sandboxes driven through their agent."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import difflib
import hashlib
import ipaddress
import json
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from hosts.errors import (
    AgentUnavailable,
    InvalidRequest,
    RuntimeFailure,
    SandboxConflict,
    SandboxNotFound,
    SnapshotInvalid,
)
from hosts.runtime import _layout, _network
from hosts.runtime._mounts import mounts_under
from hosts.runtime.manifest import decode as decode_manifest
from hosts.runtime.manifest import read as read_manifest
from hosts.runtime.oci import OciConfig, OciRuntime, _host
from hosts.runtime.oci import runtime as oci_runtime
from hosts.runtime.oci.runc import Runc
from hosts.storage import _btrfs
from tests.hosts.conftest import Box, close_box, make_spec, open_box

V2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()


def host_cgroup(config: OciConfig, sandbox_id: str, controller: str) -> Path:
    """Where the host keeps ``controller``'s files for the sandbox (this machine's layout)."""
    if V2:
        return Path("/sys/fs/cgroup") / config.cgroup_parent / sandbox_id
    return Path("/sys/fs/cgroup") / controller / config.cgroup_parent / sandbox_id


def traces(config: OciConfig, sandbox_id: str) -> list[str]:
    """Everything of ``sandbox_id`` still on the host; empty when it left nothing behind."""
    sandbox_dir = config.state_dir / "sandboxes" / sandbox_id
    found = []
    if sandbox_dir.exists():
        found.append(f"directory {sandbox_dir}")
    mounts = Path("/proc/self/mountinfo").read_text()
    if str(sandbox_dir) in mounts:
        found.append("a mount under the sandbox directory")
    for root in _host.hierarchies():
        if (root / config.cgroup_parent / sandbox_id).exists():
            found.append(f"cgroup in {root}")
    if (config.pool.mountpoint / "disks" / sandbox_id).exists():
        found.append("disk")
    if sandbox_id in Runc(config.state_dir / "runc").ids():
        found.append("runc container")
    if (_network.NETNS_DIR / f"{config.bridge}@{sandbox_id}").exists():
        found.append("netns")
    ports = Path(f"/sys/class/net/{config.bridge}/brif")
    if ports.is_dir() and any(ports.iterdir()):
        found.append(f"veths on the bridge: {sorted(p.name for p in ports.iterdir())}")
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if str(sandbox_dir).encode() in cmdline:
                found.append(f"process {proc.name}: {cmdline[:80]!r}")
    return found


# create -------------------------------------------------------------------------------------


async def test_create_boots_the_agent_as_an_unprivileged_user(box: Box, oci_config: OciConfig) -> None:
    assert box.info.state == "running"
    assert await box.out("id -u; id -g; id -G") == "1000\n1000\n1000"
    assert await box.out("hostname") == box.id
    status = await box.out("grep -E '^(CapInh|CapPrm|CapEff|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status")
    assert all(line.split()[1] in ("0000000000000000", "0", "2") for line in status.splitlines()), status
    assert "NoNewPrivs:\t0" in status and "Seccomp:\t2" in status  # sudo needs setuid
    # Root inside is the unprivileged host uid range's first id.
    agent = _agent_pid(oci_config, box.id)
    assert Path(f"/proc/{agent}/uid_map").read_text().split() == [
        "0",
        str(oci_config.uid_base),
        "65536",
    ]
    assert os.stat(f"/proc/{agent}").st_uid == oci_config.uid_base + 1000
    assert await box.out("readlink /proc/1/exe") == "/usr/bin/python3.11"
    assert await box.out("pwd; echo $HOME") == "/home/daytona\n/home/daytona"


async def test_spec_env_reaches_commands(runtime: OciRuntime, new_id: str) -> None:
    created = await open_box(runtime, make_spec(new_id, env={"GREETING": "hello world", "PATH": "/bin"}))
    try:
        assert await created.out("echo $GREETING; echo $PATH") == "hello world\n/bin"
        assert await created.out("env | grep -c '^PYTHONPATH=' || true") == "0"
    finally:
        await close_box(created)


async def test_cgroup_limits_hold_on_the_host_and_inside(
    runtime: OciRuntime, oci_config: OciConfig, new_id: str
) -> None:
    created = await open_box(runtime, make_spec(new_id, cpu=2, ram_mb=300))
    try:
        memory = host_cgroup(oci_config, new_id, "memory")
        cpu = host_cgroup(oci_config, new_id, "cpu")
        pids = host_cgroup(oci_config, new_id, "pids")
        if V2:
            assert (cpu / "cpu.max").read_text().split() == ["200000", "100000"]
            assert int((memory / "memory.max").read_text()) == 300 * 2**20
            inside = await created.out("cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/cpu.max")
            assert inside.split() == [str(300 * 2**20), "200000", "100000"]
        else:
            assert int((cpu / "cpu.cfs_quota_us").read_text()) == 200_000
            assert int((cpu / "cpu.cfs_period_us").read_text()) == 100_000
            assert int((memory / "memory.limit_in_bytes").read_text()) == 300 * 2**20
            if (memory / "memory.memsw.limit_in_bytes").exists():
                assert int((memory / "memory.memsw.limit_in_bytes").read_text()) == 300 * 2**20
            inside = await created.out(
                "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.cfs_quota_us"
                " /sys/fs/cgroup/pids/pids.max"
            )
            assert inside.split() == [str(300 * 2**20), "200000", "512"]
        assert (pids / "pids.max").read_text().strip() == "512"
        assert (
            await created.out("cat /sys/fs/cgroup/pids/pids.max" if not V2 else "cat /sys/fs/cgroup/pids.max")
        ) == "512"
        # Every process of the sandbox, PID 1 first of all, is in its cgroup, which is the
        # root of the cgroup namespace it sees.
        host_pids = {int(p) for p in (pids / "cgroup.procs").read_text().split()}
        agent = [p for p in host_pids if _nspid(p) == 1]
        assert len(agent) == 1
        own = {line.split(":", 1)[1] for line in (await created.out("cat /proc/self/cgroup")).splitlines()}
        assert {":/"} <= own if V2 else {"cpu:/", "memory:/", "pids:/", "freezer:/"} <= own
        # Every cgroup hierarchy is read-only (on v1 they sit in a tmpfs runc makes, owned by root
        # inside, whose only contents they are).
        options = await created.out("awk '$3 ~ \"^cgroup\" {print $4}' /proc/self/mounts")
        assert options and all(o.startswith("ro,") for o in options.splitlines()), options
    finally:
        await close_box(created)


async def test_the_sandbox_has_its_own_network(box: Box, oci_config: OciConfig) -> None:
    assert box.info.ip is not None
    assert ipaddress.IPv4Address(box.info.ip) in oci_config.subnet
    addr = await box.out("ip -4 -o addr show dev eth0")
    assert f"inet {box.info.ip}/{oci_config.subnet.prefixlen}" in addr
    gateway = oci_config.subnet.network_address + 1
    route = await box.out("ip route show default")
    assert route.startswith(f"default via {gateway} dev eth0")
    assert "LOOPBACK,UP" in await box.out("ip -o link show lo")
    links = await box.out("ls /sys/class/net")
    assert links.split() == ["eth0", "lo"]


async def test_concurrent_creates_get_distinct_addresses(runtime: OciRuntime) -> None:
    ids = [f"tc{i}{os.getpid()}" for i in range(4)]
    boxes = await asyncio.gather(*(open_box(runtime, make_spec(i)) for i in ids))
    try:
        ips = {b.info.ip for b in boxes}
        assert len(ips) == 4
        for b in boxes:
            assert await b.out("hostname") == b.id
    finally:
        await asyncio.gather(*(close_box(b) for b in boxes))


async def test_create_rejects_a_taken_id(box: Box) -> None:
    with pytest.raises(SandboxConflict):
        await box.runtime.create(make_spec(box.id))
    assert await box.out("echo still here") == "still here"


async def test_unknown_sandbox_is_not_found(runtime: OciRuntime) -> None:
    with pytest.raises(SandboxNotFound):
        await runtime.stop("no-such-sandbox")
    with pytest.raises(SandboxNotFound):
        await runtime.pause("no-such-sandbox")


# stop / start ------------------------------------------------------------------------------


async def test_stop_keeps_the_disk_and_start_boots_it_again(
    box: Box, runtime: OciRuntime, oci_config: OciConfig
) -> None:
    await box.out("echo kept > ~/file; echo tmp > /tmp/file; mkdir -p /workspace/d")
    await box.client.close()

    stopped = await runtime.stop(box.id)
    assert stopped.state == "stopped" and stopped.ip is None
    assert not runtime.agent_socket(box.id).exists()
    assert not host_cgroup(oci_config, box.id, "pids").exists()
    assert not (_network.NETNS_DIR / f"{oci_config.bridge}@{box.id}").exists()
    assert (await runtime.stop(box.id)).state == "stopped"  # idempotent

    started = await runtime.start(make_spec(box.id, ram_mb=200))
    assert started.state == "running" and started.ip is not None
    await box.reconnect()
    assert await box.out("cat ~/file /tmp/file; test -d /workspace/d && echo dir") == "kept\ntmp\ndir"
    memory = host_cgroup(oci_config, box.id, "memory")
    if not V2:
        assert int((memory / "memory.limit_in_bytes").read_text()) == 200 * 2**20
    spec = json.loads((oci_config.state_dir / "sandboxes" / box.id / "spec.json").read_text())
    assert spec["ram_mb"] == 200
    with pytest.raises(SandboxConflict):
        await runtime.start(make_spec(box.id))


async def test_a_sandbox_whose_pid1_dies_is_reported_stopped(
    box: Box, runtime: OciRuntime, oci_config: OciConfig
) -> None:
    pids = host_cgroup(oci_config, box.id, "pids") / "cgroup.procs"
    agent = next(int(p) for p in pids.read_text().split() if _nspid(int(p)) == 1)
    os.kill(agent, signal.SIGKILL)
    await _until(lambda: _state(runtime, box.id) == "stopped")
    assert not pids.parent.exists()
    assert not (_network.NETNS_DIR / f"{oci_config.bridge}@{box.id}").exists()
    started = await runtime.start(make_spec(box.id))
    assert started.state == "running"


# pause / resume ----------------------------------------------------------------------------


async def test_pause_freezes_and_resume_thaws(box: Box, runtime: OciRuntime, oci_config: OciConfig) -> None:
    paused = await runtime.pause(box.id)
    assert paused.state == "paused" and paused.ip == box.info.ip
    assert _state(runtime, box.id) == "paused"
    if V2:
        assert "frozen 1" in (host_cgroup(oci_config, box.id, "").joinpath("cgroup.events").read_text())
    else:
        state = host_cgroup(oci_config, box.id, "freezer") / "freezer.state"
        assert state.read_text().strip() == "FROZEN"
    with pytest.raises(AgentUnavailable):  # a frozen agent cannot answer
        await box.client.ping(timeout=0.3)
    assert (await runtime.pause(box.id)).state == "paused"  # idempotent

    resumed = await runtime.resume(box.id)
    assert resumed.state == "running"
    if not V2:
        assert (host_cgroup(oci_config, box.id, "freezer") / "freezer.state").read_text().strip() == "THAWED"
    await box.reconnect()
    assert await box.out("echo awake") == "awake"


async def test_stop_works_on_a_paused_sandbox(box: Box, runtime: OciRuntime, oci_config: OciConfig) -> None:
    await runtime.pause(box.id)
    assert (await runtime.stop(box.id)).state == "stopped"
    assert not host_cgroup(oci_config, box.id, "pids").exists()
    with pytest.raises(SandboxConflict):
        await runtime.pause(box.id)


# snapshot / restore ------------------------------------------------------------------------


def snapshot_dir(config: OciConfig, name: str) -> Path:
    """A snapshot directory inside the pool, as the snapshot store gives the runtime."""
    return config.pool.mountpoint / "snapshots" / name


def _unprotected(path: Path) -> contextlib.AbstractContextManager[None]:
    """Turn a read-only subvolume writable for the block, read-only again after it."""

    @contextlib.contextmanager
    def toggle() -> Iterator[None]:
        subprocess.run(["btrfs", "property", "set", "-ts", str(path), "ro", "false"], check=True)
        try:
            yield
        finally:
            subprocess.run(["btrfs", "property", "set", "-ts", str(path), "ro", "true"], check=True)

    return toggle()


async def test_snapshot_and_restore_bring_the_disk_back(
    box: Box, runtime: OciRuntime, oci_config: OciConfig
) -> None:
    await box.out("echo one > ~/kept; rm ~/.bashrc; mkdir ~/dir; echo x > ~/dir/inner")
    await box.out("head -c 4194304 /dev/urandom > ~/blob")
    snapshot = snapshot_dir(oci_config, f"{box.id}-s")
    await runtime.snapshot(box.id, snapshot)
    assert _state(runtime, box.id) == "running"
    assert await box.out("echo alive") == "alive"  # thawed after the snapshot

    manifest = json.loads((snapshot / "manifest.json").read_text())
    assert manifest["sandbox_id"] == box.id
    assert manifest["template"] == "dnah-base"
    assert manifest["content_hash"] == runtime.config.templates.recipe_hash()
    assert manifest["kind"] == "subvolume" and manifest["files"] == []
    assert manifest["memory"] is False  # this backend snapshots the disk only
    # The disk is a read-only subvolume, recorded by identity; its size is what the sandbox wrote.
    disk = manifest["disk"]
    uuid, ctransid, readonly = _btrfs.subvolume_info(snapshot / "disk")
    assert (disk["name"], disk["uuid"], disk["ctransid"], readonly) == ("disk", uuid, ctransid, True)
    assert 4194304 <= disk["size"] < 64 * 2**20
    assert (snapshot / "disk" / "home" / "daytona" / "kept").read_text() == "one\n"

    await box.out("echo two > ~/kept; echo new > ~/later; rm -r ~/dir; echo restored > ~/.bashrc")
    info = await runtime.restore(box.id, snapshot)
    assert info.state == "running"
    await box.reconnect()
    assert await box.out("cat ~/kept ~/dir/inner") == "one\nx"
    assert await box.out("test -e ~/later || echo gone") == "gone"
    # The deletion of a template file survives the round trip.
    assert await box.out("test -e ~/.bashrc || echo deleted") == "deleted"
    assert await box.out("stat -c '%u:%g %a' ~/kept") == "1000:1000 644"
    # The restored disk is a writable copy: the snapshot is unchanged and can serve again.
    await box.out("echo three > ~/kept")
    assert (snapshot / "disk" / "home" / "daytona" / "kept").read_text() == "one\n"
    assert read_manifest(snapshot).disk == decode_manifest((snapshot / "manifest.json").read_bytes()).disk


async def test_a_snapshot_outside_the_pool_is_refused(box: Box, runtime: OciRuntime, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="inside the storage pool"):
        await runtime.snapshot(box.id, tmp_path / "snap")
    assert await box.out("echo thawed") == "thawed"


async def test_restore_of_a_stopped_sandbox_boots_it(
    box: Box, runtime: OciRuntime, oci_config: OciConfig
) -> None:
    await box.out("echo v1 > ~/f")
    await runtime.stop(box.id)
    snapshot = snapshot_dir(oci_config, f"{box.id}-s")
    await runtime.snapshot(box.id, snapshot)
    info = await runtime.restore(box.id, snapshot)
    assert info.state == "running"
    await box.reconnect()
    assert await box.out("cat ~/f") == "v1"


async def test_restore_refuses_a_tampered_snapshot(
    box: Box, runtime: OciRuntime, oci_config: OciConfig
) -> None:
    """One byte written into the read-only snapshot (which takes turning read-only off)."""
    await box.out("echo v1 > ~/f")
    snapshot = snapshot_dir(oci_config, f"{box.id}-s")
    await runtime.snapshot(box.id, snapshot)
    data = snapshot / "disk" / "home" / "daytona" / "f"
    with _unprotected(snapshot / "disk"):
        data.write_text("v2\n")
    with pytest.raises(RuntimeFailure, match="does not match its manifest"):
        await runtime.restore(box.id, snapshot)
    with pytest.raises(RuntimeFailure, match="does not match its manifest"):
        await runtime.create(make_spec(f"{box.id}c"), snapshot)
    assert _state(runtime, box.id) == "running"  # untouched
    assert await box.out("cat ~/f") == "v1"
    # Left writable, even unchanged, it is no snapshot either.
    subprocess.run(["btrfs", "property", "set", "-ts", str(snapshot / "disk"), "ro", "false"], check=True)
    data.write_text("v1\n")
    with pytest.raises(RuntimeFailure, match="does not match its manifest"):
        await runtime.restore(box.id, snapshot)


async def test_an_archive_format_snapshot_still_restores_and_a_tampered_one_is_refused(
    box: Box, runtime: OciRuntime, oci_config: OciConfig
) -> None:
    """Snapshots written before host-local snapshots existed are tar + zstd, like exports."""
    await box.out("echo old-format > ~/f")
    snapshot = snapshot_dir(oci_config, f"{box.id}-a")
    await runtime.export(box.id, snapshot)
    manifest = json.loads((snapshot / "manifest.json").read_text())
    [archive] = manifest["files"]
    assert (manifest["kind"], archive["name"]) == ("archive", "rootfs.tar.zst")
    assert archive["sha256"] == _sha256(snapshot / "rootfs.tar.zst")
    await box.out("echo newer > ~/f")

    original = (snapshot / "rootfs.tar.zst").read_bytes()
    with open(snapshot / "rootfs.tar.zst", "ab") as tar:
        tar.write(b"\0")
    with pytest.raises(RuntimeFailure, match="does not match"):
        await runtime.restore(box.id, snapshot)
    assert await box.out("cat ~/f") == "newer"

    (snapshot / "rootfs.tar.zst").write_bytes(original)
    assert (await runtime.restore(box.id, snapshot)).state == "running"
    await box.reconnect()
    assert await box.out("cat ~/f") == "old-format"


async def test_restore_refuses_a_snapshot_of_another_base(
    box: Box, runtime: OciRuntime, oci_config: OciConfig
) -> None:
    snapshot = snapshot_dir(oci_config, f"{box.id}-s")
    await runtime.snapshot(box.id, snapshot)
    manifest = json.loads((snapshot / "manifest.json").read_text())
    manifest["content_hash"] = "0" * 16
    (snapshot / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SandboxConflict):
        await runtime.restore(box.id, snapshot)
    assert await box.out("echo untouched") == "untouched"


async def test_create_from_a_snapshot_clones_its_disk(
    box: Box, runtime: OciRuntime, oci_config: OciConfig
) -> None:
    new_id = f"{box.id}c"
    await box.out("echo cloned > ~/f")
    snapshot = snapshot_dir(oci_config, f"{box.id}-s")
    await runtime.snapshot(box.id, snapshot)
    clone = await open_box(runtime, make_spec(new_id), snapshot=snapshot)
    try:
        assert await clone.out("cat ~/f; hostname") == f"cloned\n{new_id}"
        await clone.out("echo clone > ~/f")
        assert await box.out("cat ~/f") == "cloned"
        assert (snapshot / "disk" / "home" / "daytona" / "f").read_text() == "cloned\n"
    finally:
        await close_box(clone)
    with pytest.raises(SandboxConflict, match="not other-template"):
        await runtime.create(make_spec(new_id, template="other-template"), snapshot)
    assert new_id not in {i.id for i in runtime.list()}


# resize and archive ------------------------------------------------------------------------


async def test_resize_changes_the_limits_live_and_records_them(
    box: Box, runtime: OciRuntime, oci_config: OciConfig
) -> None:
    info = await runtime.resize(box.id, 2, 512, 3)
    assert info.state == "running"
    assert runtime.spec(box.id).cpu == 2 and runtime.spec(box.id).disk_gb == 3
    memory = host_cgroup(oci_config, box.id, "memory")
    limit = memory / ("memory.max" if (memory / "memory.max").exists() else "memory.limit_in_bytes")
    assert int(limit.read_text()) == 512 * 2**20
    # Memory beyond the old 256 MB limit is now usable.
    assert await box.out("python3 -c 'b = bytearray(380 * 2**20); print(len(b) // 2**20)'") == "380"
    await runtime.stop(box.id)
    assert (await runtime.resize(box.id, 1, 128, 3)).state == "stopped"
    info = await runtime.start(runtime.spec(box.id))
    assert int(limit.read_text()) == 128 * 2**20


async def test_archive_drops_the_disk_and_unarchive_brings_it_back(
    box: Box, runtime: OciRuntime, oci_config: OciConfig, tmp_path: Path
) -> None:
    await box.out("echo archived > ~/f")
    with pytest.raises(SandboxConflict, match="booted"):
        await runtime.archive(box.id)
    await runtime.stop(box.id)
    await runtime.export(box.id, tmp_path)  # archives live anywhere: tar + zstd
    assert (await runtime.archive(box.id)).state == "archived"
    disk = oci_config.pool.mountpoint / "disks" / box.id
    assert not disk.exists()
    with pytest.raises(SandboxConflict, match="archived"):
        await runtime.snapshot(box.id, snapshot_dir(oci_config, f"{box.id}-again"))
    assert {i.id: i.state for i in await OciRuntime(oci_config).recover()}[box.id] == "archived"

    assert (await runtime.unarchive(box.id, tmp_path)).state == "stopped"
    with pytest.raises(SandboxConflict, match="not archived"):
        await runtime.unarchive(box.id, tmp_path)
    await runtime.start(make_spec(box.id))
    await box.reconnect()
    assert await box.out("cat ~/f") == "archived"


# What the disk holds, listed inside: every path on the root filesystem (mounts left out) with
# its type, mode, owner, whole-second mtime, xattrs, data digest or link target, and which
# earlier path it is a hard link of. Equal listings mean equal trees.
_LISTING = r"""
import hashlib, os, stat, sys
root_dev = os.lstat("/").st_dev
first = {}
def describe(path):
    st = os.lstat(path)
    kind, extra = stat.S_IFMT(st.st_mode), ""
    if stat.S_ISREG(st.st_mode):
        with open(path, "rb") as f:
            extra = hashlib.file_digest(f, "sha256").hexdigest()
    elif stat.S_ISLNK(st.st_mode):
        extra = os.readlink(path)
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        extra = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
        extra += " link:" + first.setdefault(st.st_ino, path)
    names = os.listxattr(path, follow_symlinks=False)
    xattrs = sorted((n, os.getxattr(path, n, follow_symlinks=False)) for n in names)
    mtime = "" if stat.S_ISLNK(st.st_mode) else int(st.st_mtime)
    print(path, oct(st.st_mode), st.st_uid, st.st_gid, mtime, xattrs, extra)
def walk(directory):
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        st = os.lstat(path)
        if st.st_dev != root_dev:
            continue
        describe(path)
        if stat.S_ISDIR(st.st_mode):
            walk(path)
describe("/")
walk("/")
"""


async def test_an_archive_holds_the_changes_and_unarchive_rebuilds_the_same_tree(
    box: Box, runtime: OciRuntime, oci_config: OciConfig, tmp_path: Path
) -> None:
    await box.out(
        "set -e; cd ~; echo new > f; ln f f-link; ln -s /etc/hostname sym; mkfifo fifo"
        " && python3 -c \"import os; os.setxattr('f', 'user.note', b'kept')\""
        " && mkdir -p deep/er && echo d > deep/er/file && chmod 0710 deep"
        " && sudo rm /etc/issue"  # a template file deleted
        " && echo changed | sudo tee -a /etc/debian_version >/dev/null"  # modified
        " && sudo rm -r /usr/share/doc"  # a whole template directory deleted
        " && sudo rm -r /usr/share/man && sudo mkdir /usr/share/man"  # replaced: opaque
        " && echo fresh | sudo tee /usr/share/man/only >/dev/null"
        " && sudo rm /etc/issue.net && sudo mkdir /etc/issue.net"  # a file became a directory
        " && sudo rm -r /srv && sudo ln -s /tmp /srv"  # a directory became a symlink
        " && sudo cp /bin/true /usr/local/bin/setuid-true && sudo chmod 4755 /usr/local/bin/setuid-true"
        " && sudo ln /etc/debian_version /root/version-link"  # a new link to a template file
        " && sudo chown daytona: /etc/motd"  # only metadata changed
    )
    before = await box.out(f"sudo python3 - <<'EOF'\n{_LISTING}\nEOF")
    await runtime.stop(box.id)
    await runtime.export(box.id, tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert (manifest["kind"], manifest["layer"]) == ("archive", "diff")
    listed = subprocess.run(
        ["tar", "--list", "--verbose", "--use-compress-program=zstd -d", "-f", tmp_path / "rootfs.tar.zst"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    lines = [line for line in listed.splitlines() if " -> " not in line and " link to " not in line]
    names = {line.split()[-1].removeprefix("./").rstrip("/") for line in lines}
    assert {"etc/issue", "usr/share/doc", "home/daytona/f", "usr/share/man/only"} <= names
    assert not any(name.startswith(("usr/share/doc/", "usr/bin/")) for name in names)  # not the template
    await runtime.archive(box.id)

    assert (await runtime.unarchive(box.id, tmp_path)).state == "stopped"
    await runtime.start(make_spec(box.id))
    await box.reconnect()
    after = await box.out(f"sudo python3 - <<'EOF'\n{_LISTING}\nEOF")
    changed = difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
    assert not list(changed), "\n".join(difflib.unified_diff(before.splitlines(), after.splitlines(), n=0))
    assert await box.out("cat /usr/share/man/only; ls /usr/share/doc 2>&1 || true") == (
        "fresh\nls: cannot access '/usr/share/doc': No such file or directory"
    )
    assert (
        await box.out("stat -c %A /usr/local/bin/setuid-true; sudo -n true && echo sudo")
        == "-rwsr-xr-x\nsudo"
    )


async def test_recover_finishes_an_interrupted_archive(
    runtime: OciRuntime, oci_config: OciConfig, new_id: str
) -> None:
    """A crash after the marker but before the disk was dropped: the next start drops it."""
    await runtime.create(make_spec(new_id))
    await runtime.stop(new_id)
    directory = oci_config.state_dir / "sandboxes" / new_id
    (directory / "archived").touch()
    successor = OciRuntime(oci_config)
    assert {i.id: i.state for i in await successor.recover()}[new_id] == "archived"
    assert not (oci_config.pool.mountpoint / "disks" / new_id).exists()
    await successor.destroy(new_id)
    await runtime.destroy(new_id)


async def test_recover_thaws_a_sandbox_a_snapshot_left_frozen(
    runtime: OciRuntime, oci_config: OciConfig, new_id: str
) -> None:
    """hostd died while a snapshot held the sandbox frozen: the sandbox runs again, whereas a
    sandbox the user paused stays paused (see the test above)."""
    await runtime.create(make_spec(new_id))
    (oci_config.state_dir / "sandboxes" / new_id / "frozen-for-snapshot").touch()
    Runc(oci_config.state_dir / "runc").pause(new_id)
    successor = OciRuntime(oci_config)
    assert {i.id: i.state for i in await successor.recover()}[new_id] == "running"
    assert not (oci_config.state_dir / "sandboxes" / new_id / "frozen-for-snapshot").exists()
    await successor.destroy(new_id)
    await runtime.destroy(new_id)


# destroy -----------------------------------------------------------------------------------


async def test_destroy_leaves_nothing(runtime: OciRuntime, oci_config: OciConfig, new_id: str) -> None:
    created = await open_box(runtime, make_spec(new_id))
    await created.out("echo data > ~/f")
    await created.client.close()
    await runtime.destroy(new_id)
    assert traces(oci_config, new_id) == []
    assert all(info.id != new_id for info in runtime.list())
    await runtime.destroy(new_id)  # idempotent


@pytest.mark.parametrize("hostile", ["..", ".", "a/../..", "/etc", "", "x" * 64])
async def test_ids_that_could_name_a_path_name_no_sandbox(
    runtime: OciRuntime, oci_config: OciConfig, hostile: str
) -> None:
    """Defence in depth below the front ends: ``destroy("..")`` must not reach
    ``state_dir/sandboxes/..`` (the state dir itself)."""
    marker = oci_config.state_dir / "sandboxes" / "keep-me"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("x")
    for call in (runtime.destroy, runtime.stop, runtime.pause, runtime.resume):
        with pytest.raises(SandboxNotFound):
            await call(hostile)
    with pytest.raises(SandboxNotFound):
        runtime.agent_socket(hostile)
    assert marker.read_text() == "x"
    marker.unlink()


async def test_destroy_of_a_stopped_sandbox(runtime: OciRuntime, oci_config: OciConfig, new_id: str) -> None:
    await runtime.create(make_spec(new_id))
    await runtime.stop(new_id)
    await runtime.destroy(new_id)
    assert traces(oci_config, new_id) == []


# failed creates ----------------------------------------------------------------------------

_SYNC_STEPS: list[tuple[object, str]] = [
    (_layout.SandboxDir, "populate"),
    (oci_runtime.OciRuntime, "_new_disk"),
    (_network.Network, "create_interfaces"),
    (_network.Network, "configure_inside"),
    (_layout.SandboxDir, "write_boot"),
    (_host, "mount_sysfs"),
    (oci_runtime.Bundle, "write"),
]
_ASYNC_STEPS: list[tuple[object, str]] = [(Runc, "run"), (oci_runtime, "wait_ready")]


def _failing_sync(real: Callable[..., object], after: bool) -> Callable[..., object]:
    def step(*args: object, **kwargs: object) -> object:
        if after:
            real(*args, **kwargs)
        raise RuntimeFailure("injected failure")

    return step


def _failing_async(real: Callable[..., Awaitable[object]], after: bool) -> Callable[..., Awaitable[object]]:
    async def step(*args: object, **kwargs: object) -> object:
        if after:
            result = await real(*args, **kwargs)
            close = getattr(result, "close", None)
            if close is not None:
                await close()
        raise RuntimeFailure("injected failure")

    return step


@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
@pytest.mark.parametrize(
    ("owner", "name"), _SYNC_STEPS + _ASYNC_STEPS, ids=[n for _, n in _SYNC_STEPS + _ASYNC_STEPS]
)
async def test_a_failed_create_leaves_nothing(
    runtime: OciRuntime,
    oci_config: OciConfig,
    new_id: str,
    monkeypatch: pytest.MonkeyPatch,
    owner: object,
    name: str,
    after: bool,
) -> None:
    real = getattr(owner, name)
    wrap = _failing_async if (owner, name) in _ASYNC_STEPS else _failing_sync
    monkeypatch.setattr(owner, name, wrap(real, after))
    with pytest.raises(RuntimeFailure, match="injected failure"):
        await runtime.create(make_spec(new_id))
    assert traces(oci_config, new_id) == []
    assert all(info.id != new_id for info in runtime.list())

    monkeypatch.undo()
    created = await open_box(runtime, make_spec(new_id))  # the id and its slot are free again
    await close_box(created)


async def test_a_sandbox_that_dies_while_booting_fails_fast(
    runtime: OciRuntime, oci_config: OciConfig, new_id: str, tmp_path: Path
) -> None:
    # ``runtime`` is requested so that the session's teardown removes the bridge this uses.
    # No agent in tmp_path: python3 -m guest.agent exits at once.
    broken = OciRuntime(dataclasses.replace(oci_config, guest_dir=tmp_path))
    started = asyncio.get_running_loop().time()
    with pytest.raises(RuntimeFailure, match=r"No module named guest\.agent"):
        await broken.create(make_spec(new_id))
    assert asyncio.get_running_loop().time() - started < 5
    assert traces(oci_config, new_id) == []


# recovery ----------------------------------------------------------------------------------


async def test_recover_adopts_running_sandboxes_and_cleans_stopped_ones(
    runtime: OciRuntime, oci_config: OciConfig
) -> None:
    running = await open_box(runtime, make_spec(f"tr{os.getpid()}run"))
    await running.out("echo before > ~/f")
    stopped_id = f"tr{os.getpid()}stop"
    await runtime.create(make_spec(stopped_id))
    await runtime.stop(stopped_id)
    # What a crash during a boot of the stopped sandbox would have left behind:
    leftover = [root / oci_config.cgroup_parent / stopped_id for root in _host.hierarchies()]
    for directory in leftover:
        directory.mkdir(parents=True)
    subprocess.run(["ip", "netns", "add", f"{oci_config.bridge}@{stopped_id}"], check=True)
    orphan = [root / oci_config.cgroup_parent / "orphan" for root in _host.hierarchies()]
    for directory in orphan:
        directory.mkdir()

    successor = OciRuntime(oci_config)
    inventory = {info.id: info for info in await successor.recover()}

    assert inventory[running.id].state == "running"
    assert inventory[running.id].ip == running.info.ip
    assert inventory[stopped_id].state == "stopped"
    assert not any(d.exists() for d in leftover + orphan)
    assert not (_network.NETNS_DIR / f"{oci_config.bridge}@{stopped_id}").exists()
    assert await running.out("cat ~/f") == "before"  # the adopted sandbox was not disturbed

    await running.client.close()
    client = await oci_runtime.wait_ready(successor.agent_socket(running.id), timeout=5)
    assert (await client.exec(["hostname"])).stdout.strip() == running.id
    await client.close()
    assert (await successor.start(make_spec(stopped_id))).state == "running"

    for sandbox_id in (running.id, stopped_id):
        await successor.destroy(sandbox_id)
        await runtime.destroy(sandbox_id)  # the first instance forgets them too
    assert traces(oci_config, running.id) == traces(oci_config, stopped_id) == []


async def test_recover_reports_a_frozen_sandbox_paused(
    runtime: OciRuntime, oci_config: OciConfig, new_id: str
) -> None:
    await runtime.create(make_spec(new_id))
    await runtime.pause(new_id)
    successor = OciRuntime(oci_config)
    assert {i.id: i.state for i in await successor.recover()}[new_id] == "paused"
    assert (await successor.resume(new_id)).state == "running"
    await successor.destroy(new_id)
    await runtime.destroy(new_id)
    assert traces(oci_config, new_id) == []


async def test_an_adopted_sandbox_that_dies_is_reported_stopped(
    runtime: OciRuntime, oci_config: OciConfig, new_id: str
) -> None:
    await runtime.create(make_spec(new_id))
    successor = OciRuntime(oci_config)
    await successor.recover()
    procs = host_cgroup(oci_config, new_id, "pids") / "cgroup.procs"
    os.kill(next(int(p) for p in procs.read_text().split() if _nspid(int(p)) == 1), signal.SIGKILL)
    # Both instances notice (the first through its child, the successor through a pidfd).
    await _until(lambda: _state(successor, new_id) == _state(runtime, new_id) == "stopped")
    assert not procs.parent.exists()
    assert not (_network.NETNS_DIR / f"{oci_config.bridge}@{new_id}").exists()
    assert (await successor.start(make_spec(new_id))).state == "running"
    await successor.destroy(new_id)
    await runtime.destroy(new_id)
    assert traces(oci_config, new_id) == []


# helpers -----------------------------------------------------------------------------------


def _agent_pid(config: OciConfig, sandbox_id: str) -> int:
    """The host pid of the sandbox's PID 1 (the agent)."""
    procs = host_cgroup(config, sandbox_id, "pids") / "cgroup.procs"
    return next(int(p) for p in procs.read_text().split() if _nspid(int(p)) == 1)


def _nspid(pid: int) -> int:
    """The pid of host process ``pid`` in its innermost PID namespace."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    raise AssertionError(f"no NSpid for {pid}")


def _state(runtime: OciRuntime, sandbox_id: str) -> str:
    return next(info.state for info in runtime.list() if info.id == sandbox_id)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_a_namespace_runtime_snapshot_is_refused_and_nothing_changes(
    box: Box, runtime: OciRuntime, oci_config: OciConfig
) -> None:
    """The namespace runtime's snapshots held an overlay layer, not a disk, and their manifests
    named no kind: restoring one would drop the template under the files."""
    await box.out("echo kept > ~/f")
    snapshot = snapshot_dir(oci_config, f"{box.id}-n")
    await runtime.export(box.id, snapshot)
    manifest = json.loads((snapshot / "manifest.json").read_text())
    del manifest["kind"]
    (snapshot / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SnapshotInvalid, match="namespace runtime"):
        await runtime.restore(box.id, snapshot)
    assert await box.out("cat ~/f") == "kept"


def test_a_stale_disks_bind_from_another_pool_is_replaced(tmp_path: Path, kernel_index: int) -> None:
    """A killed hostd of the same instance name leaves /run/dnah-oci/<instance>/disks bound to
    its own pool; the next one must not mistake that bind for its own (runc would look for
    every disk in the dead pool)."""
    instance = f"dnahx{kernel_index}"
    dead, live = tmp_path / "dead-pool-disks", tmp_path / "live-pool-disks"
    dead.mkdir()
    live.mkdir()
    (live / "disk-1").mkdir()
    try:
        first = _host.expose_disks(dead, instance)
        assert not (first / "disk-1").exists()
        second = _host.expose_disks(live, instance)
        assert second == first and (second / "disk-1").is_dir()
        assert _host.expose_disks(live, instance) == second  # its own bind is kept
        assert len([p for p in mounts_under(second) if p == second]) == 1
    finally:
        _host.hide_disks(instance)
    assert not (_host.EXPOSED / instance).exists()
