"""Preview URL management, native shape, over ``PreviewService`` (the URLs:
``core/http/common/previews.py``)."""

from __future__ import annotations

from datetime import datetime

from litestar import Request, delete, get, post, put
from litestar.di import Provide

from contracts.preview import (
    Expose,
    Exposure,
    ExposureList,
    PreviewSettings,
)
from contracts.public import Sandbox
from core.db import previews as previews_db
from core.http.common.deps import provide_preview
from core.http.common.formats import iso
from core.http.common.inputs import NativeController
from core.http.common.previews import preview_url
from core.http.native.auth import provide_principal
from core.http.native.sandboxes import to_native
from core.services.auth import Principal
from core.services.preview import PreviewService

_DEPS = {"principal": Provide(provide_principal), "preview": Provide(provide_preview, sync_to_thread=False)}


def _exposure(request: Request, exposure: previews_db.Exposure) -> Exposure:
    return Exposure(
        url=preview_url(request, exposure.sandbox_id, exposure.port),
        token=exposure.token,
        port=exposure.port,
        public=exposure.public,
        expires_at=iso(exposure.expires_at) if isinstance(exposure.expires_at, datetime) else None,
    )


class NativePreview(NativeController):
    path = "/v1/sandboxes/{sandbox_id:str}"
    dependencies = _DEPS

    @post("/expose", status_code=201)
    async def expose(
        self, request: Request, sandbox_id: str, data: Expose, principal: Principal, preview: PreviewService
    ) -> Exposure:
        _, exposure = await preview.expose(
            principal.org_id, sandbox_id, data.port, public=data.public, ttl_s=data.ttl_seconds
        )
        return _exposure(request, exposure)

    @get("/expose")
    async def exposures(
        self, request: Request, sandbox_id: str, principal: Principal, preview: PreviewService
    ) -> ExposureList:
        _, found = await preview.exposures(principal.org_id, sandbox_id)
        return ExposureList(items=[_exposure(request, e) for e in found])

    @delete("/expose/{port:int}", status_code=204)
    async def unexpose(
        self, sandbox_id: str, port: int, principal: Principal, preview: PreviewService
    ) -> None:
        """The port's token stops working at once."""
        await preview.unexpose(principal.org_id, sandbox_id, port)

    @put("/preview", status_code=200)
    async def settings(
        self,
        sandbox_id: str,
        principal: Principal,
        preview: PreviewService,
        data: PreviewSettings | None = None,
    ) -> Sandbox:
        data = data or PreviewSettings()
        rec = await preview.configure(
            principal.org_id, sandbox_id, public=data.public, wake_on_traffic=data.wake_on_traffic
        )
        return to_native(rec)
