"""What a request's URL and headers may be, checked before its handler runs.

Bodies are checked by their wire types (``contracts/fields.py``) as Litestar decodes them;
this module covers what no body type sees, as guards that every public controller inherits
from one of the two bases below (docs/reliability.md, "Bad input"):

- no NUL in a path parameter or a query value, on every route (400): nothing in a sandbox or
  in Postgres can take one, so it can only fail later, as a 500 or a 502;
- a body for a route that decodes JSON must be JSON: a declared ``Content-Type`` other than
  ``application/json`` (or ``…+json``) is a 415; no ``Content-Type`` at all is taken as JSON;
- native ``/v1`` routes only, which refuse unknown body fields for the same reason: an unknown
  query parameter is a 400 (``?states=`` for ``?state=``, ``?recursive=`` for ``?recurse=``
  would otherwise silently mean something else), and so is a body on a route that takes none
  (other than an empty one or ``{}``, which every route takes as "all defaults").
  Daytona routes ignore both, because the Daytona SDK sends more than we act on.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request
from litestar.connection import ASGIConnection
from litestar.exceptions import ClientException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import Parameter

from contracts.fields import INT32_MAX, INT32_MIN
from core.errors import BadRequest

Int32Param = Annotated[int, Parameter(ge=INT32_MIN, le=INT32_MAX)]
"""An integer path or query parameter that Postgres' ``integer`` holds."""

_JSON = "application/json"
_UNSUPPORTED_MEDIA_TYPE = 415
_OWN_BODY = frozenset({"data", "request"})
"""A handler with one of these parameters reads the body (decoded, or as a stream)."""
_query_names: dict[BaseRouteHandler, frozenset[str]] = {}

Connection = ASGIConnection[Any, Any, Any, Any]


def well_formed(connection: Connection, handler: BaseRouteHandler) -> None:
    """Every public route: no NUL in the URL, JSON bodies declared as JSON."""
    for where, values in (("path", connection.path_params.values()), ("query", _query_values(connection))):
        if any(isinstance(v, str) and "\x00" in v for v in values):
            raise BadRequest(f"the {where} must not contain NUL (%00)")
    if "data" in handler.parsed_fn_signature.parameters and _has_body(connection):
        media_type = connection.headers.get("content-type", _JSON).split(";", 1)[0].strip().lower()
        if media_type != _JSON and not media_type.endswith("+json"):
            raise ClientException(
                f"this route takes a JSON body (content-type: {_JSON}), not {media_type!r}",
                status_code=_UNSUPPORTED_MEDIA_TYPE,
            )


async def strict(connection: Connection, handler: BaseRouteHandler) -> None:
    """Native routes: only the query parameters the route declares, and no body it would
    ignore (an empty one, or ``{}``, is no body: "every default", as for optional bodies)."""
    unknown = sorted(set(connection.query_params) - _declared_query(connection, handler))
    if unknown:
        raise BadRequest(f"unknown query parameter {unknown[0]!r}")
    takes_body = _OWN_BODY & handler.parsed_fn_signature.parameters.keys()
    if takes_body or not _has_body(connection) or not isinstance(connection, Request):
        return
    try:
        empty = msgspec.json.decode(await connection.body()) == {}
    except msgspec.DecodeError:
        empty = False
    if not empty:
        raise BadRequest("this route takes no request body (an empty one or {} is fine)")


class NativeController(Controller):
    """The base of the native ``/v1`` controllers."""

    guards = [well_formed, strict]


class DaytonaController(Controller):
    """The base of the Daytona-shaped controllers."""

    guards = [well_formed]


def _query_values(connection: Connection) -> list[str]:
    return [value for _, value in connection.query_params.multi_items()]


def _has_body(connection: Connection) -> bool:
    length = connection.headers.get("content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return "transfer-encoding" in connection.headers


def _declared_query(connection: Connection, handler: BaseRouteHandler) -> frozenset[str]:
    """The query parameters ``handler`` (with its dependencies) reads, worked out once."""
    names = _query_names.get(handler)
    if names is None:
        model = handler.create_kwargs_model(path_parameters=dict.fromkeys(connection.path_params))  # type: ignore[arg-type]
        names = frozenset(p.field_alias for p in model.expected_query_params)
        _query_names[handler] = names
    return names
