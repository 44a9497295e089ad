"""native errors: ``{statusCode, message, code}`` (``contracts.public.ErrorBody``), registered on
the shape's Router. Which status and code each error gets is ``core/http/common/errors.py``'s."""

from __future__ import annotations

from core.http.common.errors import exception_handlers, render_error_body

EXCEPTION_HANDLERS = exception_handlers(render_error_body)
