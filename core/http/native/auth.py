"""How callers of the native API (seed 000's ``/v1``) authenticate: ``Authorization: Bearer
<api key>``, or in payment mode the gateway's edge token with ``x-dnah-payer``
(``AuthService.authenticate``)."""

from __future__ import annotations

from litestar import Request

from core.http.common.deps import authenticate_bearer
from core.services.auth import Principal


async def provide_principal(request: Request) -> Principal:
    """The caller, for every route of this shape that needs one (401 without a valid key)."""
    return await authenticate_bearer(request)
