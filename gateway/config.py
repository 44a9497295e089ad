"""The gateway's settings: one frozen object, read from the environment once at start-up.

No other module in ``gateway/`` reads ``os.environ``. ``load_config`` rejects a bad value
with a ``ConfigError`` that names the variable, so a misconfigured gateway fails at boot
instead of on its first request.

Payment settings (``PaymentConfig``) exist only in the ``payment`` and ``both`` modes; see
docs/payments.md for what each variable does.
"""

from __future__ import annotations

import ipaddress
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


class Rate(msgspec.Struct, frozen=True):
    """``count`` requests per ``window_s`` seconds, with bursts of up to ``count`` (GCRA, see
    ``gateway.ratelimit``)."""

    count: int
    window_s: int

    @property
    def policy(self) -> str:
        """The ``RateLimit-Policy`` value: ``100;w=60``."""
        return f"{self.count};w={self.window_s}"


Network_ = ipaddress.IPv4Network | ipaddress.IPv6Network


class RateLimitConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Per-identity request budgets kept in Redis (docs/reliability.md, "Rate limits").

    A limit of None is off (``0`` in its variable). The defaults are generous: they stop a
    runaway client, not a busy one.
    """

    api_key: Rate | None = Rate(6000, 60)
    """``DNAH_RATELIMIT_API_KEY``: per bearer token (its SHA-256)."""
    payer: Rate | None = Rate(6000, 60)
    """``DNAH_RATELIMIT_PAYER``: per payer address, once a Payment credential names one."""
    address: Rate | None = Rate(6000, 60)
    """``DNAH_RATELIMIT_ADDRESS``: per client address, for every request without a bearer
    token (402 challenges, payment attempts, discovery)."""
    preview: Rate | None = Rate(12000, 60)
    """``DNAH_RATELIMIT_PREVIEW``: per sandbox, for its preview traffic (a dev server's page
    load can be hundreds of requests)."""
    exempt_keys: frozenset[str] = frozenset()
    """``DNAH_RATELIMIT_EXEMPT_KEYS``: hex SHA-256 digests of API keys never limited."""
    exempt_cidrs: tuple[Network_, ...] = ()
    """``DNAH_RATELIMIT_EXEMPT_CIDRS``: client networks never limited."""
    exempt_payers: frozenset[str] = frozenset()
    """``DNAH_RATELIMIT_EXEMPT_PAYERS``: payer addresses (lower case) never limited."""
    trusted_proxies: tuple[Network_, ...] = ()
    """``DNAH_TRUSTED_PROXIES``: peers whose ``X-Forwarded-For`` names the client. None by
    default: the client address is the TCP peer's."""


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
    redis_url: str | None = None
    """``DNAH_REDIS_URL``: where rate limits are counted (and, in the payment modes, where
    payments are claimed). Unset in bearer mode: no rate limits."""
    ratelimit: RateLimitConfig = RateLimitConfig()
    preview_domain: str | None = None
    """``DNAH_PREVIEW_DOMAIN`` (e.g. ``preview.example.com`` or ``preview.localhost:3000``):
    a request whose Host is ``{port}-{sandbox id}.{domain}`` is preview traffic
    (``gateway.preview``). Unset: previews are reached by path only."""


def load_config(environ: Mapping[str, str] = os.environ) -> GatewayConfig:
    """Build the config from ``DNAH_*`` variables; raise ``ConfigError`` naming the bad one."""
    mode = _mode(environ.get("DNAH_GATEWAY_MODE") or "bearer")
    redis_raw = environ.get("DNAH_REDIS_URL") or None
    return GatewayConfig(
        host=_host(environ.get("DNAH_GATEWAY_HOST") or "127.0.0.1"),
        port=_port(environ.get("DNAH_GATEWAY_PORT") or "3000"),
        core_url=_origin(environ.get("DNAH_CORE_URL") or "http://127.0.0.1:3100"),
        mode=mode,
        upstream_timeout_s=_positive("DNAH_GATEWAY_UPSTREAM_TIMEOUT_S", environ, 300.0),
        log_format=_log_format(environ.get("DNAH_LOG_FORMAT") or None),
        payment=None if mode == "bearer" else _payment(environ),
        http=_http(environ),
        redis_url=None if redis_raw is None else _redis_url(redis_raw),
        ratelimit=_ratelimit(environ),
        preview_domain=_preview_domain(environ.get("DNAH_PREVIEW_DOMAIN") or None),
    )


