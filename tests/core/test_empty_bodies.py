"""A request whose body has only optional fields may leave the body out: no body at all, an
empty one (``Content-Length: 0``) and ``{}`` all mean "every default", in both API shapes.
A body that is needed and missing is said to be missing, in the caller's terms — never as
the handler's parameter name (``data: 'data'``)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import typing
from collections.abc import Iterator

import httpx
import msgspec
import pytest

import core.http

SHAPES = ("no body", "empty body", "{}")


def post(client: httpx.Client, path: str, shape: str) -> httpx.Response:
    """POST ``path`` with no body (no ``Content-Length`` either), an empty one, or ``{}``."""
    if shape == "{}":
        return client.post(path, json={})
    request = client.build_request("POST", path, content=b"")
    if shape == "no body":
        del request.headers["content-length"]
    else:
        assert request.headers["content-length"] == "0"
    return client.send(request)


def body_types(handler: object) -> Iterator[type[msgspec.Struct]]:
    fn = getattr(handler, "fn", None)
    if fn is None:
        return
    hint = typing.get_type_hints(fn).get("data")
    for candidate in typing.get_args(hint) or (hint,):
        if inspect.isclass(candidate) and issubclass(candidate, msgspec.Struct):
            yield candidate


def test_every_all_optional_body_may_be_left_out() -> None:
    """The route table itself: a handler whose body type has no required field defaults its
    body to None (Litestar otherwise rejects a request without one)."""
    checked = []
    for module_info in pkgutil.walk_packages(core.http.__path__, "core.http."):
        module = importlib.import_module(module_info.name)
        for controller in vars(module).values():
            if not (inspect.isclass(controller) and controller.__module__ == module.__name__):
                continue
            for name, handler in vars(controller).items():
                for body in body_types(handler):
                    if any(field.required for field in msgspec.structs.fields(body)):
                        continue
                    param = inspect.signature(handler.fn).parameters["data"]  # type: ignore[attr-defined]
                    assert param.default is None, (
                        f"{controller.__name__}.{name} needs a body of {body.__name__}"
                    )
                    checked.append(name)
    assert len(checked) >= 9  # creates (both shapes), api keys, resize and fork (both), sessions, pty


@pytest.mark.parametrize("shape", SHAPES)
def test_creates_and_keys_without_a_body(org: httpx.Client, gateway: httpx.Client, shape: str) -> None:
    native = post(org, "/v1/sandboxes", shape)
    assert native.status_code == 201, native.text
    daytona = post(org, "/sandbox", shape)
    assert daytona.status_code == 200, daytona.text
    key = post(gateway, "/v1/api-keys", shape)
    assert key.status_code == 201, key.text
    sid = native.json()["id"]
    session = post(org, f"/v1/sandboxes/{sid}/sessions", shape)
    assert session.status_code == 201, session.text
    pty = post(org, f"/toolbox/{sid}/process/pty", shape)
    assert pty.status_code == 201, pty.text


def test_actions_without_a_body(org: httpx.Client) -> None:
    sid = org.post("/v1/sandboxes", json={}).json()["id"]
    for shape in SHAPES:
        for path in (f"/v1/sandboxes/{sid}/resize", f"/sandbox/{sid}/resize"):
            resp = post(org, path, shape)
            assert resp.status_code == 200, (path, shape, resp.text)
        for action, state in (("pause", "paused"), ("resume", "started"), ("stop", "stopped")):
            resp = post(org, f"/v1/sandboxes/{sid}/{action}", shape)
            assert resp.status_code == 200 and resp.json()["state"] == state, (action, shape, resp.text)
        for action in ("archive", "start"):
            resp = post(org, f"/v1/sandboxes/{sid}/{action}", shape)
            assert resp.status_code == 200, (action, shape, resp.text)
        resp = post(org, f"/v1/sandboxes/{sid}/snapshot", shape)
        assert resp.status_code == 201, (shape, resp.text)


@pytest.mark.parametrize("shape", SHAPES)
def test_forks_without_a_body(org: httpx.Client, shape: str) -> None:
    sid = org.post("/v1/sandboxes", json={}).json()["id"]
    native = post(org, f"/v1/sandboxes/{sid}/fork", shape)
    assert native.status_code == 201, native.text
    daytona = post(org, f"/sandbox/{sid}/fork", shape)
    assert daytona.status_code == 200, daytona.text
    assert {native.json()["id"], daytona.json()["id"]}.isdisjoint({sid})


def test_a_needed_body_that_is_missing_is_named_plainly(org: httpx.Client) -> None:
    sid = org.post("/v1/sandboxes", json={}).json()["id"]
    for shape in ("no body", "empty body"):
        resp = post(org, f"/v1/sandboxes/{sid}/restore", shape)
        assert resp.status_code == 400
        assert resp.json()["message"] == "the request body is empty; expected a JSON object"
    resp = post(org, f"/v1/sandboxes/{sid}/restore", "{}")
    assert resp.status_code == 400
    assert resp.json()["message"] == "invalid request body: Object missing required field `snapshot_id`"
    resp = org.post("/v1/sandboxes", json={"cpu": "two"})
    assert resp.json()["message"] == "invalid request body: cpu: Expected `int | null`, got `str`"
