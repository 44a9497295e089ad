"""The core's settings: one frozen object, read from the environment once at start-up.

No other module in ``core/`` reads ``os.environ``; the object is passed down explicitly.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

import msgspec

from contracts import snapshots
from guard import ConfigError as GuardConfigError
from guard import GuardConfig, load_guard_config


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the variable."""


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """Bounds and defaults for a sandbox's resources, enforced at create."""

    default_cpu: int = 1
    max_cpu: int = 4
    default_ram_mb: int = 1024
    min_ram_mb: int = 128
    max_ram_mb: int = 8192
    default_disk_gb: int = 3
    max_disk_gb: int = 50


class SchedulerConfig(msgspec.Struct, frozen=True, kw_only=True):
    """How far a host's CPU and memory may be overcommitted. Agent sandboxes idle most of
    the time, so CPU is shared generously; memory only modestly; disk never."""

    cpu_overcommit: float = 16.0
    ram_overcommit: float = 2.0
    host_stale_after_s: float = 15.0


class WebhookConfig(msgspec.Struct, frozen=True, kw_only=True):
    """How the webhook dispatcher sends (docs/webhooks.md). Attempt n waits
    ``min(backoff_s * 2**(n-1), backoff_max_s)`` (plus up to 10 % jitter) after a failure;
    after ``max_attempts`` the delivery is dead."""

    poll_interval_s: float = 1.0
    timeout_s: float = 5.0
    max_attempts: int = 10
    backoff_s: float = 1.0
    backoff_max_s: float = 300.0
    retention_days: float = 7.0
    """Delivered and dead deliveries older than this are deleted (``DNAH_WEBHOOK_RETENTION_DAYS``)."""
    allow_private: bool = False
    """Deliver to loopback, private and link-local addresses too (``DNAH_WEBHOOK_ALLOW_PRIVATE=1``:
    development and tests). Off, a webhook cannot be aimed at the core's own network — its
    database, hostd, a cloud metadata service."""


class CoreConfig(msgspec.Struct, frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 3100
    database_url: str
    redis_url: str
    bootstrap_token: str
    edge_token: str | None = None
    """Shared with the gateway: lets it act for payers (``contracts.control``). None disables."""
    public_url: str | None = None
    preview_domain: str | None = None
    """``DNAH_PREVIEW_DOMAIN`` (e.g. ``preview.example.com``, with ``:port`` when not the
    default): preview URLs are ``{scheme}://{port}-{sandbox id}.{domain}/``; unset, they are
    ``{public URL}/preview/{sandbox id}/{port}/`` (docs/network.md)."""
    preview_secret: bytes = b""
    """Signs preview tokens (``DNAH_PREVIEW_SECRET``, at least 32 characters; when unset, made
    once and kept in ``$DNAH_VAR_DIR/preview.secret``, else random per process, which a
    restart or a second core does not share). Changing it ends every signed preview URL."""
    default_template: str = "dnah-base"
    heartbeat_interval_s: float = 5.0
    reconcile_interval_s: float = 10.0
    payment_settle_after_s: float = 600.0
    """A payment still without an outcome report this long after it was recorded is settled
    by the core from its own record of the request (``DNAH_PAYMENT_SETTLE_S``)."""
    host_timeout_s: float = 30.0
    """How long the core waits for hostd's answer to a call (``DNAH_HOST_TIMEOUT_S``), unless
    the call has a limit of its own (disk copies, commands with a timeout, VM boots below)."""
    vm_host_timeout_s: float = 110.0
    """How long the core waits for hostd to create, start, stop, pause, resume or resize a
    sandbox on a host whose runtime runs microVMs (``DNAH_VM_HOST_TIMEOUT_S``): a boot there is
    seconds to tens of seconds. Above hostd's own boot limit (``DNAH_VM_BOOT_TIMEOUT``, 90 s),
    so hostd's failure, not the core's guess, reaches the caller; below the sweepers' 120 s
    (``DNAH_STALE_OPERATION_S`` and the limit on ``creating``), which would otherwise settle
    an operation still in flight (docs/runtimes.md, "Timeouts on VM hosts")."""
    snapshot_signing_key: str | None = None
    """``kid:<base64 seed>`` (``DNAH_SNAPSHOT_SIGNING_KEY``): snapshots are signed with it.
    Without one, snapshots are refused."""
    snapshot_verify_keys: str = ""
    """More ``kid:<base64 public key>`` (``DNAH_SNAPSHOT_VERIFY_KEYS``, comma-separated) still
    accepted on restore and clone: the previous keys, during a rotation."""
    warm_pool: dict[str, int] = {}
    """Pre-started sandboxes to keep per host, by template (``DNAH_WARM_POOL``:
    ``template=count,…``); creates of the default size claim one instead of booting."""
    stale_operation_s: float = 120.0
    """A sandbox left this long in a transitional state (``DNAH_STALE_OPERATION_S``) was
    abandoned by a dead core and is settled from its host; operations that copy a disk
    (archive, unarchive, restore) get ``stale_long_operation_s`` (``DNAH_STALE_LONG_OPERATION_S``)."""
    stale_long_operation_s: float = 720.0
    reaper_interval_s: float = 30.0
    """How often the reaper applies the automatic timers (``DNAH_REAPER_S``)."""
    max_upload_bytes: int = 256 * 1024 * 1024
    """Largest file one upload may carry (``DNAH_MAX_UPLOAD_MB``); bigger ones get 413 and
    nothing of them is stored."""
    ssh_gateway_token: str | None = None
    """Shared with the SSH gateway (``DNAH_SSH_GATEWAY_TOKEN``): lets it use the core's
    ``/internal/ssh/*`` routes (docs/ssh.md). None disables them."""
    ssh_host: str | None = None
    """The SSH gateway's host name as clients reach it (``DNAH_SSH_HOST``), printed in
    ``sshCommand``; None: the host of the public URL the request came through."""
    ssh_port: int = 2222
    """The SSH gateway's port as clients reach it (``DNAH_SSH_PORT``)."""
    log_format: str | None = None
    secrets_key: bytes = msgspec.field(default_factory=lambda: secrets.token_bytes(32))
    """The 32-byte key that seals secrets' values at rest (``DNAH_SECRETS_KEY``, base64; when
    unset, made once and kept in ``$DNAH_VAR_DIR/secrets.key``; without a var dir either, a
    random key for this process only, as for the preview secret, so stored values do not open
    after a restart). Losing it loses every stored secret's value; changing it makes them
    unreadable (docs/network.md)."""
    limits: Limits = Limits()
    scheduler: SchedulerConfig = SchedulerConfig()
    webhooks: WebhookConfig = WebhookConfig()
    http: GuardConfig = GuardConfig(max_per_client=256)
    """Limits on the core's callers (``DNAH_HTTP_*`` / ``DNAH_CORE_HTTP_*``, see ``guard.config``)."""


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name} is required")
    return value


