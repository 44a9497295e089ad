"""The agent's start: it listens (and so answers the runtime's first ping) before it imports
what only later requests need; every request still works right after (the other agent
tests start it the same way)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hosts.agent_client import wait_ready

REPO = Path(__file__).resolve().parents[2]
LAZY = (
    "guest.requests",
    "guest.ops",
    "guest.runner",
    "guest.git",
    "guest.files",
    "guest.sessions",
    "guest.pty",
    "guest.proc",
    "guest.processes",
    "guest.transfer",
    "argparse",
    "dataclasses",
    "inspect",
    "subprocess",
    "typing",
)
"""Modules the agent must not import before it listens (``ctypes`` is not among them: with
``--init`` the PID 1 parent loads it after the fork, alongside the server, sharing its stderr)."""


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="dnah-start-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def imported_before(log: str, line: str) -> set[str]:
    """Modules whose ``-X importtime`` line comes before ``line`` in the agent's stderr."""
    before = log.split(line, 1)[0]
    lines = [entry for entry in before.splitlines() if entry.startswith("import time:")]
    return {entry.rsplit("|", 1)[1].strip() for entry in lines}


@pytest.mark.parametrize("init", [False, True], ids=["plain", "init"])
async def test_the_agent_listens_before_it_imports_the_handlers(workdir: Path, init: bool) -> None:
    socket_path = workdir / "agent.sock"
    stderr_path = workdir / "stderr"
    argv = [sys.executable, "-S", "-X", "importtime", "-m", "guest.agent", "--uds", str(socket_path)]
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(
            [*argv, "--init"] if init else argv,
            env={"PYTHONPATH": str(REPO)},
            cwd=workdir,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        client = await wait_ready(socket_path, timeout=20)
        listening = f"listening on {socket_path}"
        log = stderr_path.read_text()
        assert listening in log
        early = imported_before(log, listening)
        assert "guest.framing" in early
        assert early.isdisjoint(LAZY), sorted(early & set(LAZY))
        result = await client.exec(["echo", "ok"])  # its modules are loaded on demand
        assert (result.exit_code, result.stdout) == (0, "ok\n")
        await client.close()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0, stderr_path.read_text()[-2000:]


def test_bad_arguments_get_the_usage_and_status_2() -> None:
    for argv in (["--init"], ["--uds"], ["--uds", "/tmp/x.sock", "--bogus"]):
        done = subprocess.run(
            [sys.executable, "-S", "-m", "guest.agent", *argv],
            env={"PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        assert done.returncode == 2, argv
        assert "usage: guest.agent --uds PATH [--init]" in done.stderr
