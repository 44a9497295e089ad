"""The gateway's ASGI app: wiring only. Served by Granian:
``granian --interface asgi --factory gateway.app:create_app``.

Litestar routes ``GET /health`` to the handler below and every other request, whatever its
method or path, to ``Forwarder``: a raw ASGI app, so Litestar never reads a forwarded body.

In the ``payment`` and ``both`` modes a ``PaymentGate`` stands in front of the forwarder
(see ``gateway.payments``), and the gateway serves the free ``/__mpp/*`` routes itself.

Around the Litestar app, from the outside in: the guard (``guard/``: slow, oversized and
malformed requests refused before any of this runs, with the public error body
``contracts.public.ErrorBody``), the preview router (``gateway.preview``: smuggling-prone
requests refused, preview traffic sent to the core's ``/preview`` mount unpriced), and the
API key and client address rate limits (``gateway.ratelimit``).
"""

from __future__ import annotations

import re
import time
from typing import Any

import msgspec
import structlog
from litestar import Litestar, Request, Response, asgi, get
from litestar.exceptions import HTTPException
from litestar.handlers import BaseRouteHandler
from litestar.types import Scope

from contracts.control import REQUEST_ID_HEADER
from contracts.observability import configure_logging
from contracts.public import ErrorBody
from gateway.apidoc import ServedDocument
from gateway.config import ConfigError, load_config
from gateway.discovery import (
    DiscoverySettings,
    llms_txt,
    mpp_config,
    mpp_health,
    settings_from_config,
)
from gateway.forward import Forwarder, bind_client_request_id, log_request
from gateway.payments import PaymentGate
from gateway.preview import preview_router
from gateway.ratelimit import RateLimiter, limited
from guard import ASGIApp, every_route, guard
from pricing import PricingError

log = structlog.get_logger()


def create_app() -> ASGIApp:
    config = load_config()
    configure_logging("gateway", fmt=config.log_format)
    limiter = RateLimiter(config.ratelimit, config.redis_url)
    gate: PaymentGate | None = None
    if config.payment is not None:
        try:
            gate = PaymentGate(config, limiter)
        except PricingError as exc:
            raise ConfigError(f"DNAH_PRICING_FILE: {exc}") from None
    forwarder = Forwarder(config.core_url, config.upstream_timeout_s, gate)

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

    routes: list[BaseRouteHandler] = [health, forward]
    if gate is not None:
        routes += mpp_routes(gate, forwarder, settings_from_config(config))

    app = Litestar(
        route_handlers=routes,
        lifespan=[limiter, forwarder] if gate is None else [limiter, gate, forwarder],
        after_exception=[_log_unhandled],
        openapi_config=None,  # every path belongs to the core, including /schema
        logging_config=None,  # structlog, configured above, is the only logger
    )
    edge = preview_router(limited(app, limiter), forwarder, config.core_url, limiter, config.preview_domain)
    # Bodies pass through unparsed (only JSON-typed ones are checked): the core decides.
    return guard(edge, config.http, _error_body, byte_streams=every_route)


def _error_body(status: int, code: str, message: str) -> bytes:
    """The guard's refusals look like the gateway's own errors (``forward.send_error``)."""
    return msgspec.json.encode(ErrorBody(status_code=status, message=message, code=code))


_METHOD = re.compile(r"[A-Za-z]{1,16}")


def mpp_routes(
    gate: PaymentGate, forwarder: Forwarder, settings: DiscoverySettings
) -> list[BaseRouteHandler]:
    """The free routes the gateway serves itself in the payment modes: the quote, discovery
    (``/openapi.json``, ``/llms.txt``) and ``/__mpp/health`` and ``/__mpp/config``.

    Discovery is built from the live table (the OpenAPI document once per table), so a price
    reload shows at once; one table therefore feeds the quote, the 402 challenge, OpenAPI and
    llms.txt.
    """

    def _request_id(request: Request) -> str:
        raw_id = request.headers.get(REQUEST_ID_HEADER)
        return bind_client_request_id(raw_id.encode("latin-1") if raw_id else None)

    document = ServedDocument(settings)

    @get("/openapi.json", cache_control=None)
    async def openapi_json(request: Request) -> Response[bytes]:
        headers = {REQUEST_ID_HEADER: _request_id(request), "cache-control": "max-age=300"}
        return Response(document.body(gate.prices.table), headers=headers, media_type="application/json")

    @get("/llms.txt", cache_control=None)
    async def llms(request: Request) -> Response[str]:
        headers = {REQUEST_ID_HEADER: _request_id(request), "cache-control": "max-age=300"}
        # Litestar appends "; charset=utf-8" to a text/* media type itself.
        return Response(llms_txt(gate.prices.table, settings), headers=headers, media_type="text/markdown")

    @get("/__mpp/health", cache_control=None)
    async def health(request: Request) -> Response[dict[str, Any]]:
        request_id = _request_id(request)
        core_ok = await forwarder.core_health(request_id) == "ok"
        return Response(
            mpp_health(settings, core_ok),
            status_code=200 if core_ok else 503,
            headers={REQUEST_ID_HEADER: request_id, "cache-control": "no-cache"},
        )

    @get("/__mpp/config", cache_control=None)
    async def config(request: Request) -> Response[dict[str, Any]]:
        return Response(mpp_config(settings), headers={REQUEST_ID_HEADER: _request_id(request)})

    @get("/__mpp/quote", cache_control=None)
    async def quote(request: Request) -> Response[dict[str, Any]]:
        """What a request costs: ``?method=POST&path=/sandbox`` → ``{method, path, amount,
        price, currency, decimals, free, payable, description}`` (``amount`` in base units)."""
        started = time.perf_counter()
        raw_id = request.headers.get(REQUEST_ID_HEADER)
        request_id = bind_client_request_id(raw_id.encode("latin-1") if raw_id else None)
        method = request.query_params.get("method", "")
        path = request.query_params.get("path", "")
        headers = {REQUEST_ID_HEADER: request_id, "cache-control": "no-cache"}
        if not _METHOD.fullmatch(method) or not path.startswith("/"):
            log_request("GET", "/__mpp/quote", 400, started, "bad_query")
            problem = {
                "type": "https://paymentauth.org/problems/bad-request",
                "title": "Bad Request",
                "status": 400,
                "detail": "give ?method=GET|POST|...&path=/some/path",
            }
            return Response(problem, status_code=400, headers=headers, media_type="application/problem+json")
        log_request("GET", "/__mpp/quote", 200, started)
        return Response(gate.quote_json(method, path), headers=headers)

    return [quote, openapi_json, llms, health, config]


async def _log_unhandled(exc: Exception, scope: Scope) -> None:
    """Keep the traceback of a bug in the log (Litestar answers the client with a bare 500).
    Upstream failures never get here: ``forward`` answers them itself. Litestar's own 404 and
    405 (only possible on ``/health``) are answers, not bugs."""
    if isinstance(exc, HTTPException):
        return
    log.error("unhandled_error", method=scope.get("method"), path=scope.get("path"), exc_info=exc)
