"""Helpers for the hostd suites: a recording stand-in for the core and a real hostd process.

``RecordingCore`` is a real HTTP server (stdlib ``http.server`` on a thread) implementing the
two core routes hostd calls, decoding bodies with the contract Structs exactly as the core
does. ``HostdProcess`` runs hostd the way ``make up`` does, under granian on a free port.

Kernel names (bridge, subnet, cgroup) are derived from the xdist worker and from the suite,
so the controller suite, the app suite, the other workers and a live ``make up`` never share
one.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TypeVar

import httpx
import msgspec

from contracts.host import REGISTER_PATH, Heartbeat, HostRegistered, HostRegistration
from tests.support import worker_index

REPO = Path(__file__).resolve().parent.parent.parent

BOOTSTRAP_TOKEN = "test-bootstrap-token"

_T = TypeVar("_T")
_GRANIAN_ARGS = [
    "--interface",
    "asgi",
    "--factory",
    "--workers",
    "1",
    "--loop",
    "uvloop",
    "--host",
    "127.0.0.1",
]
"""How ``make up`` serves hostd (see ``hosts/app.py``), bound to loopback."""
_HEARTBEAT_RE = re.compile(r"/internal/hosts/([^/]+)/heartbeat")


class KernelNames(msgspec.Struct, frozen=True):
    bridge: str
    subnet: ipaddress.IPv4Network
    cgroup: str


def kernel_names(suite: int) -> KernelNames:
    """Names for suite ``suite`` (0 controller, 1 app, 2 lifecycle) on this xdist worker."""
    n = worker_index()
    letter = "cal"[suite]
    return KernelNames(
        bridge=f"dnahh{n}{letter}",
        subnet=ipaddress.IPv4Network(f"10.215.{3 * n + suite}.0/24"),
        cgroup=f"dnahh{n}{letter}",
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(predicate: Callable[[], _T | None], *, timeout: float, what: str) -> _T:
    """Poll ``predicate`` every 20 ms until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


class RecordingCore:
    """The core's ``/internal/hosts`` routes, recording what hostd sends.

    Like the core, it wants the bootstrap token (in the registration body, and as the bearer
    token of heartbeats) and answers a registration with a fresh host id. A heartbeat for an
    id in ``refuse`` gets that status instead (404: the core forgot the host; 401: the core
    no longer accepts its token).

    It listens on ``port`` from ``start()`` to ``close()`` only, so a test can let hostd find
    no core at first.
    """

    def __init__(self, port: int, *, heartbeat_interval_s: float = 0.2) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.heartbeat_interval_s = heartbeat_interval_s
        self.registrations: list[HostRegistration] = []
        self.heartbeats: list[tuple[str, Heartbeat]] = []
        self.request_ids: list[str] = []
        self.refuse: dict[str, int] = {}
        self._port = port
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()

    def heartbeats_for(self, host_id: str) -> list[Heartbeat]:
        with self._lock:
            return [beat for hid, beat in self.heartbeats if hid == host_id]

    def _record(self, path: str, body: bytes, request_id: str, authorization: str) -> tuple[int, bytes]:
        with self._lock:
            self.request_ids.append(request_id)
            if path == REGISTER_PATH:
                registration = msgspec.json.decode(body, type=HostRegistration)
                if registration.bootstrap_token != BOOTSTRAP_TOKEN:
                    return 401, b'{"code":"unauthorized","message":"invalid bootstrap token"}'
                self.registrations.append(registration)
                answer = HostRegistered(
                    host_id=f"host-{len(self.registrations)}", heartbeat_interval_s=self.heartbeat_interval_s
                )
                return 200, msgspec.json.encode(answer)
            match = _HEARTBEAT_RE.fullmatch(path)
            if match is None:
                return 404, b'{"code":"not_found","message":"no such route"}'
            if authorization != f"Bearer {BOOTSTRAP_TOKEN}":
                return 401, b'{"code":"unauthorized","message":"invalid bootstrap token"}'
            if match[1] in self.refuse:
                return self.refuse[match[1]], b'{"code":"refused","message":"refused by the test"}'
            self.heartbeats.append((match[1], msgspec.json.decode(body, type=Heartbeat)))
            return 204, b""

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        core = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                try:
                    status, answer = core._record(
                        self.path,
                        body,
                        self.headers.get("x-request-id", ""),
                        self.headers.get("authorization", ""),
                    )
                except msgspec.ValidationError as exc:
                    status, answer = 400, msgspec.json.encode({"code": "bad_request", "message": str(exc)})
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler


class HostdProcess:
    """hostd under granian, exactly as ``make up`` starts it, with its log in ``log_path``."""

    def __init__(self, env: dict[str, str], port: int, log_path: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._env = env
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "granian",
                    *_GRANIAN_ARGS,
                    "--port",
                    str(self.port),
                    "hosts.app:create_app",
                ],
                cwd=REPO,
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        def answering() -> bool:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise AssertionError(f"hostd exited with {self._proc.returncode}:\n{self.log()}")
            try:
                httpx.get(f"{self.url}/health", timeout=1)
            except httpx.TransportError:
                return False
            return True

        wait_for(answering, timeout=60, what="hostd to listen")

    def stop(self) -> int:
        """SIGTERM hostd and wait for a clean exit; return its exit code."""
        assert self._proc is not None
        self._proc.terminate()
        try:
            return self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
            raise

    def kill(self) -> None:
        """SIGKILL hostd, as a crash would: no shutdown code runs. granian's worker (the
        process running the app) and its helpers share granian's session and die with it;
        sandboxes run in sessions of their own and are left alone, as in a real crash."""
        assert self._proc is not None
        session = os.getsid(self._proc.pid)
        doomed = [pid for pid in _descendants(self._proc.pid) if _session(pid) == session]
        for pid in (self._proc.pid, *doomed):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, pending = [], [root]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def _session(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except ProcessLookupError:
        return None


def hostd_env(
    *, core_url: str, port: int, var_dir: Path, template_cache: Path, names: KernelNames, **extra: str
) -> dict[str, str]:
    """The environment ``make up`` gives hostd, pointed at test resources."""
    return {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "DNAH_BOOTSTRAP_TOKEN": BOOTSTRAP_TOKEN,
        "DNAH_CORE_URL": core_url,
        "DNAH_HOSTD_PORT": str(port),
        "DNAH_HOST_NAME": f"hostd-test-{worker_index()}",
        "DNAH_VAR_DIR": str(var_dir),
        "DNAH_TEMPLATE_CACHE": str(template_cache),
        "DNAH_HOST_BRIDGE": names.bridge,
        "DNAH_HOST_SUBNET": str(names.subnet),
        "DNAH_HOST_CGROUP": names.cgroup,
        "DNAH_LOG_FORMAT": "json",
        "DNAH_SANDBOX_EGRESS": "none",  # nothing a test runs leaves the machine
        **extra,
    }
