"""Litestar reports a body that fails validation by the failing field's own name, and calls
the failure an internal error (500) when that name is also one of the handler's dependencies
(it takes the failure for a broken dependency). A handler whose body has a field named like a
dependency therefore answers a client's bad body with a 500: ``{"files": {}}`` against the
replace routes did, while their file service was injected as ``files``. Dependency names must
not be body field names, at any depth."""

from __future__ import annotations

import typing

import msgspec
from litestar import Litestar
from litestar.handlers import HTTPRouteHandler

from core.http.app import ROUTE_HANDLERS


def _field_names(annotation: object, seen: set[type]) -> set[str]:
    """Every field name (Python and wire spelling) a msgspec body type holds, nested ones too."""
    names: set[str] = set()
    for arg in typing.get_args(annotation):
        names |= _field_names(arg, seen)
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct) and annotation not in seen:
        seen.add(annotation)
        info = msgspec.inspect.type_info(annotation)
        assert isinstance(info, msgspec.inspect.StructType)
        for field in info.fields:
            names |= {field.name, field.encode_name}
        for hint in typing.get_type_hints(annotation).values():
            names |= _field_names(hint, seen)
    return names


def test_no_dependency_is_named_like_a_body_field() -> None:
    app = Litestar(route_handlers=ROUTE_HANDLERS, openapi_config=None)
    clashes = []
    checked = 0
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            if not isinstance(handler, HTTPRouteHandler):
                continue
            data = handler.parsed_fn_signature.parameters.get("data")
            if data is None:
                continue
            checked += 1
            fields = _field_names(data.annotation, set())
            for name in set(handler.resolve_dependencies()) & fields:
                clashes.append(f"{sorted(handler.http_methods)} {route.path}: dependency {name!r}")
    assert checked > 50, "the walk found too few handlers with a body to mean anything"
    assert not clashes, "dependencies named like body fields (a bad body is a 500):\n" + "\n".join(clashes)
