"""The real guest agent, run as a subprocess, driven by the real ``AgentClient``.

The agent is started the way the runtime starts it in a sandbox — ``python -S -m guest.agent``
with only PYTHONPATH pointing at the repository — so a stray non-stdlib import fails here too.
Tests taking the ``agent``/``client`` fixtures run twice: against a plain agent and against
one started with ``--init``. Tests about the wire itself use a raw blocking socket, so they can
send what ``AgentClient`` never would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from contracts import guest
from hosts.agent_client import AgentClient, wait_ready
from hosts.errors import AgentError, AgentUnavailable

REPO = Path(__file__).resolve().parents[2]
AGENT_ENV = {"PYTHONPATH": str(REPO), "DNAH_TOKEN": "agent-only", "KEEP_ME": "1"}
"""What the agent is started with: no PATH/HOME/LANG, so the agent's defaults must fill them in."""
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


# fixtures ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Agent:
    process: subprocess.Popen[bytes]
    socket_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid


StartAgent = Callable[..., Agent]


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A short directory: a Unix socket path is limited to 108 bytes, which tmp_path can exceed."""
    path = Path(tempfile.mkdtemp(prefix="dnah-agent-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def start_agent(workdir: Path) -> Iterator[StartAgent]:
    """Start agents on sockets in ``workdir``; every one still running is stopped afterwards."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*, init: bool = False, env: dict[str, str] | None = None) -> Agent:
        socket_path = workdir / "agent.sock"
        argv = [sys.executable, "-S", "-m", "guest.agent", "--uds", str(socket_path)]
        # Its own process group, so teardown reaches the server child of an --init agent too,
        # even when a test killed the init parent.
        process = subprocess.Popen(
            [*argv, "--init"] if init else argv,
            env={**AGENT_ENV, **(env or {})},
            cwd=workdir,
            start_new_session=True,
        )
        started.append(process)
        return Agent(process, socket_path)

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        kill_group(process.pid)  # whatever of the agent's group is left (an orphaned server child)


@pytest.fixture(params=[False, True], ids=["plain", "init"])
def agent(request: pytest.FixtureRequest, start_agent: StartAgent) -> Agent:
    """An agent in each mode: plain, and ``--init`` (the server runs in a forked child)."""
    return start_agent(init=request.param)


@pytest.fixture
async def client(agent: Agent) -> AsyncIterator[AgentClient]:
    client = await AgentClient.connect(agent.socket_path)
    yield client
    await client.close()


# helpers ------------------------------------------------------------------------------------


