"""Fuzz the JSON body of every core route that takes one, on the real stack.

The routes and their body types come from the core's own route handlers (the ``data``
parameter of each handler in ``core.http.app.ROUTE_HANDLERS``), so a new route is fuzzed
without editing this file. Bodies are drawn by ``tests/fuzz/shapes.py`` from the body type:
valid-shaped with hostile values, wrong types, missing and unknown fields, deep-but-bounded
nesting, huge strings and numbers, NUL, lone surrogates (``\\ud800`` escapes). They go
straight to the core, as a fresh org, against one started sandbox. The only property: never
a 5xx (and never a hang: every request has a timeout). A field-validation bug found here is
reported with its exact input rather than fixed (``contracts/`` field types have an owner).

URLs in bodies are pointed at a closed loopback port before sending (a webhook must never
target another address); sandboxes a body manages to create are deleted right away.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from litestar import Litestar
from litestar.routes import HTTPRoute

from cli.stack import Stack
from core.http.app import ROUTE_HANDLERS
from tests.core.test_files import create, sh
from tests.fuzz.profiles import fuzz
from tests.fuzz.shapes import to_json, values
from tests.support import mint_key

pytestmark = pytest.mark.stack

REQUEST_TIMEOUT = 60.0
SAFE_URL = "http://127.0.0.1:9/fuzz"
"""Where every ``url`` in a body points: loopback, a port nothing listens on."""
CREATES_SANDBOXES = re.compile(
    r"^/(v1/sandboxes|sandbox|v2/sandboxes)(/[^/]+/(fork|clone))?$|^/sandboxes/[^/]+/fork$"
)
LIFECYCLE = re.compile(r"^/(v2/)?sandboxes/\{sandbox_id(:str)?\}/(pause|resume|connect|timeout|refreshes)$")
"""E2B's calls that pause, resume or set a deadline (after which the reaper kills or pauses):
fuzzed against a sandbox of their own, so the one the other routes use stays started."""
_PARAM = re.compile(r"\{(\w+)(?::(\w+))?\}")


def _routes() -> list[tuple[str, str, Any]]:
    """(method, path template, body type) of every handler with a JSON body."""
    found = []
    for route in Litestar(route_handlers=ROUTE_HANDLERS, openapi_config=None).routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            data = handler.parsed_fn_signature.parameters.get("data")
            if data is not None:
                found += [(method, route.path, data.annotation) for method in sorted(handler.http_methods)]
    return sorted(found, key=lambda r: (r[1], r[0]))


ROUTES = _routes()


@pytest.fixture(scope="module")
def org(stack: Stack, core: httpx.Client) -> Iterator[tuple[httpx.Client, str, str]]:
    """A client of a fresh org, straight to the core, a started sandbox of that org, and one
    more for the ``LIFECYCLE`` routes."""
    key = mint_key(core, "fuzz-bodies")
    with httpx.Client(
        base_url=stack.config.core_url, headers={"authorization": f"Bearer {key}"}, timeout=REQUEST_TIMEOUT
    ) as client:
        sid = create(client)
        yield client, sid, create(client)
        for item in client.get("/v1/sandboxes").json().get("items", []):
            client.delete(f"/v1/sandboxes/{item['id']}")


def _path(template: str, sid: str) -> str:
    def fill(match: re.Match[str]) -> str:
        name, kind = match[1], match[2]
        if kind == "int":
            return "5"
        if name in ("sandbox_id", "ref"):
            return sid
        return "fuzz-missing"

    return _PARAM.sub(fill, template)


def _defang(value: Any) -> Any:
    """``value`` with every string under a ``url`` key replaced by ``SAFE_URL``."""
    if isinstance(value, dict):
        return {k: SAFE_URL if k == "url" and isinstance(v, str) else _defang(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_defang(v) for v in value]
    return value


def _clean_up(client: httpx.Client, template: str, resp: httpx.Response, sid: str) -> None:
    if not (resp.is_success and CREATES_SANDBOXES.match(_PARAM.sub("x", template))):
        return
    answer = resp.json()  # one sandbox, or E2B's fork: a list of {sandbox} or {error}
    made = [answer] if isinstance(answer, dict) else [item.get("sandbox") or {} for item in answer]
    for created in (one.get("id") or one.get("sandboxID") for one in made):
        if isinstance(created, str) and created != sid:
            client.delete(f"/v1/sandboxes/{created}")


@pytest.mark.parametrize(("method", "template", "body_type"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
@fuzz(8)
@given(data=st.data())
def test_every_route_refuses_hostile_json_with_a_4xx(
    org: tuple[httpx.Client, str, str], method: str, template: str, body_type: Any, data: st.DataObject
) -> None:
    client, sid, lifecycle_sid = org
    path = _path(template, lifecycle_sid if LIFECYCLE.match(template) else sid)
    body = to_json(
        _defang(data.draw(st.one_of(values(body_type), values(body_type, valid=True)), label="body"))
    )
    resp = client.request(method, path, content=body, headers={"content-type": "application/json"})
    _clean_up(client, template, resp, sid)
    event(str(resp.status_code))
    assert resp.status_code < 500, (method, path, body[:2000], resp.text[:1000])


def test_the_sandbox_still_serves_after_the_fuzz(org: tuple[httpx.Client, str, str]) -> None:
    client, sid, _ = org
    assert sh(client, sid, "echo ok").strip() == "ok"
