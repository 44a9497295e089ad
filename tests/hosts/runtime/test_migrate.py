"""A var/ left by the namespace runtime, brought over to the OCI runtime.

The old sandbox directory is made by hand as the namespace runtime made it: an upper layer
written through a real overlay mount over the cached template's rootfs (files owned by the
sandbox's own uids, no user namespace), ``spec.json``/``base.json``, an empty ``rootfs/``
mount point, ``run/``, a console log. The migrated sandbox is then booted by a fresh OCI
runtime and looked at from inside.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
import zstandard

from contracts.host import SandboxSpec
from hosts.agent_client import AgentClient
from hosts.config import GUEST_DIR
from hosts.runtime._layout import DiskBase
from hosts.runtime.oci import OciConfig, OciRuntime, _host
from hosts.runtime.oci.migrate import Target, migrate
from hosts.storage import _btrfs, _loop
from hosts.storage.pool import PoolConfig, StoragePool
from hosts.templates import TemplateStore
from tests.hosts.conftest import make_spec

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="overlay mounts, pools and runc need root")

DELETED = "etc/motd"
NOTES = "home/daytona/notes"
CGROUP_ROOT = Path("/sys/fs/cgroup")


@pytest.fixture
def config(template_store: TemplateStore, tmp_path: Path, kernel_index: int) -> OciConfig:
    """A runtime instance of its own (names ``dnahm<n>``), so its recover never meets the
    session runtime's sandboxes."""
    n = kernel_index
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    return OciConfig(
        state_dir=state_dir,
        templates=template_store,
        pool=PoolConfig(image=state_dir / "pool.img", size_bytes=8 * 2**30, mountpoint=state_dir / "pool"),
        guest_dir=GUEST_DIR,
        bridge=f"dnahm{n}",
        subnet=ipaddress.IPv4Network(f"10.215.{n}.0/24"),
        cgroup_parent=f"dnahm{n}",
        egress=False,  # nothing a test runs leaves the machine
        boot_timeout=20.0,
    )


@pytest.fixture
async def runtime(config: OciConfig) -> AsyncIterator[OciRuntime]:
    """Not recovered yet: the test migrates first, as hostd does."""
    rt = OciRuntime(config)
    yield rt
    for info in rt.list():
        await rt.destroy(info.id)
    await rt.remove_host_setup()
    _loop.detach_image(config.pool.image, config.pool.mountpoint)  # when a test failed before recover


def target(config: OciConfig, stores: Path) -> Target:
    return Target(
        state_dir=config.state_dir,
        templates=config.templates,
        pool=config.pool,
        uid_base=config.uid_base,
        cgroup_parent=config.cgroup_parent,
        snapshot_dirs=(stores / "snapshots",),
        archive_dir=stores / "archives",
    )


def old_sandbox(config: OciConfig, spec: SandboxSpec, base: DiskBase, scratch: Path) -> Path:
    """A namespace-runtime sandbox directory whose disk deleted ``DELETED`` and wrote
    ``NOTES`` as daytona (host uid 1000), made through a real overlay mount."""
    path = config.state_dir / "sandboxes" / spec.id
    for name in ("upper", "work", "rootfs", "run"):
        (path / name).mkdir(parents=True)
    os.chmod(path, 0o700)
    os.chown(path / "run", 1000, 1000)
    (path / "run" / "left-by-the-agent").write_text("x")
    (path / "console.log").write_text("booted\n")
    (path / "spec.json").write_bytes(msgspec.json.encode(spec))
    (path / "base.json").write_bytes(msgspec.json.encode(base))
    lower = config.templates.get(base.template, content_hash=base.content_hash).rootfs
    merged = scratch / f"merged-{spec.id}"
    merged.mkdir()
    options = f"lowerdir={lower},upperdir={path / 'upper'},workdir={path / 'work'}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(merged)], check=True)
    try:
        (merged / DELETED).unlink()
        (merged / NOTES).write_text("written under the namespace runtime\n")
        os.chown(merged / NOTES, 1000, 1000)
    finally:
        subprocess.run(["umount", str(merged)], check=True)
    return path


