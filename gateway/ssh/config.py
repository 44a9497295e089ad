"""The SSH gateway's settings: one frozen object, read from the environment once at start-up.

The SSH gateway is a process of its own (``python -m gateway.ssh``), so it has its own config
beside the HTTP gateway's (``gateway/config.py``); no other module of ``gateway/ssh`` reads
``os.environ``. A bad value is a ``ConfigError`` naming the variable, at boot.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import msgspec

HOST_KEY_FILE = "ssh_host_ed25519_key"


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the variable."""


class SshGatewayConfig(msgspec.Struct, frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    """Address to listen on (``DNAH_SSH_BIND``)."""
    port: int = 2222
    """Port to listen on (``DNAH_SSH_PORT``; the core prints the same in ``sshCommand``)."""
    host_key: Path
    """The server's Ed25519 host key (``DNAH_SSH_HOST_KEY``; default
    ``$DNAH_VAR_DIR/ssh_host_ed25519_key``), made on first start and kept, so clients see
    the same host key across restarts."""
    core_url: str = "http://127.0.0.1:3100"
    """The core (``DNAH_CORE_URL``): logins are checked and streams relayed there."""
    gateway_token: str
    """Shared with the core (``DNAH_SSH_GATEWAY_TOKEN``, required): the core's
    ``/internal/ssh/*`` routes accept only it."""
    sftp_server: str = "/usr/lib/openssh/sftp-server"
    """The SFTP server program inside sandboxes (``DNAH_SSH_SFTP_SERVER``)."""
    login_timeout_s: float = 30.0
    """Seconds a client gets to authenticate (``DNAH_SSH_LOGIN_TIMEOUT_S``)."""
    log_format: str | None = None


def load_config(env: Mapping[str, str] = os.environ) -> SshGatewayConfig:
    token = env.get("DNAH_SSH_GATEWAY_TOKEN", "").strip()
    if len(token) < 32:
        raise ConfigError("DNAH_SSH_GATEWAY_TOKEN is required (at least 32 characters)")
    var_dir = env.get("DNAH_VAR_DIR", "").strip()
    key = env.get("DNAH_SSH_HOST_KEY", "").strip()
    if not key and not var_dir:
        raise ConfigError("DNAH_SSH_HOST_KEY or DNAH_VAR_DIR is required (where the host key is kept)")
    core_url = env.get("DNAH_CORE_URL", "http://127.0.0.1:3100").rstrip("/")
    if not core_url.startswith(("http://", "https://")):
        raise ConfigError(f"DNAH_CORE_URL must be an http(s) URL, got {core_url!r}")
    return SshGatewayConfig(
        host=env.get("DNAH_SSH_BIND", "127.0.0.1"),
        port=_int(env, "DNAH_SSH_PORT", 2222),
        host_key=Path(key) if key else Path(var_dir) / HOST_KEY_FILE,
        core_url=core_url,
        gateway_token=token,
        sftp_server=env.get("DNAH_SSH_SFTP_SERVER", "/usr/lib/openssh/sftp-server"),
        login_timeout_s=float(_int(env, "DNAH_SSH_LOGIN_TIMEOUT_S", 30)),
        log_format=env.get("DNAH_LOG_FORMAT") or None,
    )


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ConfigError(f"{name} must be a whole number from 1 to 65535, got {raw!r}")
    return int(raw)
