"""Template services (guest/services.py): the declaration's shape, the command a service runs
as, and a real agent that starts a declared service, starts it again when it dies, and stops
it when the agent stops."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from guest import services
from hosts.agent_client import AgentClient, wait_ready
from tests.support import wait_for

REPO = Path(__file__).resolve().parents[2]


def test_the_documented_declaration_parses() -> None:
    raw = json.dumps(
        {
            "services": [
                {
                    "name": "code-interpreter",
                    "argv": ["/usr/bin/python3", "-m", "guest.code_interpreter"],
                    "user": "user",
                    "cwd": "/home/user",
                    "env": {"PYTHONPATH": "/opt/dnah"},
                    "restart": "always",
                    "ready_port": 49999,
                },
                {"name": "plain", "argv": ["sleep", "1"]},
            ]
        }
    ).encode()
    first, second = services.parse(raw)
    assert first == services.Service(
        name="code-interpreter",
        argv=["/usr/bin/python3", "-m", "guest.code_interpreter"],
        user="user",
        cwd="/home/user",
        env={"PYTHONPATH": "/opt/dnah"},
        restart="always",
        ready_port=49999,
    )
    assert second == services.Service(name="plain", argv=["sleep", "1"])


@pytest.mark.parametrize(
    ("doc", "complaint"),
    [
        (b"{", "not JSON"),
        (b"[]", "expected"),
        (b'{"services": [{"name": "a b", "argv": ["x"]}]}', "bad service name"),
        (b'{"services": [{"name": "a", "argv": []}]}', "argv"),
        (b'{"services": [{"name": "a", "argv": ["x"], "restart": "sometimes"}]}', "restart"),
        (b'{"services": [{"name": "a", "argv": ["x"], "env": {"A": 1}}]}', "env"),
        (b'{"services": [{"name": "a", "argv": ["x"], "ready_port": 0}]}', "ready_port"),
        (b'{"services": [{"name": "a", "argv": ["x"]}, {"name": "a", "argv": ["y"]}]}', "unique"),
    ],
)
def test_a_malformed_declaration_is_refused(doc: bytes, complaint: str) -> None:
    with pytest.raises(services.ServiceError, match=complaint):
        services.parse(doc)


def test_another_account_runs_through_sudo_with_the_declared_environment() -> None:
    me = pwd.getpwuid(os.getuid())
    others = [e for e in pwd.getpwall() if e.pw_uid != os.getuid()]
    other = next((e for e in others if e.pw_name == "nobody"), others[0])
    base = {"PATH": "/usr/bin:/bin", "HOME": me.pw_dir, "KEEP": "1"}
    service = services.Service(name="s", argv=["prog", "--flag"], user=other.pw_name, env={"A": "b"})
    argv, env, cwd = services.command(service, base)
    assert argv[:6] == ["sudo", "-n", "-u", other.pw_name, "--", "/usr/bin/env"]
    assert argv[6:9] == ["-i", "-C", other.pw_dir] and argv[-2:] == ["prog", "--flag"]
    assigned = dict(a.split("=", 1) for a in argv[9:-2])
    assert assigned == {"PATH": "/usr/bin:/bin", "HOME": other.pw_dir, "KEEP": "1", "A": "b"} | {
        "USER": other.pw_name,
        "LOGNAME": other.pw_name,
    }
    assert env == base and cwd == "/"  # env -C enters the home once the account is switched
    # the agent's own account (or none named): the argv as declared
    mine = services.Service(name="s", argv=["prog"], user=me.pw_name, cwd="/tmp")
    assert services.command(mine, base) == (
        ["prog"],
        base | {"USER": me.pw_name, "LOGNAME": me.pw_name},
        "/tmp",
    )
    assert services.command(services.Service(name="s", argv=["prog"]), base) == (["prog"], base, me.pw_dir)


# a real agent ---------------------------------------------------------------------------------


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="dnah-svc-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _pid_in(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purpose
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_the_agent_starts_a_declared_service_restarts_it_and_stops_it(workdir: Path) -> None:
    pidfile = workdir / "service.pid"
    script = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(600)"
    declared = workdir / "services.json"
    name = f"test-{os.getpid()}"
    declared.write_text(
        json.dumps(
            {"services": [{"name": name, "argv": [sys.executable, "-c", script], "cwd": str(workdir)}]}
        )
    )
    agent = subprocess.Popen(
        [sys.executable, "-S", "-m", "guest.agent", "--uds", str(workdir / "agent.sock")],
        env={"PYTHONPATH": str(REPO), "DNAH_SERVICES_FILE": str(declared)},
        cwd=workdir,
        start_new_session=True,
    )
    try:
        first = wait_for(lambda: _pid_in(pidfile), what="the service to start")
        pidfile.unlink()
        os.kill(first, signal.SIGKILL)
        second = wait_for(lambda: _pid_in(pidfile), what="the service to be started again")
        assert second != first
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0
        wait_for(lambda: not _alive(second), what="the service to stop with the agent")
    finally:
        if agent.poll() is None:
            os.killpg(agent.pid, signal.SIGKILL)
            agent.wait()
        pid = _pid_in(pidfile)
        if pid is not None and _alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("seed", range(24))
async def test_the_services_start_while_the_first_requests_load_their_handlers(
    workdir: Path, seed: int
) -> None:
    """The services thread imports ``guest.services`` (dataclasses) while the first requests
    and the warm-up import theirs (``typing`` among them); before ``guest/lazy.py`` a dataclass
    defined beside a half-loaded ``typing`` killed the services thread in about one start in
    three, depending on the hash seed (the warm-up's import order) and timing."""
    pidfile = workdir / "service.pid"
    script = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(600)"
    declared = workdir / "services.json"
    service = {"name": f"race-{seed}", "argv": [sys.executable, "-c", script]}
    declared.write_text(json.dumps({"services": [service]}))
    stderr = workdir / "stderr"
    with open(stderr, "wb") as err:
        agent = subprocess.Popen(
            [sys.executable, "-S", "-m", "guest.agent", "--uds", str(workdir / "agent.sock"), "--init"],
            env={"PYTHONPATH": str(REPO), "DNAH_SERVICES_FILE": str(declared), "PYTHONHASHSEED": str(seed)},
            cwd=workdir,
            stderr=err,
            start_new_session=True,
        )
    try:
        first = await wait_ready(workdir / "agent.sock", timeout=30)
        others = [await AgentClient.connect(workdir / "agent.sock") for _ in range(3)]
        results = await asyncio.gather(*(client.exec(["true"]) for client in [first, *others]))
        assert all(result.exit_code == 0 for result in results)
        for client in [first, *others]:
            await client.close()
        try:
            wait_for(lambda: _pid_in(pidfile), what="the service to start")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the agent's stderr: {stderr.read_text()}") from None
    finally:
        os.killpg(agent.pid, signal.SIGKILL)
        agent.wait()
        pid = _pid_in(pidfile)
        if pid is not None and _alive(pid):
            os.kill(pid, signal.SIGKILL)
