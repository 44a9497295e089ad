"""Starting and stopping real Granian servers for the gateway suite, the way ``cli.stack``
runs them, each on a free port with its output in a log file."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """One Granian process (and its worker) started by a test."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def pids(self) -> list[int]:
        """The Granian main process and all its descendants (the worker does the serving)."""
        found, queue = [], [self.proc.pid]
        while queue:
            pid = queue.pop()
            found.append(pid)
            for task in Path(f"/proc/{pid}/task").glob("*"):
                children = (task / "children").read_text().split()
                queue.extend(int(child) for child in children)
        return found

    def log_entry(self, request_id: str, timeout_s: float = 5.0) -> dict[str, Any]:
        """The JSON log line for one request (written once its response is complete)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.log.read_text().splitlines():
                if request_id in line and line.startswith("{"):
                    entry: dict[str, Any] = json.loads(line)
                    if entry.get("request_id") == request_id:
                        return entry
            time.sleep(0.02)
        raise AssertionError(f"no log line for {request_id} in {self.log}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def granian(
    target: str, env: dict[str, str], log: Path, port: int | None = None, *, websockets: bool = False
) -> subprocess.Popen[bytes]:
    """Start ``target`` the way ``cli.stack`` does; the caller waits for it."""
    argv = [
        sys.executable, "-m", "granian", "--interface", "asgi", "--factory", "--host", "127.0.0.1",
        "--port", str(port or free_port()), "--workers", "1", "--loop", "uvloop",
        "--ws" if websockets else "--no-ws", "--log-level", "warning", target,
    ]  # fmt: skip
    with log.open("ab") as out:
        return subprocess.Popen(
            argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )


def start(
    target: str, env: dict[str, str], log: Path, *, websockets: bool = False, timeout_s: float = 30.0
) -> Server:
    """Start a server and return once it answers HTTP (any status)."""
    port = free_port()
    proc = granian(target, env, log, port, websockets=websockets)
    server = Server(url=f"http://127.0.0.1:{port}", proc=proc, log=log)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{target} exited with {proc.returncode}:\n{log.read_text()}")
        try:
            httpx.get(server.url + "/health", timeout=1.0)
            return server
        except httpx.TransportError:
            time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"{target} did not answer within {timeout_s} s:\n{log.read_text()}")


def gateway_env(core_url: str, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DNAH_")}
    env.update({"DNAH_CORE_URL": core_url, "DNAH_LOG_FORMAT": "json", **overrides})
    return env


StartGateway = Callable[..., Server]
"""The ``start_gateway`` fixture: ``start_gateway(core_url, websockets=False, **env) -> Server``."""
