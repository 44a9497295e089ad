"""The gateway's settings: one frozen object, read from the environment once at start-up.

No other module in ``gateway/`` reads ``os.environ``. ``load_config`` rejects a bad value
with a ``ConfigError`` that names the variable, so a misconfigured gateway fails at boot
instead of on its first request.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Literal
from urllib.parse import urlsplit

import msgspec

Mode = Literal["bearer"]
"""How the edge admits requests. ``bearer``: forward everything, the core checks API keys."""

_NOT_YET_MODES = frozenset({"payment", "both"})


class ConfigError(ValueError):
    """A setting is invalid; the message names the variable and what is expected."""


class GatewayConfig(msgspec.Struct, frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    """Address the launcher binds Granian to."""
    port: int = 3000
    """Port the launcher binds Granian to."""
    core_url: str = "http://127.0.0.1:3100"
    """Origin of the core (``scheme://host[:port]``, no trailing slash)."""
    mode: Mode = "bearer"
    upstream_timeout_s: float = 300.0
    """Longest the core may stay silent, reading or writing, before a 504 (connecting: at most
    10 s, see ``gateway.forward.MAX_CONNECT_TIMEOUT_S``)."""
    log_format: Literal["json", "console"] | None = None
    """None: JSON unless stderr is a TTY (see ``contracts.observability``)."""


def load_config(environ: Mapping[str, str] = os.environ) -> GatewayConfig:
    """Build the config from ``DNAH_*`` variables; raise ``ConfigError`` naming the bad one."""
    return GatewayConfig(
        host=_host(environ.get("DNAH_GATEWAY_HOST") or "127.0.0.1"),
        port=_port(environ.get("DNAH_GATEWAY_PORT") or "3000"),
        core_url=_origin(environ.get("DNAH_CORE_URL") or "http://127.0.0.1:3100"),
        mode=_mode(environ.get("DNAH_GATEWAY_MODE") or "bearer"),
        upstream_timeout_s=_timeout(environ.get("DNAH_GATEWAY_UPSTREAM_TIMEOUT_S") or "300"),
        log_format=_log_format(environ.get("DNAH_LOG_FORMAT") or None),
    )


def _host(raw: str) -> str:
    if any(c.isspace() for c in raw):
        raise ConfigError(f"DNAH_GATEWAY_HOST must be an address or host name, got {raw!r}")
    return raw


def _port(raw: str) -> int:
    try:
        port = int(raw)
    except ValueError:
        raise ConfigError(f"DNAH_GATEWAY_PORT must be an integer, got {raw!r}") from None
    if not 1 <= port <= 65535:
        raise ConfigError(f"DNAH_GATEWAY_PORT must be between 1 and 65535, got {port}")
    return port


def _origin(raw: str) -> str:
    """The core is addressed by origin only: the forwarded path is the client's, unprefixed."""
    problem = f"DNAH_CORE_URL must look like http://host:port (no path, query or credentials), got {raw!r}"
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise ConfigError(problem) from None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username is not None
    ):
        raise ConfigError(problem)
    return f"{parts.scheme}://{parts.netloc}"


def _mode(raw: str) -> Mode:
    if raw == "bearer":
        return "bearer"
    if raw in _NOT_YET_MODES:
        raise ConfigError(
            f"DNAH_GATEWAY_MODE={raw} is not supported yet: payment-gated modes are not implemented,"
            " use bearer"
        )
    raise ConfigError(f"DNAH_GATEWAY_MODE must be bearer, got {raw!r}")


def _timeout(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"DNAH_GATEWAY_UPSTREAM_TIMEOUT_S must be a number, got {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"DNAH_GATEWAY_UPSTREAM_TIMEOUT_S must be a positive number, got {raw!r}")
    return value


def _log_format(raw: str | None) -> Literal["json", "console"] | None:
    if raw is None:
        return None
    if raw == "json":
        return "json"
    if raw == "console":
        return "console"
    raise ConfigError(f"DNAH_LOG_FORMAT must be json or console, got {raw!r}")
