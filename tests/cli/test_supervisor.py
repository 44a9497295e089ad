"""The supervisor restarts whatever child of the stack dies, and the stack serves again.

A real stack of this module's own (Postgres and Redis included: killing the shared one's
would break the rest of the suite), each child SIGKILLed in turn while a sandbox runs; and
real short-lived processes for the backoff, with a clock the test moves.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

import httpx
import pytest

from cli.stack import Stack
from cli.supervisor import Supervisor
from tests.private_stack import private_stack
from tests.support import mint_key, wait_for


@pytest.fixture(scope="module")
def supervised() -> Iterator[tuple[Stack, list[str]]]:
    said: list[str] = []
    with private_stack({}, say=said) as stack:
        stop = threading.Event()
        watcher = threading.Thread(target=Supervisor(stack).run, args=(stop,), daemon=True)
        watcher.start()
        try:
            yield stack, said
        finally:
            stop.set()
            watcher.join()


@pytest.fixture(scope="module")
def client(supervised: tuple[Stack, list[str]]) -> Iterator[httpx.Client]:
    stack, _ = supervised
    admin_auth = {"authorization": f"Bearer {stack.admin_token}"}
    with httpx.Client(base_url=stack.config.gateway_url, headers=admin_auth, timeout=60) as admin:
        key = mint_key(admin, "supervisor")
    with httpx.Client(
        base_url=stack.config.gateway_url, headers={"authorization": f"Bearer {key}"}, timeout=60
    ) as client:
        yield client


def _serves(client: httpx.Client, sandbox_id: str) -> bool:
    """A create (Postgres, Redis, core, hostd, gateway) and an exec in an older sandbox work."""
    try:
        created = client.post("/v1/sandboxes", json={})
        if created.status_code != 201:
            return False
        client.delete(f"/v1/sandboxes/{created.json()['id']}")
        out = client.post(f"/v1/sandboxes/{sandbox_id}/exec", json={"cmd": ["cat", "/home/daytona/f"]})
    except httpx.HTTPError:
        return False
    return out.status_code == 200 and out.json()["stdout"] == "kept\n"


@pytest.mark.parametrize("name", ["gateway", "core", "hostd", "redis", "postgres"])
def test_a_killed_child_is_restarted_and_the_stack_serves_again(
    supervised: tuple[Stack, list[str]], client: httpx.Client, name: str
) -> None:
    stack, said = supervised
    sid = client.post("/v1/sandboxes", json={}).json()["id"]
    client.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": ["sh", "-c", "echo kept > /home/daytona/f"]})
    victim = stack.pid(name)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)

    restarted = wait_for(
        lambda: [line for line in said if line.startswith(f"{name} restarted (pid ")],
        what=f"{name} restarted",
    )
    assert restarted[-1] == f"{name} restarted (pid {stack.pid(name)})"
    announced = re.compile(rf"{name} exited( with -?\d+)?; restarting in [\d.]+ s \(restart \d+\)")
    assert any(announced.fullmatch(line) for line in said), said
    # the sandbox kept running through it all, and every hop works again
    wait_for(lambda: _serves(client, sid), what=f"the stack to serve again after {name} restarted")
    client.delete(f"/v1/sandboxes/{sid}")


class _Flaky:
    """A stand-in stack of one real child that exits as soon as it starts, until told to
    stay up; what the supervisor says is kept."""

    def __init__(self) -> None:
        self.said: list[str] = []
        self.stay = False
        self.proc = self._spawn()

    def say(self, line: str) -> None:
        self.said.append(line)

    def _spawn(self) -> subprocess.Popen[bytes]:
        code = "import time; time.sleep(3600)" if self.stay else "raise SystemExit(3)"
        return subprocess.Popen([sys.executable, "-c", code])

    def supervised(self) -> list[str]:
        return ["flaky"]

    def pid(self, name: str) -> int | None:
        return self.proc.pid if self.proc.poll() is None else None

    def exit_code(self, name: str) -> int | None:
        return self.proc.poll()

    def respawn(self, name: str) -> None:
        self.proc = self._spawn()


def test_backoff_doubles_for_a_child_that_keeps_dying_and_resets_once_stable() -> None:
    flaky = _Flaky()
    now = [0.0]
    sup = Supervisor(flaky, backoff_initial_s=0.5, backoff_max_s=4, stable_after_s=60, clock=lambda: now[0])
    delays = []
    try:
        for _ in range(6):
            flaky.proc.wait()
            sup.poll_once()  # notices the death and schedules the restart
            delays.append(flaky.said[-1])
            sup.poll_once()  # not due yet: nothing happens
            assert flaky.said[-1] == delays[-1]
            now[0] += 4
            sup.poll_once()  # due: started again
            assert flaky.said[-1] == f"flaky restarted (pid {flaky.proc.pid})"
        assert delays == [
            f"flaky exited with 3; restarting in {d} s (restart {n})"
            for n, d in enumerate(["0.5", "1", "2", "4", "4", "4"], start=1)
        ]
        # once it runs for a minute, the next death starts over at the initial delay
        flaky.proc.wait()
        flaky.stay = True
        sup.poll_once()
        now[0] += 4
        sup.poll_once()
        assert flaky.pid("flaky") is not None
        now[0] += 60
        sup.poll_once()
        assert sup.restarts("flaky") == 0
        flaky.proc.kill()
        flaky.proc.wait()
        sup.poll_once()
        assert flaky.said[-1] == "flaky exited with -9; restarting in 0.5 s (restart 1)"
    finally:
        flaky.proc.kill()
        flaky.proc.wait()
