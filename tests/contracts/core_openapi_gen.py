"""Regenerate ``contracts/core_openapi.json``: the core's public routes as Litestar's OpenAPI
generator documents them, with the errors the core really answers.

    .venv/bin/python -m tests.contracts.core_routes_gen   (writes this and core_routes.py)

The gateway serves ``/openapi.json`` in the payment modes; it may not import the core, so it
reads this artifact and adds what only it knows (prices, 402s, its own routes, the seed-004
toolbox paths). The request and response schemas here come from the handlers' real msgspec
types, which is what lets schemathesis generate invalid bodies and check the answers.

What is changed from Litestar's output, and why:

- ``/internal/*`` is dropped: the gateway answers 404 to it, it is not part of the API.
- Every error is the core's ``ErrorBody`` (``core/http/common/errors.py`` renders every exception so),
  but on E2B's control plane (``core/http/e2b/``), whose Router renders E2B's ``E2bError`` (its
  400 may also be the core's, from the guard in front of every route: a body that is not JSON):
  Litestar's default ``400`` schema (``status_code``, ``detail``, ``extra``) is replaced, and
  the statuses the core's services raise are added (``_errors``).
- A terminal's path (a WebSocket) is documented as its ``GET``: ``101`` with the upgrade, ``426``
  without (``core/http/common/terminals.py``), marked ``x-dnah-websocket``.
- A body whose schema admits ``null`` (every field optional) is not required: the core takes
  a missing body, an empty one or ``{}`` alike.
- A union answer (``A | B``) is ``anyOf``, not ``oneOf``: msgspec structs are open, so one
  answer can fit both (``DaytonaSessionStarted`` is a part of ``DaytonaSessionExecuteResult``).
- Byte streams say what they are (``_STREAMS``, ``_UPLOADS``): Litestar cannot see the media
  type of a ``Stream`` or of a body a handler reads itself, and documents JSON; the uploads'
  answers, encoded by the handler (``Response[bytes]``), get their real types (``_ANSWERS``);
  a status a handler picks at run time is added (``_MORE``: a background session command's 202,
  E2B's connect's 201).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import msgspec
from litestar import Litestar
from litestar.openapi import OpenAPIConfig
from litestar.routes import WebSocketRoute

from contracts.e2b_api import E2bError
from contracts.public import FilesUploaded, FileUploaded
from core.http.app import ROUTE_HANDLERS
from core.http.e2b import E2B_ROUTES

ARTIFACT = Path(__file__).resolve().parents[2] / "contracts" / "core_openapi.json"
ERROR = {"$ref": "#/components/schemas/ErrorBody"}
E2B_ERROR = {"$ref": "#/components/schemas/E2bError"}
E2B_BAD_REQUEST = {"anyOf": [E2B_ERROR, ERROR]}

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
_STREAMS = {
    ("get", "/metrics"): "text/plain",
    ("get", "/v1/sandboxes/{sandbox_id}/files"): "application/octet-stream",
    ("get", "/toolbox/{sandbox_id}/files/download"): "application/octet-stream",
    ("post", "/toolbox/{sandbox_id}/files/bulk-download"): "multipart/form-data",
}
"""Answers that are not JSON: (method, path) → the 2xx media type."""
_BINARY = {"type": "string", "format": "binary"}
_UPLOADS: dict[tuple[str, str], dict[str, Any]] = {
    ("put", "/v1/sandboxes/{sandbox_id}/files"): {
        "required": False,
        "content": {"application/octet-stream": {"schema": _BINARY}},
    },
    ("post", "/toolbox/{sandbox_id}/files/upload"): {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"file": _BINARY}, "required": ["file"]}
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "description": "seed 004's shape: content is base64",
                    "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
                    "required": ["path", "content"],
                }
            },
        },
    },
    ("post", "/toolbox/{sandbox_id}/files/bulk-upload"): {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"files[0].path": {"type": "string"}, "files[0].file": _BINARY},
                    "required": ["files[0].file"],
                }
            }
        },
    },
}
"""Bodies a handler reads itself (streamed uploads): (method, path) → the request body."""
_ANSWERS: dict[tuple[str, str], type[msgspec.Struct]] = {
    ("post", "/toolbox/{sandbox_id}/files/upload"): FileUploaded,
    ("post", "/toolbox/{sandbox_id}/files/bulk-upload"): FilesUploaded,
}
"""Handlers that encode their own JSON answer: (method, path) → the type of the 200 body."""
_STARTED = {
    "description": "Started in the background (runAsync)",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/DaytonaSessionStarted"}}},
}
_BROUGHT_BACK = {
    "description": "It was paused (or stopped, archived, in error) and has been brought back",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/E2bSandbox"}}},
}
_MORE: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/toolbox/{sandbox_id}/process/session/{session_id}/exec"): {"202": _STARTED},
    ("post", "/toolbox/{sandbox_id}/process/sessions/{session_id}/exec"): {"202": _STARTED},
    ("post", "/v2/sandboxes/{sandbox_id}/connect"): {"201": _BROUGHT_BACK},
    ("post", "/sandboxes/{sandbox_id}/connect"): {"201": _BROUGHT_BACK},
}
"""Answers a handler gives besides its declared status: (method, path) → {status: response}."""
_SANDBOX = re.compile(r"^/(v1/sandboxes|v2/sandboxes|sandboxes|sandbox|toolbox)/\{")
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
    if method == "POST" and path in ("/v1/sandboxes", "/sandbox", "/v2/sandboxes"):
        codes |= {409, 502, 503}
    if method == "POST" and (path == "/v2/sandboxes" or path.endswith("/snapshots")):
        codes |= {422, 507}  # E2B: a create from a snapshot clones it; a snapshot fills a disk
    if _EXEC.search(path):
        codes.add(408)
    if (method == "PUT" and path.endswith("/files")) or path.endswith(("/upload", "/bulk-upload")):
        codes.add(413)
    if _STORAGE.search(path):
        codes |= {422, 503, 507}
    return sorted(codes)


def e2b_paths() -> set[str]:
    """The paths of E2B's control plane, as the document spells them."""
    return {re.sub(r"\{(\w+):\w+\}", r"{\1}", r.path) for r in Litestar(route_handlers=E2B_ROUTES).routes}


