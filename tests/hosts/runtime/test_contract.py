"""The backend contract: what every ``SandboxRuntime`` must do, checked on each backend.

Runs on ``fake`` (always) and ``real`` (the default runtime; root only), see
``_contract_fixtures``. What lives in the controller (exec, files, PTY, snapshots with the
snapshot store, archives) is driven through ``HostController`` with real commands; what is
the runtime's own (create/start/stop/pause/resume/resize/destroy/recover/list/disk usage)
through the runtime. Paths are relative to the agent's working directory, so they mean the
same on every backend. Tests that do not change a sandbox's state share one.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from contracts import guest
from contracts.host import ExecRequest, SandboxInfo, SnapshotTaken
from contracts.snapshots import SnapshotClaim, encode_verify_key, new_signing_key, parse_signing_key, sign
from hosts.agent_client import AgentClient
from hosts.commands import (
    ArchiveSandbox,
    CloneSnapshot,
    CreateSandbox,
    ExecInSandbox,
    OpenStream,
    RestoreSnapshot,
    SealSnapshot,
    StartSandbox,
    TakeSnapshot,
    UnarchiveSandbox,
)
from hosts.controller import HostController
from hosts.errors import RuntimeFailure, SandboxConflict, SandboxNotFound
from hosts.ports import netns
from hosts.snapshot_store import EntryStore
from tests.hosts.conftest import make_spec
from tests.hosts.runtime._contract_fixtures import Backend, backend

__all__ = ["backend"]  # the parametrized fixture, imported so that pytest finds it

_KID, _KEY = parse_signing_key(new_signing_key("contract"))
_VERIFY = {_KID: encode_verify_key(_KEY.verify_key)}


def new_id() -> str:
    return f"k{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
async def controller(
    backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[HostController]:
    stores = tmp_path_factory.mktemp(f"contract-{backend.name}")
    ctl = HostController(
        backend.runtime,
        snapshots=EntryStore(backend.snapshot_dir, "snapshot"),
        archives=EntryStore(stores / "archives", "archive"),
    )
    yield ctl
    await ctl.close()


@pytest.fixture(scope="module")
async def shared(controller: HostController) -> SandboxInfo:
    """One running sandbox for the tests that leave its state alone."""
    return await controller.handle(CreateSandbox(spec=make_spec(new_id())))


@pytest.fixture
async def fresh(backend: Backend, controller: HostController) -> AsyncIterator[str]:
    sandbox_id = new_id()
    await controller.handle(CreateSandbox(spec=make_spec(sandbox_id)))
    yield sandbox_id
    await backend.runtime.destroy(sandbox_id)


async def sh(controller: HostController, sandbox_id: str, script: str) -> str:
    """stdout of ``script``, which must succeed."""
    result = await controller.handle(
        ExecInSandbox(sandbox_id=sandbox_id, request=ExecRequest(cmd=["sh", "-c", script], timeout_ms=20_000))
    )
    assert result.exit_code == 0, (script, result)
    return result.stdout


async def eventually(probe: Callable[[], Awaitable[bool]], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def snapshot(controller: HostController, sandbox_id: str) -> SnapshotTaken:
    """Take and seal a snapshot, as the core would."""
    taken = await controller.handle(TakeSnapshot(sandbox_id=sandbox_id, snapshot_id=new_id()))
    claim = SnapshotClaim(
        sandbox_id=taken.sandbox_id,
        snapshot_id=taken.snapshot_id,
        manifest_hash=taken.manifest_hash,
        size=taken.size,
        ts=int(time.time()),
    )
    await controller.handle(SealSnapshot(snapshot_id=taken.snapshot_id, signed=sign(claim, _KID, _KEY)))
    return taken


# through the controller -----------------------------------------------------------------------


async def test_exec(controller: HostController, shared: SandboxInfo) -> None:
    request = ExecRequest(cmd=["sh", "-c", 'echo "$WHO"; echo oops >&2; exit 3'], env={"WHO": "contract"})
    result = await controller.handle(ExecInSandbox(sandbox_id=shared.id, request=request))
    assert (result.stdout, result.stderr, result.exit_code) == ("contract\n", "oops\n", 3)


async def test_a_file_written_is_read_back(controller: HostController, shared: SandboxInfo) -> None:
    data = bytes(range(256)) * 5000  # over one 1 MiB frame
    stream, reply = await controller.handle(
        OpenStream(sandbox_id=shared.id, opener=guest.FsWrite(id=0, path="contract/files/data.bin"))
    )
    try:
        assert isinstance(reply, guest.FsReady), reply
        await stream.send(data)
        await stream.end()
        written = await stream.read()
        assert isinstance(written, guest.FsWritten) and written.size == len(data)
    finally:
        await stream.close()
    stream, reply = await controller.handle(
        OpenStream(sandbox_id=shared.id, opener=guest.FsRead(id=0, path="contract/files/data.bin"))
    )
    received = bytearray()
    try:
        assert isinstance(reply, guest.FsReading) and reply.size == len(data)
        while chunk := await stream.read():
            assert isinstance(chunk, bytes)
            received += chunk
    finally:
        await stream.close()
    assert bytes(received) == data
    assert await sh(controller, shared.id, "wc -c < contract/files/data.bin") == f"{len(data)}\n"


async def test_a_pty_runs_a_shell(controller: HostController, shared: SandboxInfo) -> None:
    opener = guest.PtyAttach(id=0, session_id=f"p{uuid.uuid4().hex[:8]}", create=True)
    stream, reply = await controller.handle(OpenStream(sandbox_id=shared.id, opener=opener))
    try:
        assert isinstance(reply, guest.PtyAttached), reply
        await stream.send(b"echo pty-$((6 * 7))\n")
        seen = b""
        async with asyncio.timeout(10):
            while b"pty-42" not in seen:
                frame = await stream.read()
                assert isinstance(frame, bytes), frame
                seen += frame
    finally:
        await stream.close()


async def test_snapshot_then_restore_brings_the_old_content_back(
    controller: HostController, fresh: str
) -> None:
    await sh(controller, fresh, "echo v1 > state")
    taken = await snapshot(controller, fresh)
    await sh(controller, fresh, "echo v2 > state; echo new > later")

    info = await controller.handle(
        RestoreSnapshot(sandbox_id=fresh, snapshot_id=taken.snapshot_id, verify_keys=_VERIFY)
    )

    assert info.state == "running"
    assert await sh(controller, fresh, "cat state; test -e later || echo no-later") == "v1\nno-later\n"


async def test_clone_and_fork_have_the_parents_data_and_diverge(
    backend: Backend, controller: HostController, fresh: str
) -> None:
    await sh(controller, fresh, "echo parent > who")
    taken = await snapshot(controller, fresh)
    clone_id, fork_id = new_id(), new_id()
    try:
        clone = await controller.handle(
            CloneSnapshot(snapshot_id=taken.snapshot_id, spec=make_spec(clone_id), verify_keys=_VERIFY)
        )
        assert clone.state == "running"
        assert await sh(controller, clone_id, "cat who") == "parent\n"
        await sh(controller, clone_id, "echo clone > who")
        # A fork: snapshot the running parent and clone it at once; the parent runs on.
        forked = await snapshot(controller, fresh)
        await controller.handle(
            CloneSnapshot(snapshot_id=forked.snapshot_id, spec=make_spec(fork_id), verify_keys=_VERIFY)
        )
        await sh(controller, fork_id, "echo fork > who")
        await sh(controller, fresh, "echo parent-later > who")

        assert await sh(controller, clone_id, "cat who") == "clone\n"
        assert await sh(controller, fork_id, "cat who") == "fork\n"
        assert await sh(controller, fresh, "cat who") == "parent-later\n"
    finally:
        for sandbox_id in (clone_id, fork_id):
            await backend.runtime.destroy(sandbox_id)


async def test_archive_drops_the_disk_and_unarchive_brings_it_back(
    backend: Backend, controller: HostController, fresh: str
) -> None:
    await sh(controller, fresh, "head -c 262144 /dev/zero > blob; echo kept > note")
    await backend.runtime.stop(fresh)
    assert await backend.runtime.disk_used_bytes(fresh) >= 262144

    archived = await controller.handle(ArchiveSandbox(sandbox_id=fresh))

    assert archived.state == "archived"
    assert await backend.runtime.disk_used_bytes(fresh) == 0
    # Archived means no disk to boot: refused (the namespace runtime finds out only when its
    # mount fails, hence either error).
    with pytest.raises((SandboxConflict, RuntimeFailure)):
        await backend.runtime.start(make_spec(fresh))
    assert (await controller.handle(UnarchiveSandbox(sandbox_id=fresh))).state == "stopped"
    assert (await controller.handle(StartSandbox(spec=make_spec(fresh)))).state == "running"
    assert await sh(controller, fresh, "cat note; wc -c < blob") == "kept\n262144\n"


# the runtime's own ---------------------------------------------------------------------------


async def test_list_spec_and_disk_usage(
    backend: Backend, controller: HostController, shared: SandboxInfo
) -> None:
    assert shared in backend.runtime.list()
    assert backend.runtime.spec(shared.id) == make_spec(shared.id)
    before = await backend.runtime.disk_used_bytes(shared.id)
    await sh(controller, shared.id, "head -c 1048576 /dev/urandom > contract-mib")
    assert await backend.runtime.disk_used_bytes(shared.id) >= before + 1048576
    await sh(controller, shared.id, "rm contract-mib")
    with pytest.raises(SandboxNotFound):
        await backend.runtime.disk_used_bytes(new_id())
    with pytest.raises(SandboxNotFound):
        backend.runtime.spec(new_id())


async def test_a_server_in_the_sandbox_is_reached_at_its_port_endpoint(
    backend: Backend, controller: HostController, shared: SandboxInfo
) -> None:
    # On all addresses and a port the kernel picks (the fake's sandboxes share the host's
    # ports); hostd's port routes connect exactly so (hosts/ports/netns.py).
    server = (
        "import os, socket\n"
        "s = socket.socket()\n"
        "s.bind(('0.0.0.0', 0))\n"
        "s.listen()\n"
        "open('port.tmp', 'w').write(str(s.getsockname()[1]))\n"
        "os.rename('port.tmp', 'port')\n"
        "while True:\n"
        "    c, _ = s.accept()\n"
        "    c.sendall(b'pong ' + c.recv(100))\n"
        "    c.close()\n"
    )
    await sh(
        controller,
        shared.id,
        f"rm -f port; cat > ports.py <<'EOF'\n{server}EOF\nnohup python3 ports.py >/dev/null 2>&1 &",
    )

    async def listening() -> bool:
        return (await sh(controller, shared.id, "cat port 2>/dev/null || true")).strip() != ""

    await eventually(listening, "the server to listen", timeout=30)
    port = int(await sh(controller, shared.id, "cat port"))
    sock = await netns.connect(backend.runtime.port_endpoint(shared.id), port)
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        writer.write(b"ping")
        async with asyncio.timeout(15):
            assert await reader.read() == b"pong ping"
    finally:
        writer.close()
    with pytest.raises(SandboxNotFound):
        backend.runtime.port_endpoint(new_id())


async def test_a_paused_sandbox_makes_no_progress_and_continues_after_resume(
    backend: Backend, controller: HostController, fresh: str
) -> None:
    # A background job stamps the sandbox's clock into a file. A container's clock is the
    # host's; a VM's is its own, off by a fraction of a second and standing still while the VM
    # is paused. So the pause window is translated into the sandbox's clock with offsets
    # measured just before the pause and just after the resume (each to within half an exec's
    # round trip): a container's ticks must avoid the window; a paused VM's clock stood still,
    # which shrinks the window to nothing, while a VM that kept running would tick inside it.
    await sh(
        controller,
        fresh,
        "nohup sh -c 'while :; do date +%s%N >> ticks; sleep 0.02; done' >/dev/null 2>&1 &",
    )

    async def ticks() -> list[int]:
        return [int(t) for t in (await sh(controller, fresh, "cat ticks 2>/dev/null || true")).split()]

    async def ticking() -> bool:
        return len(await ticks()) >= 2

    async def clock_offset() -> tuple[int, int]:
        """(the sandbox's clock minus the host's, the uncertainty of that), in ns."""
        before = time.time_ns()
        sandbox = int(await sh(controller, fresh, "date +%s%N"))
        after = time.time_ns()
        return sandbox - (before + after) // 2, (after - before) // 2 + 1

    await eventually(ticking, "the job to tick")
    offset_before, error_before = await clock_offset()
    assert (await backend.runtime.pause(fresh)).state == "paused"
    paused_at = time.time_ns()
    with pytest.raises(SandboxConflict):
        await sh(controller, fresh, "true")
    # Hold the pause over many of the job's periods, well over the offsets' uncertainty and
    # the clock's tolerance below, measured by the host's clock.
    while time.time_ns() < paused_at + max(2_500_000_000, 4 * error_before):
        await asyncio.sleep(0.05)
    resumed_at = time.time_ns()
    assert (await backend.runtime.resume(fresh)).state == "running"
    resume_took = time.time_ns() - resumed_at
    offset_after, error_after = await clock_offset()
    window_start = paused_at + offset_before + error_before
    window_end = resumed_at + offset_after - error_after

    async def ticked_after_resume() -> bool:
        return any(t > window_end + 2 * error_after for t in await ticks())

    await eventually(ticked_after_resume, "the job to tick again")
    # A VM runs again from its stood-still clock until the resume's SetClock moves it on, so
    # ticks of that moment carry times just past the pause's start: at most the resume call's
    # length past it (a fresh-clone run under load met one). A VM that kept running would
    # tick all through the window, past that.
    stale_clock_until = window_start + resume_took
    assert [t for t in await ticks() if stale_clock_until < t < window_end] == []
    # And after the resume the sandbox's clock is the host's again: a VM's stood still for
    # the pause (longer than the tolerance), so the host must have set it.
    before = time.time_ns()
    sandbox = int(await sh(controller, fresh, "date +%s%N"))
    after = time.time_ns()
    assert before - 1_000_000_000 <= sandbox <= after + 1_000_000_000, (before, sandbox, after)


async def test_stop_keeps_the_data_and_start_boots_it_again(
    backend: Backend, controller: HostController, fresh: str
) -> None:
    # A duration no other process has: pids restart in a new PID namespace, so the job is
    # recognised by its command line, not its pid.
    duration = f"600.{uuid.uuid4().int % 10**9}"
    await sh(controller, fresh, f"echo kept > file; nohup sleep {duration} >/dev/null 2>&1 &")
    stopped = await backend.runtime.stop(fresh)
    assert (stopped.state, stopped.ip) == ("stopped", None)
    with pytest.raises(SandboxConflict):
        await sh(controller, fresh, "true")
    with pytest.raises(SandboxConflict):
        backend.runtime.port_endpoint(fresh)

    assert (await backend.runtime.start(make_spec(fresh))).state == "running"
    # Nothing of the first boot survived (its sleep), the disk did.
    assert (
        await sh(controller, fresh, f"cat file; ps -eo args | grep -cx 'sleep {duration}' || true")
        == "kept\n0\n"
    )


async def test_resize_is_recorded_in_the_spec(backend: Backend, fresh: str) -> None:
    info = await backend.runtime.resize(fresh, 2, 512, 2)
    assert info.state == "running"
    assert backend.runtime.spec(fresh) == make_spec(fresh, cpu=2, ram_mb=512, disk_gb=2)
    await backend.runtime.stop(fresh)
    assert (await backend.runtime.resize(fresh, 1, 256, 2)).state == "stopped"
    assert backend.runtime.spec(fresh) == make_spec(fresh, disk_gb=2)
    with pytest.raises(RuntimeFailure):
        await backend.runtime.resize(fresh, 0, 256, 2)


async def test_destroy_leaves_nothing(backend: Backend, controller: HostController) -> None:
    sandbox_id = new_id()
    await controller.handle(CreateSandbox(spec=make_spec(sandbox_id)))
    await sh(controller, sandbox_id, "echo x > file; nohup sleep 600 >/dev/null 2>&1 &")
    assert backend.traces(sandbox_id) != []

    await backend.runtime.destroy(sandbox_id)

    assert await asyncio.to_thread(backend.wait_gone, sandbox_id) == []
    assert all(info.id != sandbox_id for info in backend.runtime.list())
    await backend.runtime.destroy(sandbox_id)  # idempotent


async def test_a_new_instance_recovers_running_paused_and_stopped_sandboxes(backend: Backend) -> None:
    running, paused, stopped = new_id(), new_id(), new_id()
    for sandbox_id in (running, paused, stopped):
        await backend.runtime.create(make_spec(sandbox_id))
    await backend.runtime.pause(paused)
    await backend.runtime.stop(stopped)
    successor = backend.new_instance()
    try:
        states = {info.id: info.state for info in await successor.recover()}
        assert (states[running], states[paused], states[stopped]) == ("running", "paused", "stopped")

        client = await AgentClient.connect(successor.agent_socket(running))
        try:
            assert (await client.exec(["echo", "adopted"])).stdout == "adopted\n"
        finally:
            await client.close()
        assert (await successor.resume(paused)).state == "running"
        assert (await successor.start(make_spec(stopped))).state == "running"
    finally:
        for sandbox_id in (running, paused, stopped):
            await successor.destroy(sandbox_id)
            await backend.runtime.destroy(sandbox_id)  # the first instance forgets them too
    for sandbox_id in (running, paused, stopped):
        assert await asyncio.to_thread(backend.wait_gone, sandbox_id) == []


def _failing(real: Callable[..., object], after: bool, is_async: bool) -> Callable[..., object]:
    if is_async:

        async def async_step(*args: object, **kwargs: object) -> object:
            if after:
                result = await real(*args, **kwargs)  # type: ignore[misc]
                if (close := getattr(result, "close", None)) is not None:
                    await close()
            raise RuntimeFailure("injected failure")

        return async_step

    def step(*args: object, **kwargs: object) -> object:
        if after:
            real(*args, **kwargs)
        raise RuntimeFailure("injected failure")

    return step


async def test_a_create_failing_at_any_step_leaves_nothing(backend: Backend) -> None:
    for owner, name, is_async in backend.create_steps:
        for after in (False, True):
            sandbox_id = new_id()
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(owner, name, _failing(getattr(owner, name), after, is_async))
                with pytest.raises(RuntimeFailure, match="injected failure"):
                    await backend.runtime.create(make_spec(sandbox_id))
            where = f"{name} ({'after' if after else 'before'})"
            assert await asyncio.to_thread(backend.wait_gone, sandbox_id) == [], where
            assert all(info.id != sandbox_id for info in backend.runtime.list()), where
    # The failures freed whatever they took: a create succeeds afterwards.
    sandbox_id = new_id()
    assert (await backend.runtime.create(make_spec(sandbox_id))).state == "running"
    await backend.runtime.destroy(sandbox_id)


async def test_a_create_from_a_missing_snapshot_fails_cleanly(backend: Backend, tmp_path: Path) -> None:
    sandbox_id = new_id()
    with pytest.raises(RuntimeFailure):
        await backend.runtime.create(make_spec(sandbox_id), tmp_path)
    assert backend.traces(sandbox_id) == []


# memory snapshots (backends whose snapshots hold memory) -------------------------------------


async def test_running_processes_survive_a_memory_snapshot_in_a_fork_and_a_restore(
    backend: Backend, controller: HostController, fresh: str
) -> None:
    if not backend.runtime.capabilities.memory_snapshot:
        pytest.skip(f"the {backend.name} runtime's snapshots hold the disk only, not running processes")
    # A job whose secret lives only in its memory rewrites it into a file: once the file is
    # deleted after a restore, only that same process, still running, can bring it back.
    secret = uuid.uuid4().hex
    await sh(
        controller,
        fresh,
        f"SECRET={secret} nohup sh -c 'while :; do echo \"$SECRET\" > alive; sleep 0.05; done'"
        " >/dev/null 2>&1 &",
    )

    async def job_runs(sandbox_id: str) -> None:
        await sh(controller, sandbox_id, "rm -f alive")

        async def back() -> bool:
            return (await sh(controller, sandbox_id, "cat alive 2>/dev/null || true")).strip() == secret

        await eventually(back, f"the job to run on in {sandbox_id}", timeout=30)

    async def identity(sandbox_id: str) -> tuple[str, str]:
        boot_id, hostname = (
            await sh(controller, sandbox_id, "cat /proc/sys/kernel/random/boot_id; hostname")
        ).split()
        return boot_id, hostname

    async def clock_is_right(sandbox_id: str) -> None:
        before = time.time_ns()
        sandbox = int(await sh(controller, sandbox_id, "date +%s%N"))
        after = time.time_ns()
        assert before - 1_000_000_000 <= sandbox <= after + 1_000_000_000, (before, sandbox, after)

    await job_runs(fresh)
    parent_boot, _ = await identity(fresh)
    taken = await snapshot(controller, fresh)
    # Longer than the clock's tolerance: a restored clock that was not set would lag by this.
    await asyncio.sleep(3)
    fork_id = new_id()
    try:
        fork = await controller.handle(
            CloneSnapshot(snapshot_id=taken.snapshot_id, spec=make_spec(fork_id), verify_keys=_VERIFY)
        )
        assert fork.state == "running"
        await job_runs(fork_id)
        fork_boot, fork_hostname = await identity(fork_id)
        assert fork_boot != parent_boot and fork_hostname == fork_id
        await clock_is_right(fork_id)
        # The fork and its parent write on their own from here.
        await sh(controller, fork_id, "echo fork > who")
        await sh(controller, fresh, "echo parent > who")
        assert await sh(controller, fork_id, "cat who") == "fork\n"
        assert await sh(controller, fresh, "cat who") == "parent\n"

        restored = await controller.handle(
            RestoreSnapshot(sandbox_id=fresh, snapshot_id=taken.snapshot_id, verify_keys=_VERIFY)
        )
        assert restored.state == "running"
        await job_runs(fresh)
        restored_boot, restored_hostname = await identity(fresh)
        assert restored_boot not in (parent_boot, fork_boot) and restored_hostname == fresh
        await clock_is_right(fresh)
        assert await sh(controller, fresh, "cat who 2>/dev/null || echo none") == "none\n"
    finally:
        await backend.runtime.destroy(fork_id)


async def test_two_forks_of_one_sandbox_both_answer_on_the_network_at_once(
    backend: Backend, controller: HostController, fresh: str
) -> None:
    # Forks of one memory snapshot wake with the parent's network state, MAC included; two
    # with one MAC on the host bridge would steal each other's frames. A server started in the
    # parent runs on in both forks and answers every connection with its host's name.
    if not backend.runtime.capabilities.fork:
        pytest.skip(f"the {backend.name} runtime's clones boot anew: they share no running state")
    server = (
        "import socket\n"
        "s = socket.socket()\n"
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "s.bind(('0.0.0.0', 8123))\n"
        "s.listen()\n"
        "open('listening', 'w').close()\n"
        "while True:\n"
        "    c, _ = s.accept()\n"
        "    c.sendall(socket.gethostname().encode())\n"
        "    c.close()\n"
    )
    await sh(
        controller, fresh, f"cat > server.py <<'EOF'\n{server}EOF\nnohup python3 server.py >/dev/null 2>&1 &"
    )

    async def listening() -> bool:
        return (await sh(controller, fresh, "test -e listening && echo yes || true")).strip() == "yes"

    await eventually(listening, "the server to listen", timeout=30)
    taken = await snapshot(controller, fresh)
    forks = [new_id(), new_id()]
    try:
        addresses = {}
        for fork_id in forks:
            info = await controller.handle(
                CloneSnapshot(snapshot_id=taken.snapshot_id, spec=make_spec(fork_id), verify_keys=_VERIFY)
            )
            assert info.ip is not None
            addresses[fork_id] = info.ip

        async def hostname_at(address: str) -> str:
            async with asyncio.timeout(15):
                reader, writer = await asyncio.open_connection(address, 8123)
                try:
                    return (await reader.read()).decode()
                finally:
                    writer.close()

        # In turns, so that each one's frames move the bridge's idea of where a shared MAC is,
        # and together.
        for _ in range(3):
            for fork_id, address in addresses.items():
                assert await hostname_at(address) == fork_id
        answers = await asyncio.gather(*(hostname_at(a) for a in addresses.values()))
        assert answers == list(addresses)
        macs = [await sh(controller, f, "cat /sys/class/net/eth0/address") for f in forks]
        assert macs[0] != macs[1]
    finally:
        for fork_id in forks:
            await backend.runtime.destroy(fork_id)
