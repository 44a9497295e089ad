"""Rate limits at the edge: request budgets per API key, per payer, per client address and per
sandbox (preview traffic), counted in Redis so that every gateway worker and process on one
Redis spends from the same budget.

The algorithm is GCRA (the generic cell rate algorithm): a limit of ``N`` per ``W`` seconds
lets ``N`` requests through at once and then one every ``W/N`` seconds, and needs one number
per bucket, its *theoretical arrival time*. ``_SCRIPT`` reads it, decides and writes it back in
one Lua script, so the decision is atomic across workers, and takes the time from Redis
(``TIME``) so gateways on machines with different clocks still agree. A bucket's key expires
once the bucket is full again: an idle client costs no memory.

Which buckets a request spends from (docs/reliability.md, "Rate limits"):

- ``Authorization: Bearer`` or E2B's ``X-API-KEY``: its API key (the SHA-256 of the token;
  nothing else is known at the edge);
- any other request (402 challenges, payment attempts, discovery): its client address (the TCP
  peer, or what ``X-Forwarded-For`` says when the peer is a trusted proxy; IPv6 by /64), and,
  once a Payment credential names its payer (``gateway.payments``), that payer too;
- preview traffic (``gateway.preview``): its sandbox.

Over the limit: 429 with ``Retry-After``. Every HTTP answer carries ``RateLimit-Limit``,
``-Remaining``, ``-Reset`` and ``-Policy`` of the tightest bucket it spent from.

Redis unreachable or slow: requests pass unlimited (fail open) and a warning is logged at most
every ``LOG_EVERY_S``; after a failure Redis is left alone for ``BACKOFF_S``, so an outage adds
no latency. A limit exists to keep one client from crowding out the rest, and Redis being down
must not take the whole API down with it.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import ipaddress
import math
import time
from collections.abc import Iterator
from typing import Literal

import msgspec
import structlog
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from gateway.config import Rate, RateLimitConfig
from gateway.forward import Headers, Receive, Scope, Send, bind_client_request_id, log_request
from gateway.framing import deny
from guard import ASGIApp

log = structlog.get_logger()

Kind = Literal["key", "payer", "address", "sandbox"]

REDIS_TIMEOUT_S = 0.5
"""Longest one decision may wait for Redis before the request passes unlimited."""
BACKOFF_S = 1.0
"""After Redis failed, this long without asking it (requests pass unlimited)."""
LOG_EVERY_S = 10.0

_PREFIX = "dnah:rl:"
_NAMES: dict[Kind, str] = {
    "key": "API key",
    "payer": "payer",
    "address": "client address",
    "sandbox": "sandbox",
}

# ARGV: the emission interval and the burst, both in microseconds / requests. Times are
# integer microseconds (exact in Lua's doubles until the year 2255) and written with %d, as
# tostring would switch to an exponent and lose digits.
_SCRIPT = """
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local next_tat = tat + interval
local allowed_from = next_tat - burst * interval
if allowed_from > now then
  return {0, 0, allowed_from - now, tat - now}
end
redis.call('SET', KEYS[1], string.format('%d', next_tat), 'PX', math.ceil((next_tat - now) / 1000))
return {1, math.floor((now - allowed_from) / interval), 0, next_tat - now}
"""

_LIMIT_HEADER = b"ratelimit-limit"
_API_KEY = b"x-api-key"
_decisions: contextvars.ContextVar[list[Decision] | None] = contextvars.ContextVar("dnah_rl", default=None)


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    """One bucket's answer for one request."""

    kind: Kind
    allowed: bool
    rate: Rate
    remaining: int
    reset_s: int
    """Seconds until the bucket is full again."""
    retry_after_s: int
    """Seconds until a refused request would pass (0 when allowed)."""

    def headers(self) -> Headers:
        found = [
            (_LIMIT_HEADER, str(self.rate.count).encode()),
            (b"ratelimit-remaining", str(self.remaining).encode()),
            (b"ratelimit-reset", str(self.reset_s).encode()),
            (b"ratelimit-policy", self.rate.policy.encode()),
        ]
        if not self.allowed:
            found.append((b"retry-after", str(self.retry_after_s).encode()))
        return found

    def message(self) -> str:
        return (
            f"rate limit of this {_NAMES[self.kind]} exceeded ({self.rate.count} requests per "
            f"{self.rate.window_s} s); retry in {self.retry_after_s} s"
        )


