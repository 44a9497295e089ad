"""The gateway's settings: one frozen object, read from the environment once at start-up.

No other module in ``gateway/`` reads ``os.environ``. ``load_config`` rejects a bad value
with a ``ConfigError`` that names the variable, so a misconfigured gateway fails at boot
instead of on its first request.

Payment settings (``PaymentConfig``) exist only in the ``payment`` and ``both`` modes; see
docs/payments.md for what each variable does.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import msgspec

from contracts.tempo import DEVNET, MAINNET, PATH_USD, TESTNET, USDC_E
from guard import ConfigError as GuardConfigError
from guard import GuardConfig, load_guard_config

Mode = Literal["bearer", "payment", "both"]
"""How the edge admits requests.

- ``bearer``: forward everything, the core checks API keys (no payments, never a 402).
- ``payment``: a payable route must be paid per request over MPP (Tempo charge).
- ``both``: a request carrying ``Authorization: Bearer`` goes through as in ``bearer`` (if
  the core refuses its key with 401, the answer becomes a 402); any other must pay.
"""

Network = Literal["mainnet", "testnet", "devnet"]


class ConfigError(ValueError):
    """A setting is invalid; the message names the variable and what is expected."""


class NetworkPreset(msgspec.Struct, frozen=True, kw_only=True):
    chain_id: int
    rpc_url: str
    currencies: tuple[str, ...]


NETWORKS: dict[str, NetworkPreset] = {
    # USDC.e on mainnet: wallets' access keys carry per-token spending limits, and USDC.e is
    # what they are set up for (and the SDKs' default there).
    "mainnet": NetworkPreset(
        chain_id=MAINNET.chain_id, rpc_url=MAINNET.rpc_url, currencies=(USDC_E.address,)
    ),
    "testnet": NetworkPreset(
        chain_id=TESTNET.chain_id, rpc_url=TESTNET.rpc_url, currencies=(PATH_USD.address,)
    ),
    # ``python -m devnet``: a local Tempo-compatible chain (the id of Tempo's localnet).
    "devnet": NetworkPreset(chain_id=DEVNET.chain_id, rpc_url=DEVNET.rpc_url, currencies=(PATH_USD.address,)),
}

MIN_SECRET_BYTES = 32
MIN_EDGE_TOKEN_CHARS = 32
"""The core refuses a shorter ``DNAH_EDGE_TOKEN`` too (``core.config``)."""

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_REALM = re.compile(r"[!#-\[\]-~]+")
"""Visible ASCII without ``"`` and ``\\``: the realm is a quoted auth-param."""


class PaymentConfig(msgspec.Struct, frozen=True, kw_only=True):
    """MPP charge over Tempo (``payment`` and ``both`` modes)."""

    network: Network
    chain_id: int
    rpc_url: str
    currencies: tuple[str, ...]
    """Accepted TIP-20 tokens, in offer order: one ``WWW-Authenticate`` challenge each."""
    recipient: str
    realm: str
    secret: str
    """HMAC key that binds challenge ids (``DNAH_MPP_SECRET``)."""
    edge_token: str
    """Shared with the core: lets the gateway act for payers (``contracts.control``)."""
    redis_url: str
    pricing_file: Path
    public_url: str | None = None
    """The gateway's public origin (``DNAH_PUBLIC_URL``), if configured."""
    expires_s: int = 300
    """Lifetime of a challenge."""
    max_body_bytes: int = 32 * 1024 * 1024
    """Largest request body a payable request may carry (it is held in memory, since the
    challenge binds its digest)."""
    rpc_timeout_s: float = 10.0
    confirmation_timeout_s: float = 30.0
    """Longest a broadcast may wait for its receipt before the outcome counts as unknown."""

    def __repr__(self) -> str:  # never print the secrets, whoever logs the config
        return f"PaymentConfig(network={self.network!r}, chain_id={self.chain_id}, realm={self.realm!r})"


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
    payment: PaymentConfig | None = None
    """Set exactly when ``mode`` is ``payment`` or ``both``."""
    http: GuardConfig = GuardConfig()
    """The edge's limits on clients (``DNAH_HTTP_*`` / ``DNAH_GATEWAY_HTTP_*``, see ``guard.config``)."""


def load_config(environ: Mapping[str, str] = os.environ) -> GatewayConfig:
    """Build the config from ``DNAH_*`` variables; raise ``ConfigError`` naming the bad one."""
    mode = _mode(environ.get("DNAH_GATEWAY_MODE") or "bearer")
    return GatewayConfig(
        host=_host(environ.get("DNAH_GATEWAY_HOST") or "127.0.0.1"),
        port=_port(environ.get("DNAH_GATEWAY_PORT") or "3000"),
        core_url=_origin(environ.get("DNAH_CORE_URL") or "http://127.0.0.1:3100"),
        mode=mode,
        upstream_timeout_s=_positive("DNAH_GATEWAY_UPSTREAM_TIMEOUT_S", environ, 300.0),
        log_format=_log_format(environ.get("DNAH_LOG_FORMAT") or None),
        payment=None if mode == "bearer" else _payment(environ),
        http=_http(environ),
    )


def _http(environ: Mapping[str, str]) -> GuardConfig:
    try:
        return load_guard_config(environ, "gateway")
    except GuardConfigError as exc:
        raise ConfigError(str(exc)) from None


