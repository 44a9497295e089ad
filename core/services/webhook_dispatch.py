"""The webhook dispatcher: sends the deliveries the outbox triggers queued, at least once.

Every core runs one. It wakes on ``NOTIFY dnah_webhooks`` (sent by the trigger when its
transaction commits) and polls every ``poll_interval_s`` anyway, in case a notification was
missed (the listening connection dropped, or a retry fell due). A claim is a lease committed
before the request goes out (``core.db.webhooks.claim``): replicas never take the same
delivery at once, and a core killed mid-send leaves it to be sent again when the lease ends.
That is why delivery is *at least once*: receivers dedupe on ``x-dnah-delivery-id``.

A 2xx answer delivers; anything else (another status, a redirect, a timeout, a refused
connection) schedules a retry with exponential backoff and jitter, until ``max_attempts``
makes the delivery dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import random
import time

import asyncpg
import httpx
import structlog

from core.config import WebhookConfig
from core.db import webhooks as webhooks_db
from core.db.webhooks import ClaimedDelivery
from core.services.webhooks import check_destination

log = structlog.get_logger()

CHANNEL = "dnah_webhooks"
BATCH = 32
LEASE_MARGIN_S = 5.0
PRUNE_EVERY_S = 60.0


def sign(secret: str, body: bytes) -> str:
    """The ``x-dnah-signature`` value: ``sha256=`` and the hex HMAC-SHA-256 of the raw body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def retry_delay(config: WebhookConfig, attempts: int) -> float | None:
    """Seconds until the next attempt after ``attempts`` failed ones; None: give up."""
    if attempts >= config.max_attempts:
        return None
    delay = min(config.backoff_s * 2 ** (attempts - 1), config.backoff_max_s)
    return delay * (1 + random.uniform(0, 0.1))


class Dispatcher:
    def __init__(self, db: asyncpg.Pool, config: WebhookConfig, *, database_url: str | None = None) -> None:
        self._db = db
        self._config = config
        self._database_url = database_url
        self._wake = asyncio.Event()
        self._client = httpx.AsyncClient(timeout=config.timeout_s, follow_redirects=False)
        self._listener: asyncpg.Connection | None = None

    async def run(self) -> None:
        """Send until cancelled; never lets an error end the loop. Once a minute, old
        finished deliveries are pruned (``retention_days``)."""
        next_prune = 0.0
        while True:
            try:
                await self._ensure_listener()
                while await self.run_once():
                    pass
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + PRUNE_EVERY_S
                    pruned = await webhooks_db.prune(self._db, self._config.retention_days)
                    if pruned:
                        log.info("webhook_deliveries_pruned", deliveries=pruned)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook_dispatch_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._config.poll_interval_s)
            self._wake.clear()

    async def run_once(self) -> int:
        """Claim what is due and send it; return how many were sent (0: nothing was due)."""
        claimed = await webhooks_db.claim(
            self._db, limit=BATCH, lease_s=self._config.timeout_s + LEASE_MARGIN_S
        )
        await asyncio.gather(*(self._send(d) for d in claimed))
        return len(claimed)

    async def close(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
        await self._client.aclose()

    async def _ensure_listener(self) -> None:
        if self._database_url is None or (self._listener is not None and not self._listener.is_closed()):
            return
        try:
            conn = await asyncpg.connect(self._database_url)
            await conn.add_listener(CHANNEL, lambda *_: self._wake.set())
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("webhook_listen_failed", error=str(exc))  # polling still works
            return
        self._listener = conn

    async def _send(self, d: ClaimedDelivery) -> None:
        body = json.dumps(d.payload, separators=(",", ":"), ensure_ascii=False).encode()
        headers = {
            "content-type": "application/json",
            "user-agent": "dnah-webhooks/1",
            "x-dnah-event": d.event,
            "x-dnah-delivery-id": d.id,
            "x-dnah-signature": sign(d.secret, body),
        }
        status: int | None = None
        refused = None if self._config.allow_private else await check_destination(d.url)
        if refused:
            error = f"refused: {refused}"
        else:
            try:
                resp = await self._client.post(d.url, content=body, headers=headers)
                status = resp.status_code
                error = "" if resp.is_success else f"the receiver answered {status}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if not error and status is not None:
            await webhooks_db.mark_delivered(self._db, d.id, status)
            log.info("webhook_delivered", delivery_id=d.id, webhook_id=d.webhook_id, attempts=d.attempts)
            return
        delay = retry_delay(self._config, d.attempts)
        await webhooks_db.mark_failed(self._db, d.id, status=status, error=error, retry_in_s=delay)
        log.warning(
            "webhook_failed" if delay is not None else "webhook_dead",
            delivery_id=d.id,
            webhook_id=d.webhook_id,
            attempts=d.attempts,
            error=error,
            retry_in_s=delay,
        )
