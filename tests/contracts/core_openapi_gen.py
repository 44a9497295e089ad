"""Regenerate ``contracts/core_openapi.json``: the core's public routes as Litestar's OpenAPI
generator documents them, with the errors the core really answers.

    .venv/bin/python -m tests.contracts.core_routes_gen   (writes this and core_routes.py)

The gateway serves ``/openapi.json`` in the payment modes; it may not import the core, so it
reads this artifact and adds what only it knows (prices, 402s, its own routes, the seed-004
toolbox paths). The request and response schemas here come from the handlers' real msgspec
types, which is what lets schemathesis generate invalid bodies and check the answers.

What is changed from Litestar's output, and why:

- ``/internal/*`` is dropped: the gateway answers 404 to it, it is not part of the API.
- Every error is the core's ``ErrorBody`` (``core/http/errors.py`` renders every exception so):
  Litestar's default ``400`` schema (``status_code``, ``detail``, ``extra``) is replaced, and
  the statuses the core's services raise are added (``_errors``).
- A terminal's path (a WebSocket) is documented as its ``GET``: ``101`` with the upgrade, ``426``
  without (``core/http/terminals.py``), marked ``x-dnah-websocket``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from litestar import Litestar
from litestar.openapi import OpenAPIConfig
from litestar.routes import WebSocketRoute

from core.http.app import ROUTE_HANDLERS

ARTIFACT = Path(__file__).resolve().parents[2] / "contracts" / "core_openapi.json"
ERROR = {"$ref": "#/components/schemas/ErrorBody"}

_REASONS = {
    400: "Invalid request: a parameter or the body does not parse, or the sandbox refused it",
    401: "Missing or invalid bearer key",
    403: "The key may not do this (an admin route), or the sandbox's kernel refused it",
    404: "No such sandbox (or session, file, snapshot…) for this key",
    408: "The command ran past its timeout",
    409: "The sandbox is not in a state that allows this",
    413: "The body is larger than the limit",
    422: "The snapshot was rejected (signature or format)",
    426: "A WebSocket: send the upgrade",
    502: "The sandbox's host did not answer",
    503: "No host has capacity for the sandbox",
    507: "Not enough storage on the host",
}
_SANDBOX = re.compile(r"^/(v1/sandboxes|sandbox|toolbox)/\{")
_EXEC = re.compile(r"/(exec|execute|run-code|code-run)$")
_STORAGE = re.compile(r"/(snapshot|restore|clone|fork)$")


def _errors(method: str, path: str) -> list[int]:
    """The error statuses the core answers on ``method path``: every route but ``/health``
    needs a key (401) and validates its input (400); a route with a parameter can name
    something that is not there (404); a sandbox's route can find it in the wrong state (409)
    or its host away (502), and anything the sandbox's kernel refuses is a 403."""
    if path == "/health":
        return []
    codes = {400, 401}
    if "{" in path:
        codes.add(404)
    if path == "/metrics" or (method == "POST" and path == "/v1/api-keys"):
        codes.add(403)
    if _SANDBOX.match(path):
        codes |= {403, 409, 502}
    if method == "POST" and path in ("/v1/sandboxes", "/sandbox"):
        codes |= {409, 502, 503}
    if _EXEC.search(path):
        codes.add(408)
    if (method == "PUT" and path.endswith("/files")) or path.endswith(("/upload", "/bulk-upload")):
        codes.add(413)
    if _STORAGE.search(path):
        codes |= {422, 503, 507}
    return sorted(codes)


def _error_response(status: int) -> dict[str, Any]:
    return {"description": _REASONS[status], "content": {"application/json": {"schema": ERROR}}}


def _websocket_get(op: dict[str, Any]) -> None:
    op["description"] = (
        "A WebSocket: open it with GET and `Connection: Upgrade`, `Upgrade: websocket` (RFC 6455), "
        "authenticated like any other route. Without the upgrade the answer is 426."
    )
    op["responses"] = {
        "101": {"description": "Switching Protocols: the terminal's WebSocket is open"},
        **{code: resp for code, resp in op["responses"].items() if code != "101"},
    }
    op["x-dnah-websocket"] = True


def core_openapi() -> dict[str, Any]:
    """The artifact's content: the public part of the core's own OpenAPI document."""
    app = Litestar(
        route_handlers=ROUTE_HANDLERS, openapi_config=OpenAPIConfig(title="dnah core", version="0")
    )
    doc: dict[str, Any] = app.openapi_schema.to_schema()
    sockets = {re.sub(r"\{(\w+):\w+\}", r"{\1}", r.path) for r in app.routes if isinstance(r, WebSocketRoute)}
    paths: dict[str, Any] = {}
    for path, item in sorted(doc["paths"].items()):
        if path.startswith("/internal/"):
            continue
        for method, op in item.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            responses = {code: r for code, r in op["responses"].items() if code != "400"}
            for status in _errors(method.upper(), path):
                if str(status) not in responses:
                    responses[str(status)] = _error_response(status)
            for status, response in responses.items():
                if int(status) >= 400:
                    response["description"] = response.get("description") or _REASONS[int(status)]
            op["responses"] = dict(sorted(responses.items()))
            if path in sockets and method == "get":
                _websocket_get(op)
        paths[path] = item
    doc["paths"] = paths
    doc.pop("servers", None)
    return doc


def render() -> str:
    return json.dumps(core_openapi(), indent=1, sort_keys=True) + "\n"


def main() -> None:
    ARTIFACT.write_text(render())
    print(f"wrote the core's OpenAPI document to {ARTIFACT}")


if __name__ == "__main__":
    main()
