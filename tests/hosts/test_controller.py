"""HostController's own logic — every command, its allowed states, and how commands on one
sandbox interleave — on the fake runtime (real agents, no root). What a backend itself must do
is the contract suite's (``tests/hosts/runtime/test_contract.py``)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from contracts import guest
from contracts.host import ExecRequest, ExecResult, HostHealth, SandboxInfo, SandboxSpec
from hosts.commands import (
    AgentCall,
    CreateSandbox,
    DestroySandbox,
    ExecInSandbox,
    GetDiskUsage,
    GetHealth,
    ListSandboxes,
    StartSandbox,
    StopSandbox,
)
from hosts.config import GUEST_DIR
from hosts.controller import HostController
from hosts.errors import SandboxConflict, SandboxNotFound, TemplateNotFound
from hosts.runtime.fake import FakeConfig, FakeRuntime
from tests.hosts.conftest import make_spec
from tests.support import await_for


@pytest.fixture(scope="module")
async def ns_runtime() -> AsyncIterator[FakeRuntime]:
    # Under /tmp and short: agent sockets live in the state dir (108-byte path limit).
    state_dir = Path(tempfile.mkdtemp(prefix="dnah-ctl-", dir="/tmp"))
    runtime = FakeRuntime(FakeConfig(state_dir=state_dir, guest_dir=GUEST_DIR))
    await runtime.recover()
    yield runtime
    await runtime.remove_host_setup()
    shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture
async def controller(ns_runtime: FakeRuntime) -> AsyncIterator[HostController]:
    ctl = HostController(ns_runtime)
    yield ctl
    await ctl.close()
    for info in ns_runtime.list():
        await ns_runtime.destroy(info.id)


@pytest.fixture
async def running(controller: HostController) -> SandboxInfo:
    """A running sandbox, created through the controller."""
    return await controller.handle(CreateSandbox(spec=make_spec(new_id())))


def new_id() -> str:
    return f"c{uuid.uuid4().hex[:12]}"


def sh(
    sandbox_id: str,
    script: str,
    *,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    timeout_ms: int = 20_000,
) -> ExecInSandbox:
    request = ExecRequest(cmd=["sh", "-c", script], env=env or {}, cwd=cwd, timeout_ms=timeout_ms)
    return ExecInSandbox(sandbox_id=sandbox_id, request=request)


async def test_create_then_exec(controller: HostController) -> None:
    sandbox_id = new_id()
    info = await controller.handle(CreateSandbox(spec=make_spec(sandbox_id)))
    assert (info.id, info.state) == (sandbox_id, "running")
    assert info.ip is not None

    result = await controller.handle(sh(sandbox_id, "echo hello; echo oops >&2; exit 3"))

    assert type(result) is ExecResult
    assert (result.stdout, result.stderr, result.exit_code, result.timed_out) == (
        "hello\n",
        "oops\n",
        3,
        False,
    )
    assert result.duration_ms > 0
    assert await controller.handle(ListSandboxes()) == [info]
    assert await controller.handle(GetHealth()) == HostHealth(status="ok", runtime="fake", sandboxes=1)


async def test_exec_passes_env_cwd_and_timeout(controller: HostController, running: SandboxInfo) -> None:
    result = await controller.handle(sh(running.id, 'echo "$WHO"; pwd', env={"WHO": "agent"}, cwd="/tmp"))
    assert result.stdout == "agent\n/tmp\n"

    started = time.monotonic()
    slow = await controller.handle(sh(running.id, "sleep 30", timeout_ms=300))
    assert slow.timed_out and slow.exit_code == -9
    assert time.monotonic() - started < 5


async def test_concurrent_execs_run_in_parallel(controller: HostController, running: SandboxInfo) -> None:
    started = time.monotonic()
    results = await asyncio.gather(
        *(controller.handle(sh(running.id, f"sleep 0.5; echo {i}")) for i in range(20))
    )
    elapsed = time.monotonic() - started

    assert [r.stdout for r in results] == [f"{i}\n" for i in range(20)]
    assert elapsed < 3, f"20 × 0.5 s took {elapsed:.1f} s: execs were serialised"


async def test_stop_keeps_the_disk_and_start_boots_it_again(
    controller: HostController, running: SandboxInfo
) -> None:
    await controller.handle(sh(running.id, "echo kept > file"))

    stopped = await controller.handle(StopSandbox(sandbox_id=running.id))
    assert (stopped.state, stopped.ip) == ("stopped", None)
    with pytest.raises(SandboxConflict):
        await controller.handle(sh(running.id, "true"))
    assert await controller.handle(StopSandbox(sandbox_id=running.id)) == stopped  # a no-op

    spec = make_spec(running.id)
    started = await controller.handle(StartSandbox(spec=spec))
    assert started.state == "running"
    assert await controller.handle(StartSandbox(spec=spec)) == started  # a no-op
    # The pooled connection died with the first boot; the next exec reconnects by itself.
    assert (await controller.handle(sh(running.id, "cat file"))).stdout == "kept\n"


async def test_destroy_during_an_exec_fails_that_exec_with_not_found(
    controller: HostController, running: SandboxInfo
) -> None:
    await controller.handle(sh(running.id, "true"))  # the connection is open and pooled
    long_exec = asyncio.create_task(controller.handle(sh(running.id, "sleep 60")))
    await asyncio.sleep(0.3)

    started = time.monotonic()
    await controller.handle(DestroySandbox(sandbox_id=running.id))

    with pytest.raises(SandboxNotFound):
        await long_exec
    assert time.monotonic() - started < 10, "destroy waited for the exec"
    assert await controller.handle(ListSandboxes()) == []


async def test_destroy_arriving_during_create_waits_for_it(controller: HostController) -> None:
    sandbox_id = new_id()
    create = asyncio.create_task(controller.handle(CreateSandbox(spec=make_spec(sandbox_id))))
    await asyncio.sleep(0)  # the create holds the sandbox's lock and is booting
    destroy = asyncio.create_task(controller.handle(DestroySandbox(sandbox_id=sandbox_id)))

    created, _ = await asyncio.gather(create, destroy)

    # Had the destroy not waited, it would have found nothing to remove, and the sandbox
    # would still be listed.
    assert created.state == "running"
    assert await controller.handle(ListSandboxes()) == []


async def test_conflicting_commands_on_one_sandbox_are_serialised(controller: HostController) -> None:
    spec = make_spec(new_id())
    first, second = await asyncio.gather(
        controller.handle(CreateSandbox(spec=spec)),
        controller.handle(CreateSandbox(spec=spec)),
        return_exceptions=True,
    )
    assert isinstance(first, SandboxInfo) and first.state == "running"
    assert isinstance(second, SandboxConflict)

    # stop, start, stop, arriving together, run in arrival order.
    results = await asyncio.gather(
        controller.handle(StopSandbox(sandbox_id=spec.id)),
        controller.handle(StartSandbox(spec=spec)),
        controller.handle(StopSandbox(sandbox_id=spec.id)),
    )
    assert [info.state for info in results] == ["stopped", "running", "stopped"]


async def test_commands_on_other_sandboxes_do_not_wait(
    controller: HostController, running: SandboxInfo, ns_runtime: FakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The other sandbox's create is held inside the runtime (its lifecycle lock taken) until
    # the exec has answered: a create that boots faster than an exec cannot pass by chance.
    inside, release = asyncio.Event(), asyncio.Event()
    create_for_real = ns_runtime.create

    async def held_create(spec: SandboxSpec, snapshot: Path | None = None) -> SandboxInfo:
        inside.set()
        await release.wait()
        return await create_for_real(spec, snapshot)

    monkeypatch.setattr(ns_runtime, "create", held_create)
    create = asyncio.create_task(controller.handle(CreateSandbox(spec=make_spec(new_id()))))
    await asyncio.wait_for(inside.wait(), 10)
    try:
        result = await asyncio.wait_for(controller.handle(sh(running.id, "echo quick")), 10)
    finally:
        release.set()
    assert result.stdout == "quick\n"
    assert (await create).state == "running"


async def test_unknown_sandbox(controller: HostController) -> None:
    unknown = new_id()
    with pytest.raises(SandboxNotFound):
        await controller.handle(sh(unknown, "true"))
    with pytest.raises(SandboxNotFound):
        await controller.handle(StopSandbox(sandbox_id=unknown))
    with pytest.raises(SandboxNotFound):
        await controller.handle(StartSandbox(spec=make_spec(unknown)))
    with pytest.raises(SandboxNotFound):
        await controller.handle(AgentCall(sandbox_id=unknown, message=guest.Dirs(id=0)))
    with pytest.raises(SandboxNotFound):
        await controller.handle(GetDiskUsage(sandbox_id=unknown))
    await controller.handle(DestroySandbox(sandbox_id=unknown))  # idempotent: no error


@pytest.mark.parametrize("bad_id", ["..", ".", "a/b", "", "-x", "x" * 64])
async def test_malformed_ids_never_reach_the_runtime(controller: HostController, bad_id: str) -> None:
    for command in (
        DestroySandbox(sandbox_id=bad_id),
        StopSandbox(sandbox_id=bad_id),
        ExecInSandbox(sandbox_id=bad_id, request=ExecRequest(cmd=["true"])),
        AgentCall(sandbox_id=bad_id, message=guest.Metrics(id=0)),
        GetDiskUsage(sandbox_id=bad_id),
    ):
        with pytest.raises(SandboxNotFound, match="is not a sandbox id"):
            await controller.handle(command)


async def test_agent_calls_share_the_pooled_connection_and_state_checks(
    controller: HostController, ns_runtime: FakeRuntime, running: SandboxInfo
) -> None:
    """Concurrent relayed requests of different kinds go out on the one connection exec uses;
    a stopped sandbox refuses them; the disk stays measurable."""
    code = guest.CodeRun(id=0, language="bash", code="sleep 0.2; echo $1", argv=["late"])
    slow, dirs, ran = await asyncio.gather(
        controller.handle(AgentCall(sandbox_id=running.id, message=code)),
        controller.handle(AgentCall(sandbox_id=running.id, message=guest.Dirs(id=0))),
        controller.handle(sh(running.id, "echo exec")),
    )
    assert isinstance(slow, guest.ExecResult) and slow.stdout == "late\n"
    assert isinstance(dirs, guest.DirsResult) and dirs.home == str(
        ns_runtime.config.state_dir / "sandboxes" / running.id / "disk"
    )
    assert ran.stdout == "exec\n"
    assert len(controller._agents) == 1  # one connection for the sandbox

    used = (await controller.handle(GetDiskUsage(sandbox_id=running.id))).used_bytes
    await controller.handle(StopSandbox(sandbox_id=running.id))
    with pytest.raises(SandboxConflict):
        await controller.handle(AgentCall(sandbox_id=running.id, message=guest.Dirs(id=0)))
    assert (await controller.handle(GetDiskUsage(sandbox_id=running.id))).used_bytes == used


async def test_unknown_template(controller: HostController) -> None:
    with pytest.raises(TemplateNotFound):
        await controller.handle(CreateSandbox(spec=make_spec(new_id(), template="no-such-template")))
    assert await controller.handle(ListSandboxes()) == []


async def test_close_leaves_sandboxes_running(ns_runtime: FakeRuntime, running: SandboxInfo) -> None:
    first = HostController(ns_runtime)
    await first.handle(sh(running.id, "true"))
    await first.close()

    second = HostController(ns_runtime)
    try:
        assert (await second.handle(sh(running.id, "echo still here"))).stdout == "still here\n"
    finally:
        await second.close()


async def test_a_create_answers_once_the_templates_service_listens(controller: HostController) -> None:
    """A template that declares a ``ready_port`` (hosts/service_ready.py): the create is not
    answered while nothing listens on it, and is once something does."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))  # bound, not listening: a connection is refused
        port = server.getsockname()[1]
        controller.service_ports = lambda template: (port,) if template == "dnah-base" else ()
        sandbox_id = new_id()
        create = asyncio.create_task(controller.handle(CreateSandbox(spec=make_spec(sandbox_id))))
        await await_for(lambda: _listed(controller, sandbox_id), what="the runtime to have made the sandbox")
        await asyncio.sleep(0.3)  # several of the wait's polls, all refused
        assert not create.done()
        server.listen()
        info = await asyncio.wait_for(create, timeout=30)
    assert info.state == "running"


async def _listed(controller: HostController, sandbox_id: str) -> bool:
    return any(info.id == sandbox_id for info in await controller.handle(ListSandboxes()))
