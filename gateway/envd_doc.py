"""E2B's envd routes as OpenAPI path items, for the gateway's ``/openapi.json``.

The core serves envd (``/envd/{sandbox_id}/…``) with a raw ASGI adapter, so its routes are not
in the core's generated document (``contracts/core_openapi.json``); their list is the contract
``contracts.e2b.ENVD_ROUTES``. This module describes each one the way the core's document
describes its own operations (parameters, request body, responses), and ``gateway.apidoc``
prices and decorates them like the rest. The bodies are Connect-RPC's JSON codec (protobuf
JSON: lowerCamelCase fields, int64 as strings, enums by name), described loosely: the messages
are envd's, in E2B's published ``process.proto`` and ``filesystem.proto``.
"""

from __future__ import annotations

from typing import Any

from contracts import e2b

CONNECT_JSON = "application/json"
CONNECT_STREAM = "application/connect+json"
_ANY_OBJECT = {"type": "object", "additionalProperties": True}
_SANDBOX = {
    "name": "sandbox_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "The sandbox. The E2B SDKs send it as E2b-Sandbox-Id (with E2b-Sandbox-Port: "
    f"{e2b.ENVD_PORT}) or in the host {e2b.ENVD_PORT}-{{id}}.{{preview domain}}; the gateway "
    "routes both here.",
}
_ACCESS_TOKEN = {
    "name": "X-Access-Token",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "The sandbox's envdAccessToken (required when the sandbox has one)",
}
_REST_ERROR = {
    "type": "object",
    "properties": {"code": {"type": "integer"}, "message": {"type": "string"}},
    "required": ["code", "message"],
}
_CONNECT_ERROR = {
    "type": "object",
    "description": "A Connect error: code is not_found, already_exists, invalid_argument, "
    "permission_denied, deadline_exceeded, unavailable, unauthenticated, …",
    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
    "required": ["code"],
}
_SUMMARIES = {
    "health": "envd liveness: 204 while the sandbox runs",
    "files:get": "Read a file (raw bytes; ?path=, optional username)",
    "files:post": "Write files: multipart (one part per file, its filename the path) or "
    "octet-stream with ?path= (gzip allowed); parent directories are made",
}


def envd_paths() -> dict[str, dict[str, Any]]:
    """``{path: {method: operation}}`` for every envd route, in the core document's shape."""
    paths: dict[str, dict[str, Any]] = {}
    for method, template in e2b.ENVD_ROUTES:
        rest = template.split("{sandbox_id}/", 1)[1]
        paths.setdefault(template, {})[method.lower()] = _operation(method, rest)
    return paths


def _operation(method: str, rest: str) -> dict[str, Any]:
    if rest == "health":
        responses = {
            "204": {"description": "The sandbox is running"},
            "401": _error("An envd error", _REST_ERROR),
            "502": _error(
                "The sandbox is unknown or not running (E2B's proxy answer, as the SDK expects)", _REST_ERROR
            ),
        }
        return _op(_SUMMARIES["health"], responses)
    if rest == "files":
        return _files(method)
    stream = rest in e2b.ENVD_STREAM_RPCS
    body: dict[str, Any]
    ok: dict[str, Any]
    service, _, name = rest.partition("/")
    if stream:
        summary = f"{service} {name} (Connect stream: enveloped JSON messages, then an end message)"
        body = {CONNECT_STREAM: {"schema": {"type": "string", "format": "binary"}}}
        ok = {
            "description": "A Connect stream; an error is its end message {error: {code, message}}",
            "content": {CONNECT_STREAM: {"schema": {"type": "string", "format": "binary"}}},
        }
    else:
        summary = f"{service} {name} (Connect unary call, JSON codec)"
        body = {CONNECT_JSON: {"schema": _ANY_OBJECT}}
        ok = {
            "description": "The call's response message",
            "content": {CONNECT_JSON: {"schema": _ANY_OBJECT}},
        }
    statuses = ("400", "401", "404", "409", "502", "503")
    return _op(
        summary,
        {"200": ok, **{status: _error("A Connect error", _CONNECT_ERROR) for status in statuses}},
        body={"required": True, "content": body},
        headers=[
            {
                "name": "Connect-Protocol-Version",
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
            },
            {"name": "Connect-Timeout-Ms", "in": "header", "required": False, "schema": {"type": "string"}},
        ],
    )


def _files(method: str) -> dict[str, Any]:
    query = [
        {"name": "path", "in": "query", "required": method == "GET", "schema": {"type": "string"}},
        {"name": "username", "in": "query", "required": False, "schema": {"type": "string"}},
    ]
    errors = {status: _error("An envd error", _REST_ERROR) for status in ("400", "401", "404", "502")}
    if method == "GET":
        ok = {
            "description": "The file's bytes",
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
        return _op(_SUMMARIES["files:get"], {"200": ok, **errors}, headers=query)
    entry = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "type": {"enum": ["file", "dir"]},
            "path": {"type": "string"},
        },
    }
    ok = {
        "description": "What was written",
        "content": {"application/json": {"schema": {"type": "array", "items": entry}}},
    }
    binary = {"schema": {"type": "string", "format": "binary"}}
    body = {"multipart/form-data": {"schema": _ANY_OBJECT}, "application/octet-stream": binary}
    return _op(
        _SUMMARIES["files:post"],
        {"200": ok, **errors},
        body={"required": True, "content": body},
        headers=query,
    )


def _error(text: str, schema: dict[str, Any]) -> dict[str, Any]:
    """One error response, a fresh object each time: the gateway adds to each status's own."""
    return {"description": text, "content": {CONNECT_JSON: {"schema": schema}}}


def _header(name: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "schema": {"type": "string"}}


def _op(
    summary: str,
    responses: dict[str, Any],
    *,
    body: dict[str, Any] | None = None,
    headers: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "description": "E2B's envd (data plane), served by the core's envd adapter.",
        "parameters": [_SANDBOX, _ACCESS_TOKEN, *(headers or [])],
        "responses": responses,
    }
    if body is not None:
        op["requestBody"] = body
    return op


__all__ = ["envd_paths"]
