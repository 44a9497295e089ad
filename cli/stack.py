"""The whole stack on one machine: datastores, core, one hostd and the gateway.

``make up`` runs this in the foreground; the test suite runs the very same class with its own
ports, var dir and network names, so what the tests exercise is what a newcomer starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import asyncpg
import httpx
import msgspec

from cli.datastores import Postgres, Redis
from cli.serve import granian_argv
from cli.wallet_cmd import balance, fund
from contracts import snapshots
from core.cache import Cache
from core.db import sandboxes as sandboxes_db
from core.db.migrate import migrate
from core.services.auth import AuthService
from hosts.config import HostdConfig
from hosts.config import load_config as load_hostd_config
from hosts.runtime.factory import make_runtime
from hosts.runtime.oci.migrate import Outcome, Report, Target
from hosts.runtime.oci.migrate import migrate as migrate_namespace
from hosts.templates import TemplateStore

ADMIN_KEY_NAME = "make-up admin"

SERVICES = ("core", "hostd", "gateway", "ssh")
"""Started in this order; each is served by ``cli.serve.granian_argv`` but the SSH gateway,
which is ``python -m gateway.ssh`` (docs/ssh.md)."""


class StackConfig(msgspec.Struct, frozen=True, kw_only=True):
    var_dir: Path
    gateway_port: int = 3000
    core_port: int = 3100
    hostd_port: int = 3200
    ssh_port: int | None = None
    """The SSH gateway's port; None: a free one, picked when the ``Stack`` is made (``make up``
    passes ``DNAH_SSH_PORT`` or 2222). That pick comes from the kernel's ephemeral range, where
    a busy machine's outgoing connections may take it before the gateway binds it, so tests and
    benchmarks give one as they give the other ports (``tests.support.free_port``)."""
    bridge: str = "dnah0"
    subnet: str = "10.213.0.0/16"
    cgroup: str = "dnah"
    egress: str = "nat"
    """``DNAH_SANDBOX_EGRESS``: ``none`` for the test suite and benchmarks, whose sandboxes
    must not reach anything beyond the machine."""
    host_name: str = "local"
    template_cache: Path = Path("/var/cache/dnah/templates")
    database_url: str | None = None
    redis_url: str | None = None
    log_format: str = "json"
    extra_env: dict[str, str] = {}
    """More ``DNAH_*`` settings for every service."""
    payments: str | None = None
    """``devnet``: also run the local stand-in chain and put the gateway in payment mode."""
    runtime: str | None = None
    """hostd's ``DNAH_HOST_RUNTIME`` (``auto``, ``oci``, ``qemu``, ``cloud-hypervisor``); None
    leaves it to the environment, else ``auto``. ``dnah down`` stops the sandboxes through the
    same runtime, so a VM stack's VMs are stopped like containers."""
    devnet_port: int = 8545

    @property
    def devnet_url(self) -> str:
        return f"http://127.0.0.1:{self.devnet_port}"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def core_url(self) -> str:
        return f"http://127.0.0.1:{self.core_port}"


def wallet_address(private_key: str) -> str:
    from eth_account import Account

    return str(Account.from_key(private_key).address)


class StackError(RuntimeError):
    pass


_HELD_STATES = frozenset({"started", "stopped", "paused", "archived", "starting", "error"})
"""Rows of a sandbox whose disk a host holds (``error`` too: its reason is rewritten)."""


def migration_summary(report: Report) -> list[str]:
    """What ``make up`` says about a var/ left by the namespace runtime (nothing if none)."""
    if not report.outcomes:
        return []
    lines = ["var/ holds data of the namespace runtime (before runc):"]
    for o in report.migrated:
        lines.append(f"  brought over: {o.kind} {o.id} (its old upper layer is kept in {o.kept})")
    for o in report.not_migrated:
        lines.append(f"  NOT brought over: {o.kind} {o.id}: {o.reason}; old data kept in {o.kept}")
    if report.not_migrated:
        lines.append("  see docs/runtime.md, 'Migrating from the namespace runtime'")
    return lines


