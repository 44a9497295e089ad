"""How callers of E2B's control plane authenticate: the SDK sends our API key as
``X-API-KEY``; ``Authorization: Bearer <key>`` works too, and in payment mode the gateway's
edge token with ``x-dnah-payer`` (it replaces the client's credentials with them). A bearer
``Authorization`` wins over ``X-API-KEY``."""

from __future__ import annotations

from litestar import Request

from contracts.e2b import API_KEY_HEADER
from core.errors import Unauthorized
from core.http.common.deps import authenticate_bearer
from core.services.auth import AuthService, Principal


async def provide_principal(request: Request) -> Principal:
    """The caller, for every control-plane route (401 without a valid key)."""
    authorization = request.headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        return await authenticate_bearer(request)
    key = request.headers.get(API_KEY_HEADER, "").strip()
    if not key:
        raise Unauthorized("missing API key: send it as X-API-KEY")
    auth: AuthService = request.app.state.auth
    return await auth.authenticate(f"Bearer {key}")