def _payment(environ: Mapping[str, str]) -> PaymentConfig:
    network = _network(environ.get("DNAH_PAYMENT_NETWORK") or "mainnet")
    preset = NETWORKS[network]
    public_url = _public_url(environ.get("DNAH_PUBLIC_URL") or None)
    return PaymentConfig(
        network=network,
        chain_id=preset.chain_id,
        rpc_url=_rpc_url(environ.get("DNAH_PAYMENT_RPC_URL") or preset.rpc_url),
        currencies=_currencies(environ.get("DNAH_PAYMENT_CURRENCIES") or None, preset.currencies),
        recipient=_recipient(environ.get("DNAH_PAYMENT_RECIPIENT") or ""),
        realm=_realm(environ.get("DNAH_PAYMENT_REALM") or None, public_url),
        secret=_secret(environ.get("DNAH_MPP_SECRET") or ""),
        edge_token=_edge_token(environ.get("DNAH_EDGE_TOKEN", "").strip()),
        redis_url=_redis_url(environ.get("DNAH_REDIS_URL") or ""),
        pricing_file=_pricing_file(environ.get("DNAH_PRICING_FILE") or None),
        public_url=public_url,
        expires_s=int(_positive("DNAH_PAYMENT_EXPIRES_S", environ, 300, integer=True)),
        max_body_bytes=int(_positive("DNAH_PAYMENT_MAX_BODY_BYTES", environ, 32 * 1024 * 1024, integer=True)),
        rpc_timeout_s=_positive("DNAH_PAYMENT_RPC_TIMEOUT_S", environ, 10.0),
        confirmation_timeout_s=_positive("DNAH_PAYMENT_CONFIRMATION_TIMEOUT_S", environ, 30.0),
    )


def _network(raw: str) -> Network:
    if raw == "mainnet":
        return "mainnet"
    if raw == "testnet":
        return "testnet"
    if raw == "devnet":
        return "devnet"
    raise ConfigError(f"DNAH_PAYMENT_NETWORK must be mainnet, testnet or devnet, got {raw!r}")


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
    if raw == "payment":
        return "payment"
    if raw == "both":
        return "both"
    raise ConfigError(f"DNAH_GATEWAY_MODE must be bearer, payment or both, got {raw!r}")


def _positive(name: str, environ: Mapping[str, str], default: float, *, integer: bool = False) -> float:
    raw = environ.get(name) or None
    if raw is None:
        return default
    kind = "an integer" if integer else "a number"
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be {kind}, got {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a positive {kind.split()[-1]}, got {raw!r}")
    return value


def _log_format(raw: str | None) -> Literal["json", "console"] | None:
    if raw is None:
        return None
    if raw == "json":
        return "json"
    if raw == "console":
        return "console"
    raise ConfigError(f"DNAH_LOG_FORMAT must be json or console, got {raw!r}")


def _public_url(raw: str | None) -> str | None:
    if raw is None:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"DNAH_PUBLIC_URL must be an http(s) URL, got {raw!r}")
    return raw.rstrip("/")


def _rpc_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"DNAH_PAYMENT_RPC_URL must be an http(s) URL, got {raw!r}")
    return raw


def _currencies(raw: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
    if raw is None:
        return default
    found: list[str] = []
    for item in raw.split(","):
        address = item.strip()
        if not _ADDRESS.fullmatch(address):
            raise ConfigError(
                f"DNAH_PAYMENT_CURRENCIES must be a comma-separated list of 0x token addresses, "
                f"got {address!r}"
            )
        if address.lower() not in {seen.lower() for seen in found}:
            found.append(address)
    return tuple(found)


def _recipient(raw: str) -> str:
    if not raw:
        raise ConfigError("DNAH_PAYMENT_RECIPIENT is required in payment and both modes (a 0x address)")
    if not _ADDRESS.fullmatch(raw):
        raise ConfigError(f"DNAH_PAYMENT_RECIPIENT must be a 0x address (40 hex digits), got {raw!r}")
    return raw


def _realm(raw: str | None, public_url: str | None) -> str:
    """Default: the public host (with its port, if the URL names one)."""
    if raw is None:
        if public_url is None:
            return "localhost"
        parts = urlsplit(public_url)
        host = parts.hostname or "localhost"
        return f"{host}:{parts.port}" if parts.port else host
    if not _REALM.fullmatch(raw):
        raise ConfigError(f"DNAH_PAYMENT_REALM must be visible ASCII without quotes, got {raw!r}")
    return raw


def _secret(raw: str) -> str:
    if not raw:
        raise ConfigError(
            "DNAH_MPP_SECRET is required in payment and both modes"
            f" (at least {MIN_SECRET_BYTES} bytes; e.g. `openssl rand -base64 48`)"
        )
    if len(raw.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(f"DNAH_MPP_SECRET must be at least {MIN_SECRET_BYTES} bytes long")
    return raw


def _edge_token(raw: str) -> str:
    if not raw:
        raise ConfigError(
            "DNAH_EDGE_TOKEN is required in payment and both modes (the same value as the core's)"
        )
    if len(raw) < MIN_EDGE_TOKEN_CHARS:
        raise ConfigError(f"DNAH_EDGE_TOKEN must be at least {MIN_EDGE_TOKEN_CHARS} characters")
    return raw


def _redis_url(raw: str) -> str:
    if not raw:
        raise ConfigError(
            "DNAH_REDIS_URL is required in payment and both modes (replay protection is shared"
            " by every gateway worker)"
        )
    if urlsplit(raw).scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"DNAH_REDIS_URL must be a redis://, rediss:// or unix:// URL, got {raw!r}")
    return raw


def _pricing_file(raw: str | None) -> Path:
    if raw is None:
        from pricing import default_table_path

        return default_table_path()
    path = Path(raw)
    if not path.is_file():
        raise ConfigError(f"DNAH_PRICING_FILE must name a readable price table, got {raw!r}")
    return path
