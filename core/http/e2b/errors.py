"""E2B errors: ``{"code": <status>, "message": …}`` (``contracts.e2b_api.Error``), the body the
SDK reads for every failure, registered on the shape's Router. Which status each error gets is
``core/http/common/errors.py``'s."""

from __future__ import annotations

from litestar import MediaType, Response

from contracts.e2b_api import E2bError
from core.http.common.errors import exception_handlers


def render_e2b_error(status: int, message: str, _code: str) -> Response[E2bError]:
    return Response(E2bError(code=status, message=message), status_code=status, media_type=MediaType.JSON)


EXCEPTION_HANDLERS = exception_handlers(render_e2b_error)
