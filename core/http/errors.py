"""Every error leaves the core as ``{statusCode, message, code}`` — chosen here, once."""

from __future__ import annotations

import structlog
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException

from contracts.public import ErrorBody
from core.errors import CoreError

log = structlog.get_logger()

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


def _render(status: int, message: str, code: str) -> Response[ErrorBody]:
    return Response(
        ErrorBody(status_code=status, message=message, code=code),
        status_code=status,
        media_type=MediaType.JSON,
    )


def core_error(_: Request, exc: CoreError) -> Response[ErrorBody]:
    return _render(exc.status_code, exc.message, exc.code)


def validation_error(_: Request, exc: ValidationException) -> Response[ErrorBody]:
    # Litestar puts msgspec's precise complaint ("Expected `int`, got `str` - at `$.cpu`")
    # in ``extra``; that is the part a user can act on.
    details = "; ".join(_describe(item) for item in (exc.extra or []))
    message = f"invalid request body: {details}" if details else "invalid request"
    return _render(400, message, "bad_request")


def _describe(item: object) -> str:
    if not isinstance(item, dict):
        return str(item)
    key = item.get("key")
    return f"{key}: {item.get('message')}" if key else str(item.get("message", item))


def http_error(_: Request, exc: HTTPException) -> Response[ErrorBody]:
    return _render(exc.status_code, exc.detail, _HTTP_CODES.get(exc.status_code, "error"))


def unexpected_error(request: Request, exc: Exception) -> Response[ErrorBody]:
    log.exception("unhandled_error", path=request.url.path)
    return _render(500, "internal error", "internal_error")


EXCEPTION_HANDLERS = {
    CoreError: core_error,
    ValidationException: validation_error,
    HTTPException: http_error,
    Exception: unexpected_error,
}
