"""The edge settings of one HTTP process: one frozen struct, read from ``DNAH_HTTP_*``.

Every process (gateway, core, hostd) embeds a ``GuardConfig`` in its own config. A variable
``DNAH_HTTP_<NAME>`` applies to all of them; ``DNAH_<PROCESS>_HTTP_<NAME>`` (``PROCESS`` is
``GATEWAY``, ``CORE`` or ``HOSTD``) overrides it for one, which matters for the per-client
cap: the core's only clients are gateways and hosts, hostd's only client is the core.

Half of these are enforced by Granian (``cli/serve.py`` turns them into flags), half by the
guard's ASGI layer; docs/reliability.md, "The edge of every process", lists which is which.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import msgspec

MIN_HEADER_BUFFER_BYTES = 8192
"""Granian refuses a smaller ``--http1-buffer-size``."""

MAX_HEADER_TIMEOUT_S = 60.0
"""Granian's ``--http1-header-read-timeout`` takes at most 60000 ms."""


class ConfigError(ValueError):
    """A ``DNAH_HTTP_*`` variable is invalid; the message names it."""


class GuardConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Limits on what a client may send and how slowly (defaults in brackets)."""

    header_timeout_s: float = 10.0
    """``HEADER_TIMEOUT_S`` [10]: Granian's time limit for a request's head, from the first
    byte of a new connection or, on a kept-alive one, from the end of the previous answer, so
    it is also the idle keep-alive timeout. The core's and hostd's must stay above their
    callers' keep-alive expiry (5 s, httpx's default), or a pooled connection can be closed
    under a request."""
    header_buffer_bytes: int = 64 * 1024
    """``HEADER_BUFFER_KB`` [64]: Granian's HTTP/1 read buffer; a request head that does not
    fit (or has more than 100 fields) is answered 431 and the connection closed."""
    body_timeout_s: float = 20.0
    """``BODY_TIMEOUT_S`` [20]: the pacing window. Whenever the app waits for the request
    body, each ``body_timeout_s`` of waiting must bring at least
    ``body_timeout_s * body_min_rate`` bytes (and at least one): otherwise 408 and the
    connection is closed. Time the app spends not reading (backpressure from the next hop)
    does not count against the client."""
    body_min_rate: int = 1024
    """``BODY_MIN_RATE`` [1024]: bytes per second a body must average over each window."""
    max_body_bytes: int = 1024 * 1024 * 1024
    """``MAX_BODY_MB`` [1024]: the largest body of any request (413 when announced, or the
    moment a chunked body passes it); an outer bound above every route's own limit
    (uploads: ``DNAH_MAX_UPLOAD_MB``)."""
    json_max_bytes: int = 48 * 1024 * 1024
    """``JSON_MAX_MB`` [48]: the largest JSON body (413). Seed 004's JSON upload carries up
    to 32 MiB in base64, about 43 MiB of JSON."""
    json_max_depth: int = 64
    """``JSON_MAX_DEPTH`` [64]: the deepest nesting of arrays and objects in a JSON body
    (400); no request of any API nests more than a few levels."""
    max_per_client: int = 64
    """``MAX_PER_CLIENT`` [gateway 64, core and hostd 256]: requests (and WebSockets) one
    client address may have in flight; the next gets 429 with ``Retry-After``. 0: no cap."""


PER_CLIENT_DEFAULTS: dict[str, int] = {"gateway": 64, "core": 256, "hostd": 256}
"""The core sees every gateway as one client and hostd sees only the core, so their caps are
about a runaway caller, not a user."""


def load_guard_config(env: Mapping[str, str], process: str) -> GuardConfig:
    """Read the settings of ``process`` (a key of ``PER_CLIENT_DEFAULTS``) from ``env``; raise
    ``ConfigError`` naming a bad one."""
    own = f"DNAH_{process.upper()}_HTTP_"

    def number(name: str, default: float, *, low: float, high: float = math.inf) -> float:
        var = own + name if env.get(own + name) else "DNAH_HTTP_" + name
        raw = env.get(var) or None
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{var} must be a number, got {raw!r}") from None
        if not math.isfinite(value) or not low <= value <= high:
            raise ConfigError(f"{var} must be between {low:g} and {high:g}, got {raw!r}")
        return value

    defaults = GuardConfig()
    mib = 1024 * 1024
    return GuardConfig(
        header_timeout_s=number(
            "HEADER_TIMEOUT_S", defaults.header_timeout_s, low=0.001, high=MAX_HEADER_TIMEOUT_S
        ),
        header_buffer_bytes=int(
            number(
                "HEADER_BUFFER_KB", defaults.header_buffer_bytes / 1024, low=MIN_HEADER_BUFFER_BYTES / 1024
            )
            * 1024
        ),
        body_timeout_s=number("BODY_TIMEOUT_S", defaults.body_timeout_s, low=0.001),
        body_min_rate=int(number("BODY_MIN_RATE", defaults.body_min_rate, low=0)),
        max_body_bytes=int(number("MAX_BODY_MB", defaults.max_body_bytes / mib, low=0.001) * mib),
        json_max_bytes=int(number("JSON_MAX_MB", defaults.json_max_bytes / mib, low=0.001) * mib),
        json_max_depth=int(number("JSON_MAX_DEPTH", defaults.json_max_depth, low=1)),
        max_per_client=int(number("MAX_PER_CLIENT", PER_CLIENT_DEFAULTS[process], low=0)),
    )
