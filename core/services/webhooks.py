"""Webhook subscriptions: create (validated; the secret shown once), list, delete, deliveries.

A webhook belongs to an org; another org's webhook is a 404, as everywhere in the API. Its
secret is stored as given, not hashed, because the dispatcher needs it to sign every
delivery (``core/services/webhook_dispatch.py``); it is never shown again after the create.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import socket
from datetime import UTC, datetime
from urllib.parse import urlsplit

import asyncpg

from contracts.public import WEBHOOK_EVENTS
from core.db import webhooks as webhooks_db
from core.db.webhooks import DeliveryRecord, WebhookRecord
from core.errors import BadRequest, Conflict, NotFound
from core.services.auth import new_id

MAX_WEBHOOKS_PER_ORG = 25
MAX_URL_LENGTH = 2048
MIN_SECRET_LENGTH = 16
MAX_SECRET_LENGTH = 256


def check_url(url: str, *, allow_private: bool = False) -> str:
    """http(s) with a host, no credentials (they would be sent in clear to every redirect
    and shown in listings; use the signature to authenticate the sender instead), and —
    unless ``allow_private`` — not a loopback, private or link-local address: a webhook must
    not be a way to make the core call its own network. Host names are checked again, after
    resolution, at every delivery (``check_destination``)."""
    if len(url) > MAX_URL_LENGTH:
        raise BadRequest(f"url is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        raise BadRequest(f"url is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise BadRequest(f"url must be http:// or https://, got {url!r}")
    if not parts.hostname:
        raise BadRequest(f"url has no host: {url!r}")
    if parts.username is not None or parts.password is not None:
        raise BadRequest("url must not carry credentials (user:password@); verify the signature instead")
    if any(c.isspace() for c in url):
        raise BadRequest("url must not contain whitespace")
    if not allow_private:
        reason = _local_reason(parts.hostname)
        if reason:
            raise BadRequest(f"url {reason}; set DNAH_WEBHOOK_ALLOW_PRIVATE=1 to allow it (development)")
    return url


def _local_reason(host: str) -> str | None:
    """Why ``host`` (a name or an address literal) is local, or None."""
    name = host.rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return f"names this machine ({host})"
    try:
        address = ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return None
    if not address.is_global:
        return f"names a loopback, private or link-local address ({host})"
    return None


async def check_destination(url: str) -> str | None:
    """Resolve ``url``'s host and return why it must not be called (an address that is not
    global), or None. Run before each delivery, so a name that starts resolving to an inside
    address later is refused too. (httpx resolves again when it connects; a resolver that
    answers differently within that instant is not defended against.)"""
    parts = urlsplit(url)
    host = parts.hostname or ""
    reason = _local_reason(host)
    if reason:
        return reason
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM)
    except OSError as exc:
        return f"cannot resolve {host}: {exc}"
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(sockaddr[0])
        if not address.is_global:
            return f"{host} resolves to a loopback, private or link-local address ({address})"
    return None


def check_events(events: list[str]) -> list[str]:
    if not events:
        raise BadRequest('events must name at least one event (or "*" for all)')
    allowed = ("*", *WEBHOOK_EVENTS)
    if len(events) > len(allowed):
        raise BadRequest(f"events lists more than the {len(allowed)} possible values")
    for event in events:
        if event not in allowed:
            raise BadRequest(f"unknown event {event!r}; one of {', '.join(allowed)}")
    return sorted(set(events))


def check_secret(secret: str | None) -> str:
    if secret is None:
        return "whsec_" + secrets.token_urlsafe(32)
    if not MIN_SECRET_LENGTH <= len(secret) <= MAX_SECRET_LENGTH:
        raise BadRequest(f"secret must be {MIN_SECRET_LENGTH} to {MAX_SECRET_LENGTH} characters long")
    if not secret.isprintable() or any(c.isspace() for c in secret):
        raise BadRequest("secret must be printable characters without whitespace")
    return secret


class WebhookService:
    def __init__(self, db: asyncpg.Pool, *, allow_private: bool = False) -> None:
        self._db = db
        self._allow_private = allow_private

    async def create(self, org_id: str, *, url: str, events: list[str], secret: str | None) -> WebhookRecord:
        rec = WebhookRecord(
            id=new_id("wh"),
            org_id=org_id,
            url=check_url(url, allow_private=self._allow_private),
            events=check_events(events),
            secret=check_secret(secret),
            created_at=datetime.now(UTC),
        )
        if await webhooks_db.count_for_org(self._db, org_id) >= MAX_WEBHOOKS_PER_ORG:
            raise Conflict(f"an org may have at most {MAX_WEBHOOKS_PER_ORG} webhooks; delete one first")
        return await webhooks_db.insert(self._db, rec)

    async def list_for_org(self, org_id: str) -> list[WebhookRecord]:
        return await webhooks_db.list_for_org(self._db, org_id)

    async def delete(self, org_id: str, webhook_id: str) -> None:
        if not await webhooks_db.delete(self._db, org_id, webhook_id):
            raise NotFound(f"webhook {webhook_id!r} not found")

    async def redeliver(self, org_id: str, webhook_id: str, delivery_id: str) -> DeliveryRecord:
        """Send a dead delivery again from scratch (attempts reset); 409 unless it is dead."""
        if await webhooks_db.get(self._db, org_id, webhook_id) is None:
            raise NotFound(f"webhook {webhook_id!r} not found")
        outcome = await webhooks_db.redeliver(self._db, webhook_id, delivery_id)
        if outcome == "missing":
            raise NotFound(f"delivery {delivery_id!r} not found")
        if isinstance(outcome, str):
            raise Conflict(f"delivery {delivery_id!r} is {outcome}; only a dead delivery is sent again")
        return outcome

    async def deliveries(self, org_id: str, webhook_id: str, limit: int) -> list[DeliveryRecord]:
        if await webhooks_db.get(self._db, org_id, webhook_id) is None:
            raise NotFound(f"webhook {webhook_id!r} not found")
        return await webhooks_db.deliveries(self._db, webhook_id, limit)
