"""The gateway's ASGI app: wiring only. Served by Granian:
``granian --interface asgi --factory gateway.app:create_app``.

Litestar routes ``GET /health`` to the handler below and every other request, whatever its
method or path, to ``Forwarder``: a raw ASGI app, so Litestar never reads a forwarded body.
"""

from __future__ import annotations

import time

import structlog
from litestar import Litestar, Request, Response, asgi, get
from litestar.exceptions import HTTPException
from litestar.types import Scope

from contracts.control import REQUEST_ID_HEADER
from contracts.observability import configure_logging
from gateway.config import load_config
from gateway.forward import Forwarder, bind_client_request_id, log_request

log = structlog.get_logger()


def create_app() -> Litestar:
    config = load_config()
    configure_logging("gateway", fmt=config.log_format)
    forwarder = Forwarder(config.core_url, config.upstream_timeout_s)

    @get("/health")
    async def health(request: Request) -> Response[dict[str, str]]:
        """200 when the core answers its own health check, 503 (saying why) when it does not:
        a gateway in front of a dead core cannot serve anything."""
        started = time.perf_counter()
        raw_id = request.headers.get(REQUEST_ID_HEADER)
        request_id = bind_client_request_id(raw_id.encode("latin-1") if raw_id else None)
        core = await forwarder.core_health(request_id)
        status = 200 if core == "ok" else 503
        log_request("GET", "/health", status, started)
        return Response(
            {"status": "ok" if status == 200 else "degraded", "core": core},
            status_code=status,
            headers={REQUEST_ID_HEADER: request_id},
        )

    # A mount at "/" is Litestar's catch-all: every request no plain route (/health) claims,
    # whatever its method. (An ASGI route on "/{path:path}" breaks in Litestar 2.25's path
    # parameter lookup.) The mount rewrites scope["path"]; the forwarder reads raw_path.
    forward = asgi("/", is_mount=True, name="forward", copy_scope=False)(forwarder)

    return Litestar(
        route_handlers=[health, forward],
        lifespan=[forwarder],
        after_exception=[_log_unhandled],
        openapi_config=None,  # every path belongs to the core, including /schema
        logging_config=None,  # structlog, configured above, is the only logger
    )


async def _log_unhandled(exc: Exception, scope: Scope) -> None:
    """Keep the traceback of a bug in the log (Litestar answers the client with a bare 500).
    Upstream failures never get here: ``forward`` answers them itself. Litestar's own 404 and
    405 (only possible on ``/health``) are answers, not bugs."""
    if isinstance(exc, HTTPException):
        return
    log.error("unhandled_error", method=scope.get("method"), path=scope.get("path"), exc_info=exc)