class RawConnection:
    """A blocking socket to the agent that speaks the wire format by hand."""

    def __init__(self, socket_path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(str(socket_path))
        self.stream = self.sock.makefile("rb")

    def handshake(self, line: bytes = b"CONNECT 52\n") -> bytes:
        self.sock.sendall(line)
        return self.stream.readline()

    def send_frame(self, payload: bytes, *, binary: bool = False) -> None:
        header = len(payload) | (guest.BINARY_FLAG if binary else 0)
        self.sock.sendall(header.to_bytes(4, "big") + payload)

    def reply(self) -> guest.GuestToHost:
        length, binary = guest.parse_header(self.stream.read(4))
        assert not binary
        return guest.decode_from_guest(self.stream.read(length))

    def closed_by_peer(self) -> bool:
        return self.stream.read(1) == b""

    def close(self) -> None:
        self.stream.close()
        self.sock.close()


@pytest.fixture
def raw(client: AgentClient, agent: Agent) -> Iterator[RawConnection]:
    """A raw connection to an agent already known to be listening (``client`` connected)."""
    connection = RawConnection(agent.socket_path)
    yield connection
    connection.close()


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """``(state, ppid, pgrp)`` of a process from /proc, or None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    state, ppid, pgrp = text.rpartition(")")[2].split()[:3]
    return state, int(ppid), int(pgrp)


def processes() -> dict[int, tuple[str, int, int]]:
    """Every process on the machine, as ``pid: (state, ppid, pgrp)``."""
    found = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (info := proc_stat(int(name))) is not None:
            found[int(name)] = info
    return found


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


# ping and exec -------------------------------------------------------------------------------


async def test_ping_reports_protocol_version(client: AgentClient) -> None:
    pong = await client.ping()
    assert pong.version == guest.PROTOCOL_VERSION
    assert pong.agent.startswith("dnah-guest/")


async def test_exec_captures_output_and_exit_code(client: AgentClient) -> None:
    result = await client.exec(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (result.stdout, result.stderr, result.exit_code, result.timed_out) == ("out\n", "err\n", 3, False)
    assert result.truncated is False
    assert 0 < result.duration_ms < 5000


async def test_exec_env_and_cwd(client: AgentClient, workdir: Path) -> None:
    (workdir / "sub").mkdir()
    result = await client.exec(
        ["sh", "-c", 'echo "$GREETING"; pwd'], env={"GREETING": "héllo"}, cwd=str(workdir / "sub")
    )
    assert result.stdout == f"héllo\n{workdir / 'sub'}\n"


async def test_base_environment_has_defaults_and_hides_agent_plumbing(client: AgentClient) -> None:
    result = await client.exec(["/usr/bin/env"], env={"LANG": "en_US.UTF-8"})
    env = dict(line.split("=", 1) for line in result.stdout.splitlines())
    assert env["PATH"] == BASE_PATH
    account = pwd.getpwuid(os.getuid())
    assert (env["HOME"], env["USER"]) == (account.pw_dir, account.pw_name)
    assert env["LANG"] == "en_US.UTF-8"  # the request's env goes on top
    assert env["KEEP_ME"] == "1"  # the agent's own environment is passed on...
    assert "PYTHONPATH" not in env  # ...except its plumbing
    assert not [name for name in env if name.startswith("DNAH_")]


async def test_output_is_utf8_with_replacement(client: AgentClient) -> None:
    result = await client.exec(["printf", "caf\\303\\251 \\377!"])
    assert result.stdout == "café \ufffd!"


async def test_output_is_capped_but_drained(client: AgentClient) -> None:
    result = await client.exec(["sh", "-c", "head -c 3000000 /dev/zero; echo done >&2"])
    assert len(result.stdout) == 1024 * 1024
    assert (result.stderr, result.exit_code, result.truncated) == ("done\n", 0, True)
    exact = await client.exec(["sh", "-c", "head -c 1048576 /dev/zero"])  # exactly the cap: whole
    assert (len(exact.stdout), exact.truncated) == (1024 * 1024, False)


async def test_missing_binary_is_exit_127(client: AgentClient) -> None:
    result = await client.exec(["/nonexistent/tool", "--help"])
    assert result.exit_code == 127
    assert result.stderr == "/nonexistent/tool: No such file or directory\n"


async def test_missing_cwd_is_exit_127(client: AgentClient, workdir: Path) -> None:
    result = await client.exec(["true"], cwd=str(workdir / "missing"))
    assert result.exit_code == 127
    assert result.stderr == f"{workdir / 'missing'}: No such file or directory\n"


async def test_non_executable_file_is_exit_126(client: AgentClient, workdir: Path) -> None:
    script = workdir / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    result = await client.exec([str(script)])
    assert result.exit_code == 126
    assert result.stderr == f"{script}: Permission denied\n"


async def test_argument_popen_refuses_is_a_bad_request(client: AgentClient) -> None:
    with pytest.raises(AgentError) as caught:
        await client.exec(["echo", "nul\x00byte"])
    assert caught.value.agent_code == "bad_request"
    assert (await client.exec(["echo", "still here"])).stdout == "still here\n"


async def test_timeout_kills_the_whole_process_group(client: AgentClient, workdir: Path) -> None:
    pidfile = workdir / "pgid"
    result = await client.exec(["sh", "-c", f"echo $$ > {pidfile}; sleep 100 & sleep 100"], timeout_ms=300)
    assert (result.timed_out, result.exit_code) == (True, -9)
    assert 300 <= result.duration_ms < 3000
    pgid = int(pidfile.read_text())
    # killed members may linger as zombies until their new parent reaps them; none may live
    assert await eventually(
        lambda: not [pid for pid, (state, _, pgrp) in processes().items() if pgrp == pgid and state != "Z"]
    )


async def test_timeout_applies_after_the_command_closes_its_pipes(client: AgentClient) -> None:
    result = await client.exec(["sh", "-c", "exec >&- 2>&-; sleep 100"], timeout_ms=300)
    assert (result.timed_out, result.exit_code) == (True, -9)


async def test_background_child_holding_the_pipes_does_not_block(client: AgentClient) -> None:
    started = time.monotonic()
    result = await client.exec(["sh", "-c", "sleep 30 & echo $$"], timeout_ms=20_000)
    try:
        assert time.monotonic() - started < 2
        assert (result.exit_code, result.timed_out) == (0, False)
    finally:
        kill_group(int(result.stdout))


async def test_concurrent_execs_share_one_connection(client: AgentClient) -> None:
    """Replies come back in a different order from the requests and still match by id."""
    count = 20
    results = await asyncio.gather(
        *(client.exec(["sh", "-c", f"sleep 0.{count - n:02d}; echo {n}"]) for n in range(count))
    )
    assert [result.stdout for result in results] == [f"{n}\n" for n in range(count)]


async def test_many_connections_at_once(agent: Agent, client: AgentClient) -> None:
    clients = await asyncio.gather(*(AgentClient.connect(agent.socket_path) for _ in range(30)))
    try:
        pongs = await asyncio.gather(*(c.ping() for c in clients))
        assert all(pong.version == guest.PROTOCOL_VERSION for pong in pongs)
    finally:
        await asyncio.gather(*(c.close() for c in clients))


# code.run, dirs, metrics ---------------------------------------------------------------------


async def run_code(client: AgentClient, language: str, code: str, **fields: object) -> guest.ExecResult:
    reply = await client.call(guest.CodeRun(id=0, language=language, code=code, **fields))  # type: ignore[arg-type]
    assert isinstance(reply, guest.ExecResult), reply
    return reply


@pytest.mark.parametrize(
    ("language", "code", "stdout"),
    [
        (
            "python",
            "import sys; print(sys.argv[1:], 6 * 7); sys.stderr.write('e\\n'); sys.exit(3)",
            "['-a', 'b c'] 42\n",
        ),
        ("bash", 'echo "$0" "$@" $((6 * 7)); echo e >&2; exit 3', "bash -a b c 42\n"),
        (
            "javascript",
            "console.log(JSON.stringify(process.argv.slice(1)), 6 * 7); console.error('e'); process.exit(3)",
            '["-a","b c"] 42\n',
        ),
        (
            "typescript",
            "console.log(JSON.stringify(process.argv.slice(1)), 6 * 7); console.error('e'); process.exit(3)",
            '["-a","b c"] 42\n',
        ),
    ],
)
async def test_code_run_each_language(client: AgentClient, language: str, code: str, stdout: str) -> None:
    result = await run_code(client, language, code, argv=["-a", "b c"])
    assert (result.stdout, result.stderr, result.exit_code, result.timed_out) == (stdout, "e\n", 3, False)


async def test_code_run_env_and_cwd(client: AgentClient, workdir: Path) -> None:
    code = "import os; print(os.environ['GREETING'], os.getcwd())"
    result = await run_code(client, "python", code, env={"GREETING": "héllo"}, cwd=str(workdir))
    assert result.stdout == f"héllo {workdir}\n"


async def test_typescript_syntax_fails_like_node(client: AgentClient) -> None:
    """TypeScript runs as JavaScript: type annotations are Node's SyntaxError, exit code 1."""
    result = await run_code(client, "typescript", "const x: number = 1; console.log(x)")
    assert result.exit_code == 1
    assert "SyntaxError" in result.stderr


@pytest.mark.parametrize("init", [False, True], ids=["plain", "init"])
@pytest.mark.parametrize("language", ["python", "bash", "javascript"])
async def test_long_code_runs_from_a_removed_temporary_file(
    start_agent: StartAgent, workdir: Path, init: bool, language: str
) -> None:
    """Over ``CODE_ARG_MAX`` bytes the code cannot be one argument (Linux caps it at 128 KiB);
    it runs from a file, with the same arguments, and the file is gone afterwards. The agent
    gets a temporary directory of its own: /tmp is shared with every other test running."""
    comment = {"python": "#", "bash": "#", "javascript": "//"}[language]
    show = {
        "python": "import sys; print(sys.argv[1:])",
        "bash": 'echo "[$1]"',
        "javascript": "console.log(process.argv.slice(1))",
    }[language]
    code = f"{comment} {'x' * 200_000}\n{show}\n"
    private_tmp = workdir / "tmp"
    private_tmp.mkdir()
    agent = start_agent(init=init, env={"TMPDIR": str(private_tmp)})
    client = await wait_ready(agent.socket_path, timeout=10)
    try:
        result = await run_code(client, language, code, argv=["arg"])
    finally:
        await client.close()
    assert result.exit_code == 0, result.stderr
    assert "arg" in result.stdout
    assert list(private_tmp.iterdir()) == []


async def test_code_run_timeout_kills_the_group(client: AgentClient) -> None:
    result = await run_code(client, "bash", "sleep 100 & sleep 100", timeout_ms=300)
    assert (result.timed_out, result.exit_code) == (True, -9)
    assert result.duration_ms < 3000


async def test_code_run_refusals(client: AgentClient) -> None:
    error = await client.call(guest.CodeRun(id=0, language="python", code="print('nul\x00')"))
    assert isinstance(error, guest.Error) and error.code == "bad_request"
    missing = await run_code(client, "python", "print(1)", cwd="/nonexistent")
    assert missing.exit_code == 127


async def test_dirs(client: AgentClient, workdir: Path) -> None:
    dirs = await client.call(guest.Dirs(id=0))
    home = pwd.getpwuid(os.getuid()).pw_dir
    project = "/workspace" if os.path.isdir("/workspace") else home
    assert dirs == guest.DirsResult(id=dirs.id, home=home, work=str(workdir), project=project)


async def test_metrics_outside_a_sandbox_are_the_machine_s(client: AgentClient) -> None:
    metrics = await client.call(guest.Metrics(id=0))
    assert isinstance(metrics, guest.MetricsResult)
    assert metrics.cpus >= 1
    assert (
        0
        < metrics.mem_used_bytes
        < metrics.mem_limit_bytes
        <= os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    )
    assert metrics.load_1m >= 0


# the wire ------------------------------------------------------------------------------------


def test_handshake_is_case_insensitive_and_trims_spaces(raw: RawConnection) -> None:
    assert raw.handshake(b"  connect 52 \n") == b"OK 52\n"
    raw.send_frame(b'{"t":"ping","id":4}')
    assert isinstance(raw.reply(), guest.Pong)


@pytest.mark.parametrize(
    "line", [b"CONNECT 53\n", b"CONNECT\n", b"HELLO 52\n", b"CONNECT 52 52\n", b"X" * 100]
)
def test_handshake_on_another_port_or_garbage_is_refused(raw: RawConnection, line: bytes) -> None:
    raw.sock.sendall(line)
    assert raw.closed_by_peer()


async def test_client_reports_a_refused_port_as_unavailable(agent: Agent, client: AgentClient) -> None:
    started = time.monotonic()
    with pytest.raises(AgentUnavailable):
        await AgentClient.connect(agent.socket_path, port=53, timeout=0.3)
    assert time.monotonic() - started < 2


def test_malformed_json_gets_an_error_and_the_connection_survives(raw: RawConnection) -> None:
    raw.handshake()
    raw.send_frame(b"{not json")
    error = raw.reply()
    assert isinstance(error, guest.Error)
    assert (error.id, error.code) == (0, "bad_request")
    raw.send_frame(b'{"t":"launch","id":8}')
    assert raw.reply() == guest.Error(id=8, code="bad_request", message="unknown message type 'launch'")
    raw.send_frame(guest.encode(guest.Ping(id=9))[4:])
    assert isinstance(pong := raw.reply(), guest.Pong) and pong.id == 9


def test_unexpected_binary_frame_is_skipped(raw: RawConnection) -> None:
    raw.handshake()
    raw.send_frame(b"\x00\x01 raw bytes " * 1000, binary=True)
    error = raw.reply()
    assert isinstance(error, guest.Error) and (error.id, error.code) == (0, "bad_request")
    raw.send_frame(guest.encode(guest.Ping(id=2))[4:])
    assert isinstance(raw.reply(), guest.Pong)


def test_oversize_header_closes_the_connection(raw: RawConnection) -> None:
    raw.handshake()
    raw.sock.sendall((guest.MAX_JSON_FRAME + 1).to_bytes(4, "big"))
    assert raw.closed_by_peer()


# connection loss, readiness, lifecycle -------------------------------------------------------


async def test_connection_loss_fails_pending_calls(start_agent: StartAgent, workdir: Path) -> None:
    agent = start_agent()
    client = await AgentClient.connect(agent.socket_path)
    pidfile = workdir / "pgid"
    try:
        pending = asyncio.create_task(client.exec(["sh", "-c", f"echo $$ > {pidfile}; sleep 30"]))
        assert await eventually(pidfile.exists)
        agent.process.kill()
        with pytest.raises(AgentUnavailable):
            await asyncio.wait_for(pending, 5)
        assert client.closed
        with pytest.raises(AgentUnavailable):
            await client.ping()
    finally:
        kill_group(int(pidfile.read_text()))
        await client.close()


async def test_wait_ready_waits_for_an_agent_that_starts_late(start_agent: StartAgent, workdir: Path) -> None:
    waiting = asyncio.create_task(wait_ready(workdir / "agent.sock", timeout=30))
    await asyncio.sleep(0)  # one turn of the loop: wait_ready has begun trying, and found no socket
    assert not waiting.done() and not (workdir / "agent.sock").exists()
    start_agent()  # only now does the agent start
    client = await waiting
    try:
        assert (await client.ping()).version == guest.PROTOCOL_VERSION
    finally:
        await client.close()


async def test_wait_ready_times_out(workdir: Path) -> None:
    """It gives up by itself (AgentUnavailable), long before the outer guard would cut it
    off with a TimeoutError."""
    with pytest.raises(AgentUnavailable):
        await asyncio.wait_for(wait_ready(workdir / "nobody.sock", timeout=0.3), timeout=60)


async def test_socket_is_private_and_a_stale_one_is_replaced(start_agent: StartAgent, workdir: Path) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(workdir / "agent.sock"))
    stale.close()  # the file stays behind, as after a crash
    agent = start_agent()
    client = await AgentClient.connect(agent.socket_path)
    try:
        await client.ping()
        assert stat.S_IMODE(agent.socket_path.stat().st_mode) == 0o600
    finally:
        await client.close()


@pytest.mark.parametrize("init", [False, True], ids=["plain", "init"])
async def test_sigterm_stops_the_agent_cleanly(start_agent: StartAgent, init: bool) -> None:
    agent = start_agent(init=init)
    client = await AgentClient.connect(agent.socket_path)
    await client.close()
    agent.process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(agent.process.wait, 5) == 0
    assert not agent.socket_path.exists()


async def test_init_reaps_orphans(start_agent: StartAgent) -> None:
    agent = start_agent(init=True)
    client = await AgentClient.connect(agent.socket_path)
    try:
        # sh exits at once; its background sleep is orphaned and must come to the init
        result = await client.exec(["sh", "-c", "sleep 0.5 >/dev/null 2>&1 & echo $!"])
        orphan = int(result.stdout)
        info = proc_stat(orphan)
        assert info is not None and info[1] == agent.pid
        assert await eventually(lambda: proc_stat(orphan) is None)
        assert [
            pid for pid, (state, ppid, _) in processes().items() if ppid == agent.pid and state == "Z"
        ] == []
        assert (await client.exec(["sh", "-c", "exit 7"])).exit_code == 7  # statuses are not stolen
    finally:
        await client.close()
