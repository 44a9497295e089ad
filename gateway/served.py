"""Which requests the core serves, answered from the contract (``contracts/core_routes.py``)
without importing or asking the core.

The payment gate never sells a route the core does not have: a path no route takes, a method
its path does not take, or a path parameter that does not parse is passed on unpaid and the
core answers 404 or 405 for free. So the answer must be the core's router's answer, and this
matcher follows that router (Litestar's) rule by rule:

- the path is percent-decoded, stripped of trailing ``/`` and its runs of ``/`` collapsed;
- a route without parameters is matched whole, first, and takes no part in the walk below
  (``/internal/hosts/register/heartbeat`` is a heartbeat from host ``register``);
- otherwise the path is walked segment by segment through the routes with parameters, a
  literal segment winning over a parameter at the same place, with no backtracking:
  ``POST /toolbox/{id}/process/pty/create-connect/resize`` takes the ``create-connect``
  branch (a WebSocket route) and is not found, though ``…/pty/{session_id}/resize`` would
  fit it;
- the method must be one the route at the end takes (a WebSocket route takes none);
- an ``{name:int}`` parameter must parse as an integer (``int()``), else it is not found.

``tests/contracts/test_core_routes.py`` checks the list against the core's route handlers and
this matcher against the core's router, path by path. E2B's envd routes (``/envd/{id}/…``) are
served by a raw ASGI adapter in front of that router, so they come from their own contract,
``contracts.e2b.ENVD_ROUTES``, and join the table here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote

from contracts.core_routes import CORE_ROUTES
from contracts.e2b import ENVD_ROUTES

_SLASHES = re.compile("//+")


class _Node:
    __slots__ = ("literals", "methods", "param")

    def __init__(self) -> None:
        self.literals: dict[str, _Node] = {}
        self.param: _Node | None = None
        self.methods: dict[str, tuple[bool, ...]] = {}
        """Method → for each path parameter on the way here, whether it must be an int."""


class ServedRoutes:
    """The core's route table, ready to answer ``serves(method, path)``."""

    def __init__(self, routes: Iterable[tuple[str, str]] = CORE_ROUTES + ENVD_ROUTES) -> None:
        self._plain: dict[str, frozenset[str]] = {}
        self._root = _Node()
        plain: dict[str, set[str]] = {}
        for method, template in routes:
            segments = [seg for seg in template.split("/") if seg]
            if not any(seg.startswith("{") for seg in segments):
                plain.setdefault("/" + "/".join(segments), set()).add(method)
                continue
            node = self._root
            ints: list[bool] = []
            for seg in segments:
                if seg.startswith("{"):
                    node.param = node.param or _Node()
                    node = node.param
                    ints.append(seg.endswith(":int}"))
                else:
                    node = node.literals.setdefault(seg, _Node())
            node.methods[method] = tuple(ints)
        self._plain = {path: frozenset(methods) for path, methods in plain.items()}

    def serves(self, method: str, path: str) -> bool:
        """Whether the core has a route for ``method path``. ``path`` is as the core receives
        it (after the gateway's toolbox rewrite), still percent-encoded; a query string is
        ignored. ``method`` is compared as given: the core's methods are upper case."""
        path = _SLASHES.sub("/", "/" + unquote(path.split("?", 1)[0]).strip("/"))
        methods = self._plain.get(path)
        if methods is not None:
            return method in methods
        node = self._root
        values: list[str] = []
        for seg in path.split("/"):
            if not seg:
                continue
            literal = node.literals.get(seg)
            if literal is not None:
                node = literal
            elif node.param is not None:
                node = node.param
                values.append(seg)
            else:
                return False
        ints = node.methods.get(method)
        if ints is None:
            return False
        return all(_is_int(value) for value, is_int in zip(values, ints, strict=True) if is_int)


def _is_int(value: str) -> bool:
    try:
        int(value)
    except ValueError:
        return False
    return True