def _number(env: Mapping[str, str], name: str, default: float, *, kind: type = int) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a valid {kind.__name__}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {raw}")
    return value


def _edge_token(env: Mapping[str, str]) -> str | None:
    token = env.get("DNAH_EDGE_TOKEN", "").strip()
    if token and len(token) < 32:
        raise ConfigError("DNAH_EDGE_TOKEN must be at least 32 characters")
    return token or None


def _warm_pool(text: str) -> dict[str, int]:
    pool: dict[str, int] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        template, sep, count = entry.partition("=")
        if not sep or not template.strip() or not count.strip().isdigit() or int(count) > 100:
            raise ConfigError(f"DNAH_WARM_POOL entries are template=count (0-100), got {entry!r}")
        pool[template.strip()] = int(count)
    return pool


def _check_snapshot_keys(env: Mapping[str, str]) -> None:
    try:
        if env.get("DNAH_SNAPSHOT_SIGNING_KEY"):
            snapshots.parse_signing_key(env["DNAH_SNAPSHOT_SIGNING_KEY"])
        snapshots.parse_verify_keys(env.get("DNAH_SNAPSHOT_VERIFY_KEYS", ""))
    except ValueError as exc:
        raise ConfigError(f"DNAH_SNAPSHOT_SIGNING_KEY/DNAH_SNAPSHOT_VERIFY_KEYS: {exc}") from None


SECRETS_KEY_FILE = "secrets.key"