def _error_schema(status: int, e2b: bool) -> dict[str, Any]:
    if not e2b:
        return ERROR
    return E2B_BAD_REQUEST if status == 400 else E2B_ERROR


def _error_response(status: int, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": _REASONS[status], "content": {"application/json": {"schema": schema}}}


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


def _bodies(op: dict[str, Any], method: str, path: str) -> None:
    body = op.get("requestBody")
    if body is not None and {"type": "null"} in body["content"]["application/json"]["schema"].get(
        "oneOf", []
    ):
        body["required"] = False
    if (method, path) in _UPLOADS:
        op["requestBody"] = _UPLOADS[method, path]
    op["responses"].update(copy.deepcopy(_MORE.get((method, path), {})))
    for code, response in op["responses"].items():
        for media in response.get("content", {}).values():
            if "oneOf" in media["schema"]:
                media["schema"]["anyOf"] = media["schema"].pop("oneOf")
        if code.startswith("2") and (method, path) in _STREAMS:
            response["content"] = {_STREAMS[method, path]: {"schema": {}}}
        if code == "200" and (method, path) in _ANSWERS:
            ref = {"$ref": f"#/components/schemas/{_ANSWERS[method, path].__name__}"}
            response["content"] = {"application/json": {"schema": ref}}


def core_openapi() -> dict[str, Any]:
    """The artifact's content: the public part of the core's own OpenAPI document."""
    app = Litestar(
        route_handlers=ROUTE_HANDLERS, openapi_config=OpenAPIConfig(title="dnah core", version="0")
    )
    doc: dict[str, Any] = app.openapi_schema.to_schema()
    sockets = {re.sub(r"\{(\w+):\w+\}", r"{\1}", r.path) for r in app.routes if isinstance(r, WebSocketRoute)}
    e2b = e2b_paths()
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
                    responses[str(status)] = _error_response(status, _error_schema(status, path in e2b))
            for status, response in responses.items():
                if int(status) >= 400:
                    response["description"] = response.get("description") or _REASONS[int(status)]
            op["responses"] = dict(sorted(responses.items()))
            if path in sockets and method == "get":
                _websocket_get(op)
            _bodies(op, method, path)
        paths[path] = item
    doc["paths"] = paths
    _, extra = msgspec.json.schema_components(
        [*_ANSWERS.values(), E2bError], ref_template="#/components/schemas/{name}"
    )
    doc["components"]["schemas"] = dict(sorted({**extra, **doc["components"]["schemas"]}.items()))
    doc.pop("servers", None)
    return doc


def _settled(node: Any) -> Any:
    """The document with its set-like lists in one order: Litestar builds some from sets, so
    parameter and ``required`` orders change with the hash seed, and the artifact must not."""
    if isinstance(node, dict):
        out = {key: _settled(value) for key, value in node.items()}
        if isinstance(out.get("required"), list):
            out["required"] = sorted(out["required"])
        if isinstance(out.get("parameters"), list):
            out["parameters"] = sorted(out["parameters"], key=lambda p: (p.get("in", ""), p.get("name", "")))
        return out
    if isinstance(node, list):
        return [_settled(item) for item in node]
    return node


def render() -> str:
    return json.dumps(_settled(core_openapi()), indent=1, sort_keys=True) + "\n"


def main() -> None:
    ARTIFACT.write_text(render())
    print(f"wrote the core's OpenAPI document to {ARTIFACT}")


if __name__ == "__main__":
    main()