def snapshot_of(root: Path) -> dict[str, tuple[int, int, int, str]]:
    """Every entry under ``root`` with mode, owner and a digest of its content."""
    found = {}
    for directory, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            full = Path(directory, name)
            st = os.lstat(full)
            digest = hashlib.sha256(full.read_bytes()).hexdigest() if full.is_file() else ""
            found[str(full.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, digest)
    return found


async def test_an_old_sandbox_boots_with_its_changes_and_a_lost_base_is_kept_and_reported(
    runtime: OciRuntime, config: OciConfig, tmp_path: Path, new_id: str
) -> None:
    template = config.templates.get()
    good = make_spec(f"{new_id}a")
    lost = make_spec(f"{new_id}b")
    old_sandbox(config, good, DiskBase(template=template.name, content_hash=template.content_hash), tmp_path)
    old_lost = old_sandbox(
        config, lost, DiskBase(template=template.name, content_hash=template.content_hash), tmp_path
    )
    # Only then does its base go missing: as if the cache had been cleared since.
    (old_lost / "base.json").write_bytes(
        msgspec.json.encode(DiskBase(template="dnah-base", content_hash="0" * 16))
    )
    before = snapshot_of(old_lost)
    # A half-made disk from an interrupted run, and a process the old runtime left running.
    pool = StoragePool.open(config.pool)
    _btrfs.create(pool.disk(good.id))
    (pool.disk(good.id) / "junk").write_text("interrupted")
    left_running = subprocess.Popen(["sleep", "600"])
    try:
        cgroup = next(r for r in _host.hierarchies() if r.name in ("pids", "unified") or r == CGROUP_ROOT)
        (cgroup / config.cgroup_parent / good.id).mkdir(parents=True)
        (cgroup / config.cgroup_parent / good.id / "cgroup.procs").write_text(str(left_running.pid))

        report = migrate(target(config, tmp_path))

        assert left_running.wait(timeout=10) == -9
    finally:
        left_running.kill()
        left_running.wait()
    assert [(o.id, o.migrated) for o in report.outcomes] == [(good.id, True), (lost.id, False)]
    legacy = config.state_dir / "legacy"
    assert report.outcomes[0].kept == str(legacy / good.id)
    assert sorted(os.listdir(legacy / good.id)) == ["run", "upper", "work"]
    assert "0000000000000000" in report.not_migrated[0].reason
    assert report.not_migrated[0].kept == str(legacy / lost.id)
    assert snapshot_of(legacy / lost.id) == before  # every file as it was, out of the runtime's sight
    assert not (config.state_dir / "sandboxes" / lost.id).exists()

    infos = await runtime.recover()
    assert [(i.id, i.state) for i in infos] == [(good.id, "stopped")]
    await runtime.start(good)
    client = await AgentClient.connect(runtime.agent_socket(good.id))
    try:
        script = (
            f"stat -c %U:%G /{NOTES}; cat /{NOTES}; test -e /{DELETED} || echo deleted; "
            "test -e /junk || echo no-junk; head -1 /etc/os-release; stat -c %U /usr/bin/python3; id -un"
        )
        result = await client.exec(["sh", "-c", script], timeout_ms=20_000)
    finally:
        await client.close()
    assert result.exit_code == 0, result
    assert result.stdout.splitlines() == [
        "daytona:daytona",
        "written under the namespace runtime",
        "deleted",
        "no-junk",
        'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"',
        "root",
        "daytona",
    ]

    # Run again (the next hostd start): nothing left to bring over, the lost one still reported.
    again = migrate(target(config, tmp_path))
    assert [(o.id, o.migrated) for o in again.outcomes] == [(lost.id, False)]
    assert snapshot_of(legacy / lost.id) == before


async def test_a_lost_base_restored_to_the_cache_is_brought_over_at_the_next_run(
    runtime: OciRuntime, config: OciConfig, tmp_path: Path, new_id: str
) -> None:
    template = config.templates.get()
    spec = make_spec(new_id)
    path = old_sandbox(
        config, spec, DiskBase(template="dnah-base", content_hash=template.content_hash), tmp_path
    )
    real_base = (path / "base.json").read_bytes()
    (path / "base.json").write_bytes(
        msgspec.json.encode(DiskBase(template="dnah-base", content_hash="f" * 16))
    )
    assert not migrate(target(config, tmp_path)).outcomes[0].migrated

    (config.state_dir / "legacy" / spec.id / "base.json").write_bytes(real_base)  # "the build is back"
    report = migrate(target(config, tmp_path))

    assert [(o.id, o.migrated) for o in report.outcomes] == [(spec.id, True)]
    assert [(i.id, i.state) for i in await runtime.recover()] == [(spec.id, "stopped")]


def test_namespace_runtime_snapshots_are_reported_and_left_alone(config: OciConfig, tmp_path: Path) -> None:
    """An upper layer's root is owned by host root; a pool disk's by the shifted root."""
    stores = tmp_path / "stores"
    for owner, name in ((0, "old"), (config.uid_base, "new")):
        tree = tmp_path / f"tree-{name}"
        tree.mkdir()
        os.chown(tree, owner, owner)
        entry = stores / "snapshots" / name
        entry.mkdir(parents=True)
        (entry / "manifest.json").write_text("{}")
        tar = subprocess.run(
            ["tar", "--create", "--numeric-owner", "--directory", str(tree), "."],
            capture_output=True,
            check=True,
        )
        (entry / "rootfs.tar.zst").write_bytes(zstandard.ZstdCompressor().compress(tar.stdout))
    before = snapshot_of(stores)

    report = migrate(target(config, stores))

    assert [(o.kind, o.id, o.migrated) for o in report.outcomes] == [("snapshot", "old", False)]
    assert "signature" in report.outcomes[0].reason
    assert snapshot_of(stores) == before
