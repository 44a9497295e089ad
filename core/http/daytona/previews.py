"""Preview URL management, Daytona's shape, over ``PreviewService`` (the URLs:
``core/http/common/previews.py``)."""

from __future__ import annotations

from litestar import Request, get, post
from litestar.di import Provide
from litestar.params import Parameter

from contracts.preview import (
    DaytonaPortPreviewUrl,
    DaytonaSignedPortPreviewUrl,
)
from contracts.public import DaytonaSandbox
from core.errors import BadRequest
from core.http.common.deps import provide_preview
from core.http.common.inputs import DaytonaController
from core.http.common.previews import preview_url
from core.http.daytona.auth import provide_principal
from core.http.daytona.sandboxes import to_daytona, toolbox_base
from core.services.auth import Principal
from core.services.preview import PreviewService

_DEPS = {"principal": Provide(provide_principal), "preview": Provide(provide_preview, sync_to_thread=False)}


class DaytonaPreview(DaytonaController):
    path = "/sandbox/{ref:str}"
    dependencies = _DEPS

    @get("/ports/{port:int}/preview-url")
    async def port_preview_url(
        self, request: Request, ref: str, port: int, principal: Principal, preview: PreviewService
    ) -> DaytonaPortPreviewUrl:
        rec, token = await preview.token(principal.org_id, ref, port)
        return DaytonaPortPreviewUrl(sandbox_id=rec.id, url=preview_url(request, rec.id, port), token=token)

    @get("/ports/{port:int}/signed-preview-url")
    async def signed_preview_url(
        self,
        request: Request,
        ref: str,
        port: int,
        principal: Principal,
        preview: PreviewService,
        expires_in_seconds: int | None = Parameter(query="expiresInSeconds", default=None),
    ) -> DaytonaSignedPortPreviewUrl:
        signed = await preview.sign(principal.org_id, ref, port, expires_in_seconds)
        url = preview_url(request, signed.sandbox.id, port) + "?dnah_preview_token=" + signed.token
        return DaytonaSignedPortPreviewUrl(
            sandbox_id=signed.sandbox.id, port=port, token=signed.token, url=url
        )

    @post("/ports/{port:int}/signed-preview-url/{token:str}/expire", status_code=200)
    async def expire_signed_preview_url(
        self, ref: str, port: int, token: str, principal: Principal, preview: PreviewService
    ) -> None:
        """The URL stops working at once (its cookie too)."""
        await preview.expire_signed(principal.org_id, ref, port, token)

    @post("/public/{is_public:str}", status_code=200)
    async def set_public(
        self, request: Request, ref: str, is_public: str, principal: Principal, preview: PreviewService
    ) -> DaytonaSandbox:
        """The SDK writes the flag as Python prints it (``True``); any case is taken."""
        flag = {"true": True, "false": False}.get(is_public.lower())
        if flag is None:
            raise BadRequest(f"public must be true or false, got {is_public!r}")
        rec = await preview.configure(principal.org_id, ref, public=flag)
        return to_daytona(rec, toolbox_base(request))