def _secrets_key(env: Mapping[str, str]) -> bytes:
    """``DNAH_SECRETS_KEY``, else the key kept in the var dir, made there on first use (the
    file is linked into place only when complete, so concurrent first starts agree on one),
    else a key of this process's own."""
    raw = env.get("DNAH_SECRETS_KEY", "").strip()
    source = "DNAH_SECRETS_KEY"
    if not raw:
        var_dir = env.get("DNAH_VAR_DIR", "").strip()
        if not var_dir:
            return secrets.token_bytes(32)
        path = Path(var_dir) / SECRETS_KEY_FILE
        source = str(path)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fresh = path.with_name(f".{SECRETS_KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
            fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
            try:
                os.link(fresh, path)
            except FileExistsError:
                pass  # another process made it first: use theirs
            finally:
                fresh.unlink()
        raw = path.read_text().strip()
    try:
        key = base64.b64decode(raw, validate=True)
    except ValueError:
        raise ConfigError(f"{source} must be 32 bytes in base64") from None
    if len(key) != 32:
        raise ConfigError(f"{source} must be 32 bytes in base64, got {len(key)} bytes")
    return key


PREVIEW_SECRET_FILE = "preview.secret"  # noqa: S105 (a file name)


def _preview_secret(env: Mapping[str, str]) -> bytes:
    """``DNAH_PREVIEW_SECRET``, else the one kept in the var dir (made there on first use, moved
    into place only when complete so concurrent first starts agree), else a random one."""
    given = env.get("DNAH_PREVIEW_SECRET", "").strip()
    if given:
        if len(given) < 32:
            raise ConfigError("DNAH_PREVIEW_SECRET must be at least 32 characters")
        return given.encode()
    var_dir = env.get("DNAH_VAR_DIR", "").strip()
    if not var_dir:
        return os.urandom(32)
    path = Path(var_dir) / PREVIEW_SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fresh = path.with_name(f".{PREVIEW_SECRET_FILE}.{os.getpid()}")
        fresh.write_text(secrets.token_urlsafe(48))
        fresh.chmod(0o600)
        with contextlib.suppress(FileExistsError):
            os.link(fresh, path)
        fresh.unlink()
    return path.read_text().strip().encode()


def _preview_domain(env: Mapping[str, str]) -> str | None:
    domain = env.get("DNAH_PREVIEW_DOMAIN", "").strip().lower().strip(".")
    if domain and ("/" in domain or "://" in domain or " " in domain):
        raise ConfigError(f"DNAH_PREVIEW_DOMAIN is a domain (with an optional :port), got {domain!r}")
    return domain or None


def load_config(env: Mapping[str, str] = os.environ) -> CoreConfig:
    """Build the config from ``DNAH_*`` variables; raise ``ConfigError`` naming the bad one."""
    public_url = env.get("DNAH_PUBLIC_URL") or None
    if public_url and not public_url.startswith(("http://", "https://")):
        raise ConfigError(f"DNAH_PUBLIC_URL must be an http(s) URL, got {public_url!r}")
    log_format = env.get("DNAH_LOG_FORMAT") or None
    if log_format not in (None, "json", "console"):
        raise ConfigError(f"DNAH_LOG_FORMAT must be json or console, got {log_format!r}")
    _check_snapshot_keys(env)
    try:
        http = load_guard_config(env, "core")
    except GuardConfigError as exc:
        raise ConfigError(str(exc)) from None
    return CoreConfig(
        http=http,
        host=env.get("DNAH_CORE_HOST", "127.0.0.1"),
        port=int(_number(env, "DNAH_CORE_PORT", 3100)),
        database_url=_required(env, "DNAH_DATABASE_URL"),
        redis_url=_required(env, "DNAH_REDIS_URL"),
        bootstrap_token=_required(env, "DNAH_BOOTSTRAP_TOKEN"),
        edge_token=_edge_token(env),
        public_url=public_url.rstrip("/") if public_url else None,
        preview_domain=_preview_domain(env),
        preview_secret=_preview_secret(env),
        default_template=env.get("DNAH_DEFAULT_TEMPLATE", "dnah-base"),
        heartbeat_interval_s=_number(env, "DNAH_HEARTBEAT_S", 5.0, kind=float),
        reconcile_interval_s=_number(env, "DNAH_RECONCILE_S", 10.0, kind=float),
        payment_settle_after_s=_number(env, "DNAH_PAYMENT_SETTLE_S", 600.0, kind=float),
        host_timeout_s=_number(env, "DNAH_HOST_TIMEOUT_S", 30.0, kind=float),
        vm_host_timeout_s=_number(env, "DNAH_VM_HOST_TIMEOUT_S", 110.0, kind=float),
        snapshot_signing_key=env.get("DNAH_SNAPSHOT_SIGNING_KEY") or None,
        snapshot_verify_keys=env.get("DNAH_SNAPSHOT_VERIFY_KEYS", ""),
        warm_pool=_warm_pool(env.get("DNAH_WARM_POOL", "")),
        stale_operation_s=_number(env, "DNAH_STALE_OPERATION_S", 120.0, kind=float),
        stale_long_operation_s=_number(env, "DNAH_STALE_LONG_OPERATION_S", 720.0, kind=float),
        reaper_interval_s=_number(env, "DNAH_REAPER_S", 30.0, kind=float),
        max_upload_bytes=int(_number(env, "DNAH_MAX_UPLOAD_MB", 256)) * 1024 * 1024,
        ssh_gateway_token=env.get("DNAH_SSH_GATEWAY_TOKEN", "").strip() or None,
        ssh_host=env.get("DNAH_SSH_HOST", "").strip() or None,
        ssh_port=int(_number(env, "DNAH_SSH_PORT", 2222)),
        log_format=log_format,
        secrets_key=_secrets_key(env),
        scheduler=SchedulerConfig(
            cpu_overcommit=_number(env, "DNAH_CPU_OVERCOMMIT", 16.0, kind=float),
            ram_overcommit=_number(env, "DNAH_RAM_OVERCOMMIT", 2.0, kind=float),
        ),
        webhooks=WebhookConfig(
            poll_interval_s=_number(env, "DNAH_WEBHOOK_POLL_S", 1.0, kind=float),
            timeout_s=_number(env, "DNAH_WEBHOOK_TIMEOUT_S", 5.0, kind=float),
            max_attempts=int(_number(env, "DNAH_WEBHOOK_MAX_ATTEMPTS", 10)),
            backoff_s=_number(env, "DNAH_WEBHOOK_BACKOFF_S", 1.0, kind=float),
            backoff_max_s=_number(env, "DNAH_WEBHOOK_BACKOFF_MAX_S", 300.0, kind=float),
            retention_days=_number(env, "DNAH_WEBHOOK_RETENTION_DAYS", 7.0, kind=float),
            allow_private=env.get("DNAH_WEBHOOK_ALLOW_PRIVATE", "") in ("1", "true", "yes"),
        ),
    )
