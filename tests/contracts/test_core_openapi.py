"""``contracts/core_openapi.json`` is the core's own OpenAPI document (Litestar's generator on
the core's route handlers, shaped by ``tests/contracts/core_openapi_gen.py``): the gateway
serves it, priced, at ``/openapi.json``, so it must never drift from the core."""

from __future__ import annotations

import json

from contracts.core_routes import CORE_ROUTES
from tests.contracts.core_openapi_gen import ARTIFACT, e2b_paths, render
from tests.contracts.core_routes_gen import COMMAND


def test_the_artifact_is_the_core_document() -> None:
    assert ARTIFACT.read_text() == render(), f"contracts/core_openapi.json is stale: {COMMAND}"


def test_it_documents_every_public_route_and_nothing_else() -> None:
    doc = json.loads(ARTIFACT.read_text())
    documented = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    public = {
        ("GET" if method == "WEBSOCKET" else method, path.replace(":int}", "}"))
        for method, path in CORE_ROUTES
        if method != "OPTIONS" and not path.startswith("/internal/")
    }
    assert documented == public


def test_errors_are_the_core_error_body() -> None:
    """Litestar's default 400 schema is not what the core sends (core/http/common/errors.py);
    E2B's control plane sends E2B's (and the guard's 400 in front of it, the core's)."""
    doc = json.loads(ARTIFACT.read_text())
    e2b = e2b_paths()
    core: dict[str, object] = {"$ref": "#/components/schemas/ErrorBody"}
    e2b_error: dict[str, object] = {"$ref": "#/components/schemas/E2bError"}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            for status, response in op["responses"].items():
                if int(status) >= 400:
                    schema = response["content"]["application/json"]["schema"]
                    expected: dict[str, object] = core
                    if path in e2b:
                        expected = {"anyOf": [e2b_error, core]} if status == "400" else e2b_error
                    assert schema == expected, (method, path, status)
    assert "/v2/sandboxes" in e2b
    assert set(doc["components"]["schemas"]["ErrorBody"]["required"]) == {"statusCode", "message", "code"}
