"""The native ``/v1/webhooks`` routes over ``WebhookService`` (docs/webhooks.md)."""

from __future__ import annotations

from datetime import datetime

from litestar import delete, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import Parameter

from contracts.public import (
    CreateWebhook,
    Webhook,
    WebhookCreated,
    WebhookDelivery,
    WebhookDeliveryList,
    WebhookList,
)
from core.db.webhooks import DeliveryRecord
from core.http.common.formats import iso
from core.http.common.inputs import NativeController
from core.http.native.auth import provide_principal
from core.services.auth import Principal
from core.services.webhooks import WebhookService

REDACTED = "[redacted]"


def provide_webhooks(state: State) -> WebhookService:
    return state.webhooks


def _iso(ts: datetime | None) -> str | None:
    return iso(ts) if ts is not None else None


class NativeWebhooks(NativeController):
    path = "/v1/webhooks"
    dependencies = {
        "principal": Provide(provide_principal),
        "webhooks": Provide(provide_webhooks, sync_to_thread=False),
    }

    @post("/", status_code=201)
    async def create(
        self, data: CreateWebhook, principal: Principal, webhooks: WebhookService
    ) -> WebhookCreated:
        rec = await webhooks.create(principal.org_id, url=data.url, events=data.events, secret=data.secret)
        return WebhookCreated(
            id=rec.id, url=rec.url, events=rec.events, secret=rec.secret, created_at=iso(rec.created_at)
        )

    @get("/")
    async def list_webhooks(self, principal: Principal, webhooks: WebhookService) -> WebhookList:
        items = [
            Webhook(id=r.id, url=r.url, events=r.events, secret=REDACTED, created_at=iso(r.created_at))
            for r in await webhooks.list_for_org(principal.org_id)
        ]
        return WebhookList(items=items)

    @delete("/{webhook_id:str}", status_code=204)
    async def remove(self, webhook_id: str, principal: Principal, webhooks: WebhookService) -> None:
        await webhooks.delete(principal.org_id, webhook_id)

    @get("/{webhook_id:str}/deliveries")
    async def deliveries(
        self,
        webhook_id: str,
        principal: Principal,
        webhooks: WebhookService,
        limit: int = Parameter(default=100, ge=1, le=1000),
    ) -> WebhookDeliveryList:
        """Newest first: pending, delivered and dead deliveries with their last outcome."""
        records = await webhooks.deliveries(principal.org_id, webhook_id, limit)
        return WebhookDeliveryList(items=[_delivery_out(d) for d in records])

    @post("/{webhook_id:str}/deliveries/{delivery_id:str}/retry", status_code=202)
    async def redeliver(
        self, webhook_id: str, delivery_id: str, principal: Principal, webhooks: WebhookService
    ) -> WebhookDelivery:
        """Send a dead delivery again (same id and body; attempts start over)."""
        return _delivery_out(await webhooks.redeliver(principal.org_id, webhook_id, delivery_id))


def _delivery_out(d: DeliveryRecord) -> WebhookDelivery:
    return WebhookDelivery(
        id=d.id,
        event=d.event,
        status=d.status,
        attempts=d.attempts,
        next_attempt_at=_iso(d.next_attempt_at) if d.status == "pending" else None,
        delivered_at=_iso(d.delivered_at),
        last_status=d.last_status,
        last_error=d.last_error,
        created_at=iso(d.created_at),
    )
