"""Webhook subscriptions: create (validated; the secret shown once), list, delete, deliveries.

A webhook belongs to an org; another org's webhook is a 404, as everywhere in the API. Its
secret is stored as given, not hashed, because the dispatcher needs it to sign every
delivery (``core/services/webhook_dispatch.py``); it is never shown again after the create.
"""

from __future__ import annotations

import secrets
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


def check_url(url: str) -> str:
    """http(s) with a host, no credentials (they would be sent in clear to every redirect
    and shown in listings; use the signature to authenticate the sender instead)."""
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
    return url


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
    def __init__(self, db: asyncpg.Pool) -> None:
        self._db = db

    async def create(self, org_id: str, *, url: str, events: list[str], secret: str | None) -> WebhookRecord:
        rec = WebhookRecord(
            id=new_id("wh"),
            org_id=org_id,
            url=check_url(url),
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

    async def deliveries(self, org_id: str, webhook_id: str, limit: int) -> list[DeliveryRecord]:
        if await webhooks_db.get(self._db, org_id, webhook_id) is None:
            raise NotFound(f"webhook {webhook_id!r} not found")
        return await webhooks_db.deliveries(self._db, webhook_id, limit)
