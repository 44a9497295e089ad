"""How an exception becomes an answer, for every shape: which status and code each kind of
error gets is decided here, once; how the body looks is the shape's (a ``Renderer``). Each
shape's ``errors.py`` builds its handlers with ``exception_handlers(its renderer)`` and
registers them on its Router; the app registers ``EXCEPTION_HANDLERS`` (the core's own body,
``{statusCode, message, code}``) for what no shape owns (unknown paths, ``/internal``,
``/metrics``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
import structlog
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException

from contracts.fields import NO_NUL
from contracts.public import ErrorBody
from core.errors import CoreError

log = structlog.get_logger()

Renderer = Callable[[int, str, str], Response[Any]]
"""A shape's error body: ``(status, message, code)`` to the response."""
Handler = Callable[[Request, Any], Response[Any]]

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
}


def render_error_body(status: int, message: str, code: str) -> Response[ErrorBody]:
    """The core's own error body, ``{statusCode, message, code}`` (native and Daytona)."""
    return Response(
        ErrorBody(status_code=status, message=message, code=code),
        status_code=status,
        media_type=MediaType.JSON,
    )


_BODY = "data"
"""The name every handler gives its decoded body; it means nothing to a caller."""
_NO_NUL = f"`str` matching regex {NO_NUL!r}"
"""How msgspec words a ``Text`` field's refusal; said in the caller's terms instead."""


def _describe(item: object) -> str:
    """One complaint, in the caller's terms: the field it is about (``cpu``), or for the body
    as a whole the body's own problem rather than the handler's parameter name — and a missing
    body said plainly (Litestar reports one as the ``KeyError`` of the parameter,
    ``data: 'data'``)."""
    if not isinstance(item, dict):
        return str(item)
    key, message = item.get("key"), plain(str(item.get("message", item)))
    if key == _BODY:
        if message == repr(_BODY):
            return "the request body is empty; expected a JSON object"
        return f"invalid request body: {message}"
    where = "invalid request body: " if item.get("source") == "body" else ""
    return f"{where}{key}: {message}" if key else message


def plain(message: str) -> str:
    """msgspec's complaint with a ``Text`` field's pattern said in words."""
    return message.replace(_NO_NUL, "text without null characters (\\u0000)")


DATABASE_DOWN: tuple[type[Exception], ...] = (
    OSError,  # the socket refused or reset: Postgres is not there
    asyncpg.PostgresConnectionError,  # class 08: the connection broke
    asyncpg.exceptions.OperatorInterventionError,  # class 57: shutting down, starting up, recovering
    asyncpg.InterfaceError,  # a pooled connection found closed under it
    asyncpg.InternalClientError,  # asyncpg's protocol state after a connection died mid-query
)
"""What a request meets while Postgres is down or restarting (a crash, a failover, the
supervisor bringing it back): a 503 the client may retry, not a 500 that reads like a bug."""

RETRY_AFTER_S = 1


def exception_handlers(render: Renderer) -> dict[type[Exception], Handler]:
    """Litestar exception handlers answering with ``render``'s body."""

    def core_error(_: Request, exc: CoreError) -> Response[Any]:
        return render(exc.status_code, exc.message, exc.code)

    def validation_error(_: Request, exc: ValidationException) -> Response[Any]:
        # Litestar puts msgspec's precise complaint ("Expected `int`, got `str` - at `$.cpu`")
        # in ``extra``; that is the part a user can act on.
        details = "; ".join(_describe(item) for item in (exc.extra or []))
        return render(400, details if details else "invalid request", "bad_request")

    def http_error(_: Request, exc: HTTPException) -> Response[Any]:
        return render(exc.status_code, exc.detail, _HTTP_CODES.get(exc.status_code, "error"))

    def database_unavailable(request: Request, exc: Exception) -> Response[Any]:
        log.warning("database_unavailable", path=request.url.path, error=f"{type(exc).__name__}: {exc}")
        response = render(503, "the database is unavailable; retry shortly", "database_unavailable")
        response.headers["retry-after"] = str(RETRY_AFTER_S)
        return response

    def unexpected_error(request: Request, exc: Exception) -> Response[Any]:
        log.exception("unhandled_error", path=request.url.path)
        return render(500, "internal error", "internal_error")

    return {
        CoreError: core_error,
        ValidationException: validation_error,
        HTTPException: http_error,
        **dict.fromkeys(DATABASE_DOWN, database_unavailable),
        Exception: unexpected_error,
    }


EXCEPTION_HANDLERS = exception_handlers(render_error_body)
"""The app's own: what reaches no shape's Router (an unknown path, ``/internal``, ``/metrics``)."""
