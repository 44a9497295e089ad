"""Template services: long-running processes a template declares, started by the agent at
sandbox start and started again when they die (stdlib only, like the rest of the agent).

A template declares them in ``/etc/dnah/services.json`` (the code-interpreter template's
server on port 49999 is one)::

    {"services": [{"name": "code-interpreter",
                   "argv": ["/usr/bin/python3", "-m", "guest.code_interpreter"],
                   "user": "user", "cwd": "/home/user", "env": {"PYTHONPATH": "/opt/dnah"},
                   "restart": "always", "ready_port": 49999}]}

- ``name`` (letters, digits, ``.``, ``_``, ``-``) and ``argv`` are required;
- ``user``: run as that account (through ``sudo -n``, which every template's agent account
  may use); default: the agent's own account;
- ``cwd``: default the user's home; ``env``: added to the sandbox's environment (the one
  commands get, with the user's HOME, USER and LOGNAME);
- ``restart``: ``always`` (default), ``on-failure`` (exit status not 0) or ``never``. A
  restart waits 1 s, doubling up to 30 s while the service keeps dying within a minute of
  its start.
- ``ready_port``: the TCP port the service listens on once it can serve. The agent does not
  use it; hostd does (``hosts/service_ready.py``): a create or start of the sandbox returns
  only once that port accepts connections (at most 20 s).

Each service is a process group of its own; its output goes to
``/tmp/dnah-services/<name>.log`` (cut to nothing at a start once past 1 MiB). The agent
stops every service (SIGTERM to the group, SIGKILL 5 s later) when it stops. A file that is
missing means no services; one that does not parse is reported on the agent's stderr and
ignored, so a broken declaration never keeps a sandbox from booting.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from guest import accounts

SERVICES_FILE = "/etc/dnah/services.json"
LOG_DIR = "/tmp/dnah-services"
LOG_MAX = 1 << 20
RESTARTS = ("always", "on-failure", "never")
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
STABLE_S = 60.0
"""A service that ran this long before dying is restarted after the first delay again."""
STOP_GRACE_S = 5.0
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


@dataclass(frozen=True)
class Service:
    """One declared service."""

    name: str
    argv: list[str]
    user: str | None = None
    cwd: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    restart: str = "always"
    ready_port: int | None = None


class ServiceError(ValueError):
    """The declaration is not valid."""


def parse(raw: bytes) -> list[Service]:
    """The services of a ``services.json`` document.

    Raises:
        ServiceError: it is not the documented shape.
    """
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise ServiceError(f"not JSON: {exc}") from exc
    items = doc.get("services") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise ServiceError('expected {"services": [...]}')
    services = [_service(item) for item in items]
    names = [s.name for s in services]
    if len(set(names)) != len(names):
        raise ServiceError("service names must be unique")
    return services


def _service(item: object) -> Service:
    if not isinstance(item, dict):
        raise ServiceError("a service must be an object")
    name, argv = item.get("name"), item.get("argv")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ServiceError(f"bad service name {name!r}")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) and a for a in argv):
        raise ServiceError(f"{name}: argv must be a non-empty list of strings")
    user, cwd = item.get("user"), item.get("cwd")
    for key, value in (("user", user), ("cwd", cwd)):
        if value is not None and not (isinstance(value, str) and value):
            raise ServiceError(f"{name}: {key} must be a string")
    env = item.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise ServiceError(f"{name}: env must map names to strings")
    restart = item.get("restart", "always")
    if restart not in RESTARTS:
        raise ServiceError(f"{name}: restart must be one of {', '.join(RESTARTS)}")
    ready_port = item.get("ready_port")
    if ready_port is not None and not (isinstance(ready_port, int) and 1 <= ready_port <= 65535):
        raise ServiceError(f"{name}: ready_port must be a port number")
    return Service(
        name=name, argv=list(argv), user=user, cwd=cwd, env=dict(env), restart=restart, ready_port=ready_port
    )


class Supervisor:
    """Keeps one service running according to its restart policy."""

    def __init__(self, service: Service, base_env: dict[str, str]) -> None:
        self.service = service
        self._base_env = base_env
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.starts = 0

    def run(self) -> None:
        """Start the service and restart it as its policy says, until ``stop``."""
        delay = BACKOFF_FIRST_S
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                code = self._run_once()
            except OSError as exc:
                print(f"service {self.service.name}: cannot start: {exc}", file=sys.stderr, flush=True)
                code = 127
            if self._stopping.is_set() or not _restarts(self.service.restart, code):
                return
            delay = BACKOFF_FIRST_S if time.monotonic() - started >= STABLE_S else delay
            print(
                f"service {self.service.name} exited ({code}); restarting in {delay:.0f} s",
                file=sys.stderr,
                flush=True,
            )
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, BACKOFF_MAX_S)

    def _run_once(self) -> int:
        argv, env, cwd = command(self.service, self._base_env)
        os.makedirs(LOG_DIR, exist_ok=True)
        log_path = os.path.join(LOG_DIR, f"{self.service.name}.log")
        with _open_log(log_path) as log:
            with self._lock:
                if self._stopping.is_set():
                    return 0
                self._proc = subprocess.Popen(
                    argv,
                    env=env,
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                self.starts += 1
            return self._proc.wait()

    def stop(self) -> None:
        """Stop the service: SIGTERM to its process group, SIGKILL after the grace period."""
        with self._lock:
            self._stopping.set()
            proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()


def command(service: Service, base_env: dict[str, str]) -> tuple[list[str], dict[str, str], str]:
    """(argv, environment, cwd) for ``Popen`` that run ``service``: as another account than
    the agent's through ``guest/accounts.py`` (sudo, then the declared environment)."""
    if service.user is None:
        home = base_env.get("HOME", "/")
        env = base_env | service.env
        return service.argv, env, service.cwd or home
    account = accounts.lookup(service.user)
    env = base_env | account.env() | service.env
    argv, cwd = accounts.command(account, service.argv, env, service.cwd or account.home)
    return argv, env if account.own else base_env, cwd


def _restarts(policy: str, code: int) -> bool:
    return policy == "always" or (policy == "on-failure" and code != 0)


def _open_log(path: str) -> io.BufferedWriter:
    try:
        if os.path.getsize(path) > LOG_MAX:
            return open(path, "wb")
    except OSError:
        pass
    return open(path, "ab")


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signum)


_supervisors: list[Supervisor] = []
_started = threading.Lock()


def start(base_env: dict[str, str], path: str | None = None) -> list[Supervisor]:
    """Start the services ``path`` declares (default ``$DNAH_SERVICES_FILE``, else
    ``SERVICES_FILE``), once per agent: a second call does nothing."""
    if not _started.acquire(blocking=False):
        return []
    path = path or os.environ.get("DNAH_SERVICES_FILE", SERVICES_FILE)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return []
    except OSError as exc:
        print(f"services: cannot read {path}: {exc}", file=sys.stderr, flush=True)
        return []
    try:
        services = parse(raw)
    except ServiceError as exc:
        print(f"services: {path} ignored: {exc}", file=sys.stderr, flush=True)
        return []
    for service in services:
        supervisor = Supervisor(service, base_env)
        _supervisors.append(supervisor)
        threading.Thread(target=supervisor.run, name=f"service-{service.name}", daemon=True).start()
    return list(_supervisors)


def close_all() -> None:
    """Stop every service (the agent is stopping)."""
    for supervisor in _supervisors:
        supervisor.stop()