class Stack:
    """Start with ``start()``, stop with ``stop()``; every child gets its own log in var/log."""

    def __init__(self, config: StackConfig, *, say: Callable[[str], None] = print) -> None:
        self.config = config
        self.say = say
        var = config.var_dir.resolve()
        self.var = var
        self.postgres = None if config.database_url else Postgres(var)
        self.redis = None if config.redis_url else Redis(var)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.admin_token = ""
        self.ssh_port = config.ssh_port or _free_port()

    @property
    def database_url(self) -> str:
        return self.config.database_url or (self.postgres.url if self.postgres else "")

    @property
    def redis_url(self) -> str:
        return self.config.redis_url or (self.redis.url if self.redis else "")

    def _secret(self, name: str) -> str:
        """A random secret kept in ``var/<name>`` so restarts agree on it."""
        path = self.var / name
        if not path.exists():
            path.write_text(secrets.token_urlsafe(32))
            path.chmod(0o600)
        return path.read_text().strip()

    @property
    def edge_token(self) -> str:
        return self._secret("edge.token")

    @property
    def ssh_gateway_token(self) -> str:
        """Shared by the core and the SSH gateway: the environment's, else made once."""
        return os.environ.get("DNAH_SSH_GATEWAY_TOKEN") or self._secret("ssh-gateway.token")

    @property
    def snapshot_signing_key(self) -> str:
        """The core's snapshot signing key (``kid:seed``), made once per stack and kept in
        ``var/snapshot-signing.key`` so snapshots taken before a restart still verify."""
        path = self.var / "snapshot-signing.key"
        if not path.exists():
            path.write_text(snapshots.new_signing_key(f"{self.config.host_name}-1"))
            path.chmod(0o600)
        return path.read_text().strip()

    def env(self) -> dict[str, str]:
        c = self.config
        return {
            **os.environ,
            "DNAH_VAR_DIR": str(self.var),
            "DNAH_LOG_FORMAT": c.log_format,
            "DNAH_BOOTSTRAP_TOKEN": self._secret("bootstrap.token"),
            "DNAH_EDGE_TOKEN": self.edge_token,
            "DNAH_SNAPSHOT_SIGNING_KEY": self.snapshot_signing_key,
            "DNAH_WARM_POOL": "dnah-base=2",
            "DNAH_CORE_URL": c.core_url,
            "DNAH_CORE_PORT": str(c.core_port),
            "DNAH_DATABASE_URL": self.database_url,
            "DNAH_REDIS_URL": self.redis_url,
            "DNAH_HOSTD_PORT": str(c.hostd_port),
            "DNAH_HOST_NAME": c.host_name,
            "DNAH_TEMPLATE_CACHE": str(c.template_cache),
            "DNAH_HOST_BRIDGE": c.bridge,
            "DNAH_HOST_SUBNET": c.subnet,
            "DNAH_HOST_CGROUP": c.cgroup,
            "DNAH_SANDBOX_EGRESS": c.egress,
            "DNAH_GATEWAY_PORT": str(c.gateway_port),
            "DNAH_SSH_PORT": str(self.ssh_port),
            "DNAH_SSH_GATEWAY_TOKEN": self.ssh_gateway_token,
            **({"DNAH_HOST_RUNTIME": c.runtime} if c.runtime else {}),
            **self._payment_env(),
            **c.extra_env,
        }

    def hostd_config(self) -> HostdConfig:
        """hostd's configuration as this stack starts it, ``auto`` resolved on this machine:
        what ``dnah up`` prepares (the guest image of a VM runtime) before hostd runs."""
        self.var.mkdir(parents=True, exist_ok=True)  # env() keeps the stack's secrets there
        return load_hostd_config(self.env())

    def _payment_env(self) -> dict[str, str]:
        if self.config.payments != "devnet":
            return {}
        return {
            "DNAH_GATEWAY_MODE": "payment",
            "DNAH_PAYMENT_NETWORK": "devnet",
            "DNAH_PAYMENT_RPC_URL": self.config.devnet_url,
            "DNAH_PAYMENT_RECIPIENT": wallet_address(self.key("operator.key")),
            "DNAH_MPP_SECRET": self._secret("mpp.secret"),
            "DNAH_PUBLIC_URL": self.config.gateway_url,
        }

    def key(self, name: str) -> str:
        """A wallet private key kept in ``var/<name>`` (the operator's, the demo payer's)."""
        path = self.var / name
        if not path.exists():
            path.write_text("0x" + secrets.token_hex(32))
            path.chmod(0o600)
        return path.read_text().strip()

    def start(self) -> None:
        if os.geteuid() != 0:
            raise StackError("sandboxes need root (runc, the btrfs storage pool): run `make up` as root")
        for sub in ("run", "log"):
            (self.var / sub).mkdir(parents=True, exist_ok=True)
        if self.postgres:
            self.say("starting Postgres (var/pg, Unix socket only)")
            self.postgres.start()
        if self.redis:
            self.say("starting Redis (Unix socket only)")
            self.redis.start()
        self.admin_token = asyncio.run(self._prepare_database())
        token_file = self.var / "admin.token"
        token_file.write_text(self.admin_token + "\n")
        token_file.chmod(0o600)
        if self.config.payments == "devnet":
            self.say("starting the devnet (a local stand-in for the Tempo chain)")
            self._spawn("devnet")
            self._wait_devnet()
            demo = wallet_address(self.key("demo.key"))
            if balance(self.config.devnet_url, demo) < 1_000_000:  # under $1: top up from the faucet
                fund(self.config.devnet_url, demo)
        hostd = self.hostd_config()
        self.say(f"sandboxes run on the {hostd.runtime} runtime ({hostd.runtime_reason})")
        self._migrate_namespace_runtime()
        since = asyncio.run(self._db_now())
        for name in SERVICES:
            self._spawn(name)
        # ready once this hostd has registered: the host row of a previous run may still look
        # fresh, and only the registration settles the rows of the sandboxes it holds
        self._wait_ready(registered_since=since)

    def _migrate_namespace_runtime(self) -> None:
        """Bring over what the namespace runtime left in var/ before hostd starts (hostd does
        it too, for a hostd started on its own; here the outcome can be printed), and make the
        rows of sandboxes that could not be brought over say so before the core serves them."""
        config = load_hostd_config(self.env())
        if config.runtime != "oci":
            return
        templates = TemplateStore(config.template_cache, config.build_script)
        report = migrate_namespace(Target.from_hostd(config, templates))
        for line in migration_summary(report):
            self.say(line)
        lost = {o.id: o for o in report.not_migrated if o.kind == "sandbox"}
        if lost:
            asyncio.run(self._mark_not_migrated(lost))

    async def _mark_not_migrated(self, lost: dict[str, Outcome]) -> None:
        conn = await asyncpg.connect(self.database_url)
        try:
            for sandbox_id, outcome in lost.items():
                reason = f"not brought over from the namespace runtime: {outcome.reason}"
                reason += f"; old data in {outcome.kept}"
                await sandboxes_db.transition(
                    conn, sandbox_id, from_states=_HELD_STATES, to="error", error_reason=reason
                )
        finally:
            await conn.close()

    async def _prepare_database(self) -> str:
        conn = await asyncpg.connect(self.database_url)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        pool = await asyncpg.create_pool(self.database_url, min_size=1, max_size=2)
        cache = Cache(self.redis_url)
        try:
            minted = await AuthService(pool, cache).rotate_admin(ADMIN_KEY_NAME)
        finally:
            await cache.close()
            await pool.close()
        return minted.token

    def _argv(self, name: str) -> list[str]:
        if name == "devnet":
            (self.var / "devnet").mkdir(exist_ok=True)
            return [
                sys.executable,
                "-m",
                "devnet",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.config.devnet_port),
                "--state",
                str(self.var / "devnet" / "state.sqlite"),
            ]
        if name == "ssh":
            return [sys.executable, "-m", "gateway.ssh"]
        port = getattr(self.config, f"{name}_port")
        return granian_argv(name, host="127.0.0.1", port=port, env=self.env())

    def _spawn(self, name: str) -> None:
        log = (self.var / "log" / f"{name}.log").open("ab")
        argv = self._argv(name)
        self.procs[name] = subprocess.Popen(
            argv, env=self.env(), stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )

    def supervised(self) -> list[str]:
        """The children this stack runs, in start order (``cli.supervisor`` watches them)."""
        names = [name for name, runs in (("postgres", self.postgres), ("redis", self.redis)) if runs]
        if self.config.payments == "devnet":
            names.append("devnet")
        return [*names, *SERVICES]

    def pid(self, name: str) -> int | None:
        """The pid of child ``name`` (core, hostd, gateway, devnet, postgres, redis) while it
        runs, else None: what a supervisor watches and a crash test kills."""
        if name in ("postgres", "redis"):
            store = self.postgres if name == "postgres" else self.redis
            return store.pid() if store is not None else None
        proc = self.procs.get(name)
        return proc.pid if proc is not None and proc.poll() is None else None

    def exit_code(self, name: str) -> int | None:
        """How child ``name`` last exited (negative: the signal), when known."""
        if name in ("postgres", "redis"):
            store = self.postgres if name == "postgres" else self.redis
            return store.returncode if store is not None else None
        proc = self.procs.get(name)
        return proc.poll() if proc is not None else None

    def respawn(self, name: str) -> None:
        """Start child ``name`` again after it died, without waiting for the stack to be ready
        (the supervisor's job; ``restart`` is the blocking one tests use)."""
        if name in ("postgres", "redis"):
            store = self.postgres if name == "postgres" else self.redis
            if store is not None:
                store.start()
            return
        self._terminate(name)
        self._spawn(name)

    def restart(self, name: str, *, hard: bool = False) -> None:
        """Restart one service (SIGKILL when ``hard``, to test crash recovery) and wait until
        the stack is ready again."""
        since = asyncio.run(self._db_now())
        self._terminate(name, signal.SIGKILL if hard else signal.SIGTERM)
        self._spawn(name)
        self._wait_ready(registered_since=since if name == "hostd" else None)

    def stop_service(self, name: str) -> None:
        """Stop one service and leave it stopped (``restart`` brings it back)."""
        self._terminate(name)

    def _terminate(self, name: str, sig: signal.Signals = signal.SIGTERM) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # Whatever the main process left in its group goes too, and is waited for: a Granian
        # worker outlives a SIGKILLed main and would go on serving (a hostd worker finishing a
        # create while the next hostd recovers the same sandboxes) and holding the port.
        # Sandboxes are not in hostd's group: ``runc run`` has a session of its own.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        _wait_group_gone(proc.pid)

    def _wait_ready(self, timeout_s: float = 60.0, registered_since: datetime | None = None) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise StackError(f"{name} exited with {proc.returncode}; see {self.var}/log/{name}.log")
            if (
                self._gateway_healthy()
                and self._ssh_listening()
                and asyncio.run(self._host_registered(registered_since))
            ):
                return
            time.sleep(0.1)
        raise StackError(f"the stack did not become ready in {timeout_s:.0f} s; see {self.var}/log/")

    def _wait_devnet(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            proc = self.procs["devnet"]
            if proc.poll() is not None:
                raise StackError(f"the devnet exited with {proc.returncode}; see {self.var}/log/devnet.log")
            try:
                httpx.post(
                    self.config.devnet_url,
                    json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"},
                    timeout=1,
                )
                return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise StackError("the devnet did not start")

    def _gateway_healthy(self) -> bool:
        try:
            return httpx.get(self.config.gateway_url + "/health", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def _ssh_listening(self) -> bool:
        """The SSH gateway answers with its banner."""
        try:
            with socket.create_connection(("127.0.0.1", self.ssh_port), timeout=1.0) as conn:
                return conn.recv(4).startswith(b"SSH-")
        except OSError:
            return False

    async def _host_registered(self, since: datetime | None) -> bool:
        """Our host is registered (after ``since``, when given) and heartbeating."""
        conn = await asyncpg.connect(self.database_url)
        try:
            return bool(
                await conn.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM hosts WHERE name = $1"
                    " AND last_heartbeat_at > now() - interval '30 seconds'"
                    " AND ($2::timestamptz IS NULL OR registered_at > $2))",
                    self.config.host_name,
                    since,
                )
            )
        finally:
            await conn.close()

    async def _db_now(self) -> datetime:
        conn = await asyncpg.connect(self.database_url)
        try:
            return await conn.fetchval("SELECT now()")
        finally:
            await conn.close()

    def stop(self) -> None:
        """Stop the services (gateway first, so no new work arrives), then the datastores."""
        for name in ("ssh", "gateway", "core", "hostd", "devnet"):
            self._terminate(name)
        asyncio.run(self._settle_sandboxes(destroy=False))
        asyncio.run(self._mark_host_offline())
        if self.redis:
            self.redis.stop()
        if self.postgres:
            self.postgres.stop()

    async def _mark_host_offline(self) -> None:
        """Tell the database that our host is down: its sandboxes were just stopped behind the
        core's back, so nothing may be placed on or claimed from it until the next hostd
        registers (and reconciles its rows). Nothing to do when the database never started."""
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            conn = await asyncpg.connect(self.database_url, timeout=5)
            try:
                name = self.config.host_name
                await conn.execute("UPDATE hosts SET state = 'offline' WHERE name = $1", name)
            finally:
                await conn.close()

    async def _settle_sandboxes(self, *, destroy: bool) -> None:
        """hostd leaves sandboxes running when it exits (a restarted hostd adopts them). When
        the whole stack stops, stop them too — disks kept, so the next ``up`` boots them again
        — or, for a throwaway stack, destroy them and the host's bridge, nft table and cgroups."""
        runtime = make_runtime(load_hostd_config(self.env()))
        for info in await runtime.recover():
            if destroy:
                await runtime.destroy(info.id)
            elif info.state != "stopped":
                await runtime.stop(info.id)
        if destroy:
            await runtime.remove_host_setup()

    def remove(self) -> None:
        """Stop, then delete all state (throwaway stacks: tests, benchmarks)."""
        self.stop()
        asyncio.run(self._settle_sandboxes(destroy=True))
        if self.postgres:
            self.postgres.remove()
        shutil.rmtree(self.var, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_group_gone(pgid: int, timeout_s: float = 10.0) -> None:
    """Wait until no live process is left in process group ``pgid`` (zombies do not count:
    nobody may ever reap an orphan here, and a zombie holds no port)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        members = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid and fields[0] != "Z":
                    members.append(stat)
        if not members:
            return
        time.sleep(0.05)
