"""Fixtures for the hostd suites that drive the OCI runtime directly (real sandboxes).

Each xdist worker gets its own bridge, subnet and cgroup parent (``dnaht<n>``,
``10.214.<n>.0/24``), so workers, the other hostd suites and a live ``make up`` never share a
kernel object. ``n`` is the worker's index unless another test session on the machine holds
it (an flock per index), in which case the next free one is used: two sessions running at
once would otherwise tear down each other's bridge. The base template comes from the
shared, content-hashed cache (built on first use, normally already there: ``make test``
builds it before the suites run). Everything the session created on the host is removed at
its end. Each session has its own storage pool (a loop-mounted btrfs image in its state
directory), unmounted at the end.
"""

from __future__ import annotations

import asyncio
import fcntl
import ipaddress
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from contracts import guest
from contracts.host import SandboxInfo, SandboxSpec
from hosts.agent_client import AgentClient
from hosts.config import BUILD_SCRIPT, GUEST_DIR
from hosts.runtime.oci import OciConfig, OciRuntime
from hosts.storage.pool import PoolConfig
from hosts.templates import TemplateStore
from tests.support import worker_index

TEMPLATE_CACHE = Path("/var/cache/dnah/templates")
LOCK_DIR = Path("/run/lock")


@pytest.fixture(scope="session")
def template_store() -> TemplateStore:
    if os.geteuid() != 0:
        pytest.skip("the OCI runtime needs root")
    store = TemplateStore(TEMPLATE_CACHE, BUILD_SCRIPT)
    store.ensure()
    return store


@pytest.fixture(scope="session")
def kernel_index() -> Iterator[int]:
    """An index in 0-255 that no other running test session holds, for kernel object names."""
    start = worker_index()
    for offset in range(256):
        index = (start + offset) % 256
        lock = open(LOCK_DIR / f"dnah-runtime-tests-{index}.lock", "w")  # noqa: SIM115 — held all session
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        with lock:
            yield index
        return
    pytest.fail("all 256 kernel name indexes are held by other test sessions")


@pytest.fixture(scope="session")
def oci_config(
    template_store: TemplateStore, tmp_path_factory: pytest.TempPathFactory, kernel_index: int
) -> OciConfig:
    n = kernel_index
    state_dir = tmp_path_factory.mktemp("hostd-state")
    return OciConfig(
        state_dir=state_dir,
        templates=template_store,
        pool=PoolConfig(image=state_dir / "pool.img", size_bytes=16 * 2**30, mountpoint=state_dir / "pool"),
        guest_dir=GUEST_DIR,
        bridge=f"dnaht{n}",
        subnet=ipaddress.IPv4Network(f"10.214.{n}.0/24"),
        cgroup_parent=f"dnaht{n}",
        egress=False,  # nothing a test runs leaves the machine
        boot_timeout=20.0,
    )


@pytest.fixture(scope="session")
async def runtime(oci_config: OciConfig) -> AsyncIterator[OciRuntime]:
    rt = OciRuntime(oci_config)
    await rt.recover()
    yield rt
    for info in rt.list():
        await rt.destroy(info.id)
    await rt.remove_host_setup()


@pytest.fixture
def new_id() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


def make_spec(sandbox_id: str, **overrides: object) -> SandboxSpec:
    fields: dict[str, object] = {"template": "dnah-base", "cpu": 1, "ram_mb": 256, "disk_gb": 1}
    fields.update(overrides)
    return SandboxSpec(id=sandbox_id, **fields)  # type: ignore[arg-type]


class Box:
    """A running test sandbox and a connection to its agent."""

    def __init__(self, runtime: OciRuntime, info: SandboxInfo, client: AgentClient) -> None:
        self.runtime = runtime
        self.info = info
        self.client = client

    @property
    def id(self) -> str:
        return self.info.id

    async def sh(self, script: str, *, timeout_ms: int = 20_000) -> guest.ExecResult:
        """Run ``script`` with ``sh -c`` inside the sandbox."""
        return await self.client.exec(["sh", "-c", script], timeout_ms=timeout_ms)

    async def out(self, script: str) -> str:
        """stdout of ``script``, which must succeed."""
        result = await self.sh(script)
        assert result.exit_code == 0, (script, result)
        return result.stdout.strip()

    async def reconnect(self) -> None:
        await self.client.close()
        self.client = await AgentClient.connect(self.runtime.agent_socket(self.id))


async def open_box(runtime: OciRuntime, spec: SandboxSpec, snapshot: Path | None = None) -> Box:
    info = await runtime.create(spec, snapshot)
    client = await AgentClient.connect(runtime.agent_socket(spec.id))
    return Box(runtime, info, client)


async def close_box(box: Box) -> None:
    await box.client.close()
    await box.runtime.destroy(box.id)


@pytest.fixture
async def box(runtime: OciRuntime, new_id: str) -> AsyncIterator[Box]:
    """A fresh sandbox (1 CPU, 256 MB), destroyed after the test."""
    created = await open_box(runtime, make_spec(new_id))
    yield created
    await close_box(created)


@pytest.fixture
async def two_boxes(runtime: OciRuntime) -> AsyncIterator[tuple[Box, Box]]:
    boxes = await asyncio.gather(
        *(open_box(runtime, make_spec(f"t{uuid.uuid4().hex[:12]}")) for _ in range(2))
    )
    yield boxes[0], boxes[1]
    for created in boxes:
        await close_box(created)
