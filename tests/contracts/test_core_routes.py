"""The core's route contract: ``contracts/core_routes.py`` lists exactly the routes the core
serves, and ``gateway/served.py`` resolves a request against it as the core's router does.

The gateway's payment gate charges only for requests the core serves; it reads the contract
because the gateway may not import the core. These tests are the bridge: they import both.
"""

from __future__ import annotations

import itertools
from urllib.parse import unquote

from litestar.exceptions import HTTPException
from litestar.utils import normalize_path

from contracts.core_routes import CORE_ROUTES
from gateway.served import ServedRoutes
from tests.contracts.core_routes_gen import COMMAND, WEBSOCKET, core_app, served_by_core

METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "get")


def test_the_contract_lists_what_the_core_serves() -> None:
    contract, core = set(CORE_ROUTES), set(served_by_core())
    missing = "".join(f"\n  + {m} {p}" for m, p in sorted(core - contract, key=lambda r: r[::-1]))
    extra = "".join(f"\n  - {m} {p}" for m, p in sorted(contract - core, key=lambda r: r[::-1]))
    assert not missing and not extra, (
        "contracts/core_routes.py differs from the core's route handlers "
        f"(+ served but not listed, - listed but not served):{missing}{extra}\n"
        f"regenerate it: {COMMAND}"
    )
    assert list(CORE_ROUTES) == served_by_core(), f"contracts/core_routes.py is out of order: {COMMAND}"


def probes() -> set[str]:
    """Paths around every route: each parameter filled with every literal segment the core
    knows (a literal beats a parameter in the router), integers and non-integers; one
    segment more and one fewer; doubled and trailing slashes, percent-encoding, a query."""
    words = {seg for _, t in CORE_ROUTES for seg in t.split("/") if seg and not seg.startswith("{")}
    words |= {"x", "15", "-3", "+7", "soon", "1.5", "a b"}
    paths: set[str] = {"/", "//", "/nothing/here", "/v1", "/toolbox", "/sandbox/"}
    for template in {t for _, t in CORE_ROUTES}:
        segments = [seg for seg in template.split("/") if seg]
        params = [i for i, seg in enumerate(segments) if seg.startswith("{")]
        base = ["15" if seg.endswith(":int}") else "x" if seg.startswith("{") else seg for seg in segments]
        variants = [base]
        for i, word in itertools.product(params, words):
            variants.append([*base[:i], word, *base[i + 1 :]])
        for parts in variants:
            path = "/" + "/".join(parts)
            paths.update({path, path + "/extra", path + "/", path.rsplit("/", 1)[0] or "/"})
        path = "/" + "/".join(base)
        paths.update({path.replace("/", "//"), path + "?a=1", path.replace("x", "%78")})
    return paths


def core_router_serves(app: object, method: str, path: str) -> bool:
    """The core's own answer: its router resolves the path as it would a request's (decoded
    and normalised as ``litestar``'s ASGI router does before routing)."""
    target = normalize_path(unquote(path.split("?", 1)[0]))
    try:
        app.asgi_router.handle_routing(path=target, method=method)  # type: ignore[attr-defined]
    except HTTPException:  # not found, method not allowed, a parameter that does not parse
        return False
    return True


def test_the_matcher_answers_as_the_core_router() -> None:
    app, served = core_app(), ServedRoutes()
    paths = probes()
    wrong = [
        (method, path, served.serves(method, path))
        for path in sorted(paths)
        for method in METHODS
        if served.serves(method, path) != core_router_serves(app, method, path)
    ]
    assert not wrong, (
        f"gateway/served.py and the core's router disagree (method, path, matcher): {wrong[:20]}"
    )
    assert len(paths) > 5000  # the probes cover the table, not a handful of paths


def test_the_matcher_on_examples() -> None:
    served = ServedRoutes()
    assert served.serves("POST", "/v1/sandboxes")
    assert served.serves("GET", "/toolbox/sbx-1/git/history?x=1")
    assert served.serves("POST", "/sandbox/sbx-1/autostop/15")
    assert served.serves("GET", "/sandbox/paginated")  # a read of a sandbox named "paginated"
    assert not served.serves("POST", "/sandbox/sbx-1/autostop/soon")  # an int parameter
    assert not served.serves("PATCH", "/v1/sandboxes")  # a method its path does not take
    assert not served.serves("GET", "/nothing/here")
    assert not served.serves("get", "/v1/sandboxes")  # the core's methods are upper case
    # a literal segment wins, with no way back: "create-connect" is not a PTY session id here
    assert not served.serves("POST", "/toolbox/sbx-1/process/pty/create-connect/resize")
    assert served.serves("POST", "/toolbox/sbx-1/process/pty/pty-1/resize")
    # ... but a route without parameters is not part of that walk: "register" can be a host id
    assert served.serves("POST", "/internal/hosts/register/heartbeat")
    # a WebSocket path takes a plain GET only (answered 426), and shadows the parameter beside it
    assert served.serves("GET", "/toolbox/sbx-1/process/pty/create-connect")
    assert not served.serves("DELETE", "/toolbox/sbx-1/process/pty/create-connect")
    assert served.serves("GET", "/toolbox/sbx-1/process/pty/pty-1")
    assert (WEBSOCKET, "/toolbox/{sandbox_id}/process/pty/create-connect") in CORE_ROUTES