_RATE = re.compile(r"(\d+)/(\d*)(s|m|h)")
_UNIT_S = {"s": 1, "m": 60, "h": 3600}
_HOST_PORT = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?")


def _ratelimit(environ: Mapping[str, str]) -> RateLimitConfig:
    default = RateLimitConfig()
    return RateLimitConfig(
        api_key=_rate("DNAH_RATELIMIT_API_KEY", environ, default.api_key),
        payer=_rate("DNAH_RATELIMIT_PAYER", environ, default.payer),
        address=_rate("DNAH_RATELIMIT_ADDRESS", environ, default.address),
        preview=_rate("DNAH_RATELIMIT_PREVIEW", environ, default.preview),
        exempt_keys=frozenset(_exempt_keys(environ.get("DNAH_RATELIMIT_EXEMPT_KEYS") or "")),
        exempt_cidrs=_cidrs("DNAH_RATELIMIT_EXEMPT_CIDRS", environ.get("DNAH_RATELIMIT_EXEMPT_CIDRS") or ""),
        exempt_payers=frozenset(_payers(environ.get("DNAH_RATELIMIT_EXEMPT_PAYERS") or "")),
        trusted_proxies=_cidrs("DNAH_TRUSTED_PROXIES", environ.get("DNAH_TRUSTED_PROXIES") or ""),
    )


def _rate(name: str, environ: Mapping[str, str], default: Rate | None) -> Rate | None:
    """``N/window``: ``600/1m``, ``10/s``, ``5000/10m``, ``100/30s``; ``0`` is off."""
    raw = (environ.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw == "0" or raw.startswith("0/"):
        return None
    match = _RATE.fullmatch(raw)
    window = int(match[2] or 1) * _UNIT_S[match[3]] if match else 0
    if match is None or window <= 0 or int(match[1]) <= 0:
        raise ConfigError(f"{name} must look like 600/1m, 10/s or 5000/1h (0: off), got {raw!r}")
    return Rate(int(match[1]), window)


def _items(raw: str) -> list[str]:
    return [item.strip() for item in raw.split(",") if item.strip()]


def _exempt_keys(raw: str) -> list[str]:
    found = []
    for item in _items(raw):
        if not re.fullmatch(r"[0-9a-fA-F]{64}", item):
            raise ConfigError(
                "DNAH_RATELIMIT_EXEMPT_KEYS must list hex SHA-256 digests of API keys "
                f'(printf %s "$KEY" | sha256sum), got {item!r}'
            )
        found.append(item.lower())
    return found


def _payers(raw: str) -> list[str]:
    found = []
    for item in _items(raw):
        if not _ADDRESS.fullmatch(item):
            raise ConfigError(f"DNAH_RATELIMIT_EXEMPT_PAYERS must list 0x addresses, got {item!r}")
        found.append(item.lower())
    return found


def _cidrs(name: str, raw: str) -> tuple[Network_, ...]:
    found: list[Network_] = []
    for item in _items(raw):
        try:
            found.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(f"{name} must list IP networks (10.0.0.0/8, ::1), got {item!r}") from None
    return tuple(found)


def _preview_domain(raw: str | None) -> str | None:
    if raw is None:
        return None
    domain = raw.strip().lower().rstrip(".")
    port = domain.rpartition(":")[2] if ":" in domain else None
    if not _HOST_PORT.fullmatch(domain):
        raise ConfigError(f"DNAH_PREVIEW_DOMAIN must be a host name with an optional port, got {raw!r}")
    if port is not None and not 1 <= int(port) <= 65535:
        raise ConfigError(f"DNAH_PREVIEW_DOMAIN's port must be between 1 and 65535, got {raw!r}")
    return domain


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
