"""Every route the shipped table sells is one the core serves, except seed 004's routes not
built yet — and those are never charged: the gateway's payment gate passes a request the
core has no route for on unpaid (``gateway/served.py``, ``gateway/payments.py``), so the
caller gets the core's 404 for free. Building one of them, or pricing a route the core does
not have, makes this test fail until the list below says so."""

from __future__ import annotations

import re

from gateway.forward import map_path
from gateway.served import ServedRoutes
from pricing import default_table_path, load_table

NOT_SERVED_YET: set[tuple[str, str]] = set()
"""Seed 004 routes the table keeps (so they are priced as the seed prices them the day they
exist) but the core does not serve."""

SAMPLES = {"bool": "true", "minutes": "15", "port": "3000"}


def concrete(pattern: str) -> str:
    """A path the pattern matches: each ``{name}`` filled in, a trailing ``**`` as one segment."""
    path = re.sub(r"\{(\w+)\}", lambda m: SAMPLES.get(m[1], f"x-{m[1]}"), pattern)
    return path.replace("/**", "/anything")


def test_the_table_sells_only_what_the_core_serves() -> None:
    routes = ServedRoutes()
    unserved = set()
    for rule in load_table(default_table_path()).routes():
        if rule.free or not rule.payable or rule.pattern.endswith("/**"):
            continue  # not sold, or a wildcard (the gate checks each request it prices)
        target = map_path(concrete(rule.pattern).encode()).decode()
        for method in rule.methods:
            if not routes.serves(method, target):
                unserved.add((method, rule.pattern))
    assert unserved == NOT_SERVED_YET


def test_the_route_table_answers_as_the_core_routes() -> None:
    routes = ServedRoutes()
    assert routes.serves("POST", "/v1/sandboxes")
    assert routes.serves("GET", "/toolbox/sbx-1/git/history?x=1")
    assert routes.serves("POST", "/sandbox/sbx-1/autostop/15")
    assert not routes.serves("POST", "/sandbox/sbx-1/autostop/soon")  # an int parameter
    assert not routes.serves("PATCH", "/v1/sandboxes")  # a method its path does not take
    assert not routes.serves("GET", "/nothing/here")
