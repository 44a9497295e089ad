"""Which requests the core serves, known without running it.

The gateway's payment gate asks before it charges: a route the core does not serve (a path
no handler has, or a method its path does not take) is never sold — the core's 404 or 405 is
passed on for free, whatever the price table says (a wildcard row, the default price, or a
row for a route not built yet). The answer comes from the core's own route handlers,
resolved by Litestar's router exactly as the core resolves a request, so the two cannot
drift apart.
"""

from __future__ import annotations

from urllib.parse import unquote

from litestar import Litestar
from litestar.exceptions import HTTPException

from core.http.app import ROUTE_HANDLERS


class CoreRoutes:
    def __init__(self) -> None:
        # Only the router is used: no lifespan, no database, no OpenAPI document.
        self._app = Litestar(route_handlers=ROUTE_HANDLERS, openapi_config=None)

    def serves(self, method: str, path: str) -> bool:
        """Whether the core has a handler for ``method`` on ``path`` (as the core sees it:
        after the gateway's toolbox rewrite; a query string is ignored)."""
        path = unquote(path.split("?", 1)[0])
        path = "/" + path.strip("/")
        try:
            self._app.asgi_router.handle_routing(path=path, method=method.upper())
        except HTTPException:  # not found, method not allowed, a path parameter of the wrong type
            return False
        return True