class RateLimiter:
    """The buckets of one gateway process. Enter it (the app's lifespan) to connect to Redis.

    Off (every method answers None) when no Redis is configured or every limit is 0.
    """

    def __init__(self, config: RateLimitConfig, redis_url: str | None) -> None:
        self.config = config
        self._rates: dict[Kind, Rate | None] = {
            "key": config.api_key,
            "payer": config.payer,
            "address": config.address,
            "sandbox": config.preview,
        }
        any_limit = any(rate is not None for rate in self._rates.values())
        self._url = redis_url if any_limit else None
        self._redis: Redis | None = None
        self._script: AsyncScript | None = None
        self._skip_until = 0.0
        self._logged_at = -math.inf
        self._unlimited = 0
        if redis_url is None:
            log.info("ratelimit_off", reason="DNAH_REDIS_URL is not set")
        elif not any_limit:
            log.info("ratelimit_off", reason="every DNAH_RATELIMIT_* limit is 0")

    @property
    def enabled(self) -> bool:
        return self._url is not None

    async def __aenter__(self) -> RateLimiter:
        if self._url is not None:
            self._redis = Redis.from_url(
                self._url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
            )
            self._script = self._redis.register_script(_SCRIPT)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    # the buckets ---------------------------------------------------------------------------

    async def for_key(self, token: str) -> Decision | None:
        digest = hashlib.sha256(token.encode()).hexdigest()
        if digest in self.config.exempt_keys:
            return None
        return await self.take("key", digest)

    async def for_address(self, scope: Scope) -> Decision | None:
        address = self.client_address(scope)
        if address is not None and any(address in net for net in self.config.exempt_cidrs):
            return None
        return await self.take("address", _bucket_of(address))

    async def for_payer(self, payer: str) -> Decision | None:
        payer = payer.lower()
        if payer in self.config.exempt_payers:
            return None
        return await self.take("payer", payer)

    async def for_sandbox(self, sandbox_id: str) -> Decision | None:
        return await self.take("sandbox", sandbox_id)

    async def take(self, kind: Kind, ident: str) -> Decision | None:
        """Spend one request from the bucket ``kind:ident``; None: not limited (off, or Redis
        unavailable). The decision is also noted for the current request's headers."""
        rate = self._rates[kind]
        if rate is None or self._script is None:
            return None
        if time.monotonic() < self._skip_until:
            self._unlimited += 1
            return None
        interval = max(1, math.ceil(rate.window_s * 1_000_000 / rate.count))
        try:
            answer = await self._script(keys=[f"{_PREFIX}{kind}:{ident}"], args=[interval, rate.count])
        except (RedisError, OSError) as exc:
            self._unavailable(exc)
            return None
        allowed, remaining, retry_us, reset_us = (int(x) for x in answer)
        decision = Decision(
            kind=kind,
            allowed=bool(allowed),
            rate=rate,
            remaining=remaining,
            reset_s=math.ceil(reset_us / 1_000_000),
            retry_after_s=max(1, math.ceil(retry_us / 1_000_000)) if not allowed else 0,
        )
        noted = _decisions.get()
        if noted is not None:
            noted.append(decision)
        return decision

    def _unavailable(self, exc: BaseException) -> None:
        now = time.monotonic()
        self._skip_until = now + BACKOFF_S
        self._unlimited += 1
        if now - self._logged_at >= LOG_EVERY_S:
            log.warning(
                "ratelimit_unavailable",
                error=repr(exc),
                unlimited_requests=self._unlimited,
                detail="Redis did not answer: requests pass without rate limits",
            )
            self._logged_at, self._unlimited = now, 0

    # addresses -----------------------------------------------------------------------------

    def client_address(self, scope: Scope) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        """The client's address: the TCP peer's, or, when the peer is a trusted proxy, the
        rightmost ``X-Forwarded-For`` entry that is not itself a trusted proxy (entries left
        of it were written by the client and prove nothing)."""
        client = scope.get("client")
        address = _parse_ip(client[0]) if client else None
        trusted = self.config.trusted_proxies
        if address is None or not trusted:
            return address
        forwarded: list[str] = []
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                forwarded += value.decode("latin-1").split(",")
        for entry in reversed(forwarded):
            if not any(address in net for net in trusted):
                break
            hop = _parse_ip(entry.strip())
            if hop is None:
                break
            address = hop
        return address


