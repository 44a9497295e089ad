"""Private Postgres and Redis under ``var/``, for machines where none is configured.

Both listen on Unix sockets only, never on TCP, so nothing outside this machine's filesystem
namespace — and so no sandbox — can connect to them.

Postgres refuses to run as root, and its ``postgres`` user cannot enter a checkout under a
private directory (``/root``, or a ``mktemp -d``). So its data and socket live in
``/var/lib/dnah/pg-<hash of the var dir>``, one per var dir, and ``var/pg`` is a symlink
there: the state is still found from ``var/``, and two checkouts never share a cluster.

Both run as children of this process (Postgres through ``runuser``), never daemonized: a
child that dies is reaped, so its pid is free and its lock file stale, and ``cli.supervisor``
can start it again. (A daemonized postmaster is re-parented to PID 1, which in a container may
never reap it: the zombie would keep its lock file "in use" and block every restart.)
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

PG_USER = "postgres"
DB_NAME = "dnah"
PG_HOME = Path("/var/lib/dnah")


class DatastoreError(RuntimeError):
    pass


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise DatastoreError(f"PostgreSQL's {name} not found; run `make install` (installs postgresql)")
    return found[-1]


def _postgres_argv(argv: list[str]) -> list[str]:
    """Postgres refuses to run as root; run its tools as the system ``postgres`` user."""
    return ["runuser", "-u", PG_USER, "--", *argv] if os.geteuid() == 0 else argv


def _as_postgres(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_postgres_argv(argv), check=False, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]


def live_pid(pid: int) -> bool:
    """``pid`` is a process that has not exited (a zombie has: it only waits to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Postgres:
    def __init__(self, var_dir: Path) -> None:
        self.link = var_dir / "pg"
        self.root = PG_HOME / f"pg-{hashlib.sha256(str(var_dir.resolve()).encode()).hexdigest()[:12]}"
        self.data = self.root / "data"
        self.sockets = self.root / "run"
        self.log = self.root / "postgres.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://{PG_USER}@/{DB_NAME}?host={self.sockets}"

    def _chown(self, *paths: Path) -> None:
        if os.geteuid() == 0:
            for path in paths:
                shutil.chown(path, PG_USER, PG_USER)

    def start(self) -> None:
        for path in (self.root, self.sockets):
            path.mkdir(parents=True, exist_ok=True)
        self._chown(self.root, self.sockets)
        if not self.link.is_symlink():
            self.link.symlink_to(self.root)
        if not (self.data / "PG_VERSION").exists():
            out = _as_postgres(
                [_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", PG_USER, "-E", "UTF8"]
            )
            if out.returncode != 0:
                raise DatastoreError(f"initdb failed: {out.stderr.strip()}")
        if self.pid() is not None:
            return  # left running by an earlier run that did not stop cleanly: reuse it
        # A postmaster that died (SIGKILL) leaves its lock file. Postgres replaces a stale one
        # itself, unless its pid is a zombie nobody reaps (a daemonized postmaster of an
        # earlier run): remove it, the shared-memory check still guards against live backends.
        (self.data / "postmaster.pid").unlink(missing_ok=True)
        argv = [
            _pg_bin("postgres"),
            "-D",
            str(self.data),
            "-c",
            "listen_addresses=",
            "-k",
            str(self.sockets),
            "-c",
            "fsync=on",
            "-c",
            "max_connections=200",
        ]
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(
                _postgres_argv(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        deadline = time.monotonic() + 60
        ready = [_pg_bin("pg_isready"), "-q", "-h", str(self.sockets), "-U", PG_USER, "-d", "postgres"]
        while _as_postgres(ready).returncode != 0:
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise DatastoreError(f"postgres did not start (see {self.log})")
            time.sleep(0.05)
        self._ensure_database()

    def pid(self) -> int | None:
        """The postmaster's pid while it runs (ours, or one an earlier run left), else None."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if live_pid(pid) else None

    @property
    def returncode(self) -> int | None:
        """How the postmaster we started last exited (None: running, or not started here)."""
        return self._proc.poll() if self._proc is not None else None

    def _ensure_database(self) -> None:
        psql = [_pg_bin("psql"), "-h", str(self.sockets), "-U", PG_USER, "-d", "postgres", "-tAc"]
        exists = _as_postgres([*psql, f"SELECT 1 FROM pg_database WHERE datname = '{DB_NAME}'"])
        if exists.stdout.strip() != "1":
            created = _as_postgres([*psql, f"CREATE DATABASE {DB_NAME}"])
            if created.returncode != 0:
                raise DatastoreError(f"could not create database: {created.stderr.strip()}")

    def stop(self) -> None:
        if (self.data / "PG_VERSION").exists() and self.pid() is not None:
            _as_postgres([_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])
        if self._proc is not None:
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def remove(self) -> None:
        """Delete the cluster for good (throwaway stacks: tests, benchmarks)."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
        self.link.unlink(missing_ok=True)


class Redis:
    def __init__(self, var_dir: Path) -> None:
        self.dir = var_dir / "redis"
        self.socket = var_dir / "run" / "redis.sock"
        self.log = var_dir / "log" / "redis.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise DatastoreError("redis-server not found; run `make install` (installs redis-server)")
        for path in (self.dir, self.socket.parent, self.log.parent):
            path.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        self._proc = subprocess.Popen(
            [
                binary,
                "--port",
                "0",
                "--unixsocket",
                str(self.socket),
                "--unixsocketperm",
                "700",
                "--dir",
                str(self.dir),
                "--save",
                "",
                "--appendonly",
                "no",
                "--logfile",
                str(self.log),
            ],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while not self.socket.exists():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise DatastoreError(f"redis did not start (see {self.log})")
            time.sleep(0.02)

    def pid(self) -> int | None:
        """The server's pid while it runs, else None."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
