"""Regenerate ``contracts/core_routes.py`` from the core's real route handlers.

    .venv/bin/python -m tests.contracts.core_routes_gen

The list lives in ``contracts`` so the gateway can read it without importing the core; this
module (which may import the core: it is a test helper) writes it, and
``tests/contracts/test_core_routes.py`` fails whenever the core and the list differ. The same
command rewrites ``contracts/core_openapi.json`` (``tests/contracts/core_openapi_gen.py``).
"""

from __future__ import annotations

import re
from pathlib import Path

from litestar import Litestar
from litestar.routes import HTTPRoute, WebSocketRoute

from core.http.app import ROUTE_HANDLERS
from tests.contracts import core_openapi_gen

CONTRACT = Path(__file__).resolve().parents[2] / "contracts" / "core_routes.py"
COMMAND = ".venv/bin/python -m tests.contracts.core_routes_gen"
WEBSOCKET = "WEBSOCKET"

_PARAM = re.compile(r"\{(\w+):(\w+)\}")
_TYPES = {"str": "", "int": ":int"}
"""Parameter types the gateway's matcher (``gateway/served.py``) understands, and how the
contract writes them: a ``str`` parameter as plain ``{name}``."""


def core_app() -> Litestar:
    """The core's router: its route handlers with no lifespan, database or OpenAPI document
    (``create_app`` builds the same routes, with ``openapi_config=None`` too)."""
    return Litestar(route_handlers=ROUTE_HANDLERS, openapi_config=None)


def template(path: str) -> str:
    """A Litestar route path in the contract's spelling: ``/sandbox/{ref:str}/autostop/{interval:int}``
    → ``/sandbox/{ref}/autostop/{interval:int}``."""

    def spell(match: re.Match[str]) -> str:
        name, kind = match[1], match[2]
        if kind not in _TYPES:
            raise SystemExit(
                f"{path}: a {kind!r} path parameter; gateway/served.py matches only "
                f"{sorted(_TYPES)} — teach it {kind!r} (as the core's router parses it) first"
            )
        return "{" + name + _TYPES[kind] + "}"

    return _PARAM.sub(spell, path)


def served_by_core() -> list[tuple[str, str]]:
    """Every (method, path template) the core serves, sorted by path then method."""
    pairs: set[tuple[str, str]] = set()
    for route in core_app().routes:
        if isinstance(route, HTTPRoute):
            pairs.update((method, template(route.path)) for method in route.methods)
        elif isinstance(route, WebSocketRoute):
            pairs.add((WEBSOCKET, template(route.path)))
        else:
            raise SystemExit(f"{route.path}: a mounted ASGI app; gateway/served.py cannot match it")
    return sorted(pairs, key=lambda pair: (pair[1], pair[0]))


HEADER = '''"""The routes the core serves, as plain data: what the gateway's payment gate may sell.

The gateway never charges for a request the core has no route for (docs/pricing.md, "Routes
the core does not serve are never charged"); it learns which those are from this list, not by
importing the core. Each pair is (method, path template) as the core declares it: ``{name}``
is one path segment, ``{name:int}`` one that parses as an integer. ``OPTIONS`` is on every
HTTP path because the core's framework answers it there; ``WEBSOCKET`` marks a WebSocket
route (no HTTP method reaches it, but its path takes part in routing; the ``GET`` beside it
is the plain request without the upgrade, which the core answers 426). ``gateway/served.py``
resolves requests against the list the way the core's router does.

Generated from the core's route handlers (core/http/app.py ``ROUTE_HANDLERS``); do not edit:

    {command}

``tests/contracts/test_core_routes.py`` fails whenever the core and this list differ.
"""

CORE_ROUTES: tuple[tuple[str, str], ...] = (
'''


def render(pairs: list[tuple[str, str]]) -> str:
    rows = "".join(f'    ("{method}", "{path}"),\n' for method, path in pairs)
    return HEADER.replace("{command}", COMMAND) + rows + ")\n"


def main() -> None:
    pairs = served_by_core()
    CONTRACT.write_text(render(pairs))
    print(f"wrote {len(pairs)} routes to {CONTRACT}")
    core_openapi_gen.main()


if __name__ == "__main__":
    main()