@contextlib.contextmanager
def noting() -> Iterator[list[Decision]]:
    """Collect the decisions taken while serving one request (see ``with_headers``)."""
    noted: list[Decision] = []
    token = _decisions.set(noted)
    try:
        yield noted
    finally:
        _decisions.reset(token)


def with_headers(send: Send, noted: list[Decision]) -> Send:
    """``send`` that adds the ``RateLimit-*`` headers of the tightest bucket to the answer."""

    async def sending(message: dict[str, object]) -> None:
        kind = message["type"]
        if noted and kind in ("http.response.start", "websocket.accept", "websocket.http.response.start"):
            headers: Headers = list(message.get("headers") or [])  # type: ignore[call-overload]
            if not any(name.lower() == _LIMIT_HEADER for name, _ in headers):
                tightest = min(noted, key=lambda d: (d.remaining, -d.reset_s))
                message = {**message, "headers": headers + tightest.headers()}
        await send(message)

    return sending  # type: ignore[return-value]


def api_key(headers: Headers) -> str | None:
    """The API key a request carries: ``Authorization: Bearer <key>``, else E2B's
    ``X-API-KEY: <key>`` (the same keys, spelled the E2B SDK's way)."""
    for name, value in headers:
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return value[7:].strip().decode("latin-1")
    for name, value in headers:
        if name == _API_KEY and value.strip():
            return value.strip().decode("latin-1")
    return None


def _parse_ip(raw: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(raw.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _bucket_of(address: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> str:
    """IPv4 per address; IPv6 per /64 (one host usually holds a whole /64)."""
    if address is None:
        return "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False).network_address) + "/64"
    return str(address)


def limited(app: ASGIApp, limiter: RateLimiter) -> ASGIApp:
    """``app`` behind the API key and client address buckets (preview traffic never gets here:
    ``gateway.preview`` limits it per sandbox). ``GET /health`` is not limited: load balancers
    and monitors poll it."""

    async def limiting(scope: Scope, receive: Receive, send: Send) -> None:
        if not limiter.enabled or scope["type"] not in ("http", "websocket") or scope["path"] == "/health":
            await app(scope, receive, send)
            return
        with noting() as noted:
            token = api_key(scope["headers"])
            decision = await (limiter.for_key(token) if token is not None else limiter.for_address(scope))
            if decision is not None and not decision.allowed:
                await refused(scope, receive, send, decision)
                return
            await app(scope, receive, with_headers(send, noted))

    return limiting


async def refused(scope: Scope, receive: Receive, send: Send, decision: Decision) -> None:
    """Answer 429 (the gateway's error body, ``Retry-After``, ``RateLimit-*``) and log it."""
    started = time.perf_counter()
    raw_id = next((value for name, value in scope["headers"] if name == b"x-request-id"), None)
    request_id = bind_client_request_id(raw_id)
    await deny(scope, receive, send, 429, "rate_limited", decision.message(), request_id, decision.headers())
    method = scope.get("method", "WS") if scope["type"] == "http" else "WS"
    path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
    log_request(method, path, 429, started, f"rate_limited:{decision.kind}")
