"""The OpenAPI document the gateway serves at ``/openapi.json`` (payment and both modes).

It documents exactly what is served, and nothing else: "a route that is not documented does
not exist", and no documented operation answers 404 or 405 from a router.

- **The core's routes** come from ``contracts/core_openapi.json``, the core's own document made
  by Litestar's OpenAPI generator from its route handlers (the gateway may not import the
  core; ``tests/contracts/core_openapi_gen.py`` writes the artifact and a test keeps it equal
  to the core). So every operation is one the core's router takes, and the parameter, body
  and response schemas are the handlers' real msgspec types. ``/internal/*`` is not in it.
- **Seed 004's toolbox paths**: the gateway maps ``/sandbox/{id}/toolbox/…`` onto the core's
  ``/toolbox/{id}/…``, so each ``/toolbox/{sandbox_id}/…`` operation is documented a second
  time under ``/sandbox/{sandbox_id}/toolbox/…``.
- **The gateway's own routes**: ``/health`` (it answers that one itself, in every mode),
  ``/openapi.json``, ``/llms.txt`` and ``/__mpp/quote|health|config``, always free.
- **Prices**: each operation is priced as the gate prices a request to it
  (``PriceTable.quote`` on the public path with example parameter values), so a ``"*"`` rule
  prices exactly the methods the core serves under it, and a table rule for a route the core
  does not have documents nothing (such requests are answered 404/405 for free). Paid
  operations carry ``x-payment-info`` (see ``gateway.discovery.payment_info``) and
  ``x-dnah-price-rule`` (the rule's pattern, or ``default``).
- **Responses**: the core's (its ``ErrorBody`` for errors), plus what the gateway itself
  answers on the way: 402 and the payment problems (``application/problem+json``) on paid
  operations, 502/504 when the core is unreachable or slow.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from importlib import resources
from typing import Any

import msgspec

from contracts import e2b
from gateway.discovery import (
    FREE_GROUP,
    OPENAPI_VERSION,
    QUOTE_PATH,
    DiscoverySettings,
    Priced,
    cost_text,
    group_of_path,
    payment_info,
)
from gateway.envd_doc import envd_paths
from pricing import PriceTable

TOOLBOX = "/toolbox/{sandbox_id}/"
SEED_TOOLBOX = "/sandbox/{sandbox_id}/toolbox/"
ERROR = {"$ref": "#/components/schemas/ErrorBody"}
PROBLEM = {"$ref": "#/components/schemas/Problem"}
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
LINKS: dict[tuple[str, str], tuple[str, dict[str, tuple[str, str]]]] = {
    ("post", "/v1/sandboxes"): (
        "201",
        {
            "GetSandbox": ("get_v1_sandboxes_sandbox_id", "sandbox_id"),
            "Exec": ("post_v1_sandboxes_sandbox_id_exec", "sandbox_id"),
            "DeleteSandbox": ("delete_v1_sandboxes_sandbox_id", "sandbox_id"),
        },
    ),
    ("post", "/sandbox"): (
        "200",
        {
            "GetSandbox": ("get_sandbox_ref", "ref"),
            "Execute": ("post_sandbox_sandbox_id_toolbox_process_execute", "sandbox_id"),
            "DeleteSandbox": ("delete_sandbox_ref", "ref"),
        },
    ),
}
"""OpenAPI links for the natural chains (create a sandbox → read it, run a command in it, delete
it): ``(method, path) → (status, {link: (operationId, the parameter the new id fills)})``.
Stateful testers (schemathesis) follow them."""


@functools.cache
def core_document() -> dict[str, Any]:
    """``contracts/core_openapi.json``, read once (callers copy what they change)."""
    text = resources.files("contracts").joinpath("core_openapi.json").read_text()
    doc: dict[str, Any] = json.loads(text)
    return doc


class ServedDocument:
    """The encoded document for the live table, built once per table: building takes a few
    hundred milliseconds (the core's document is large), too long to spend on the event loop
    for every unauthenticated ``GET /openapi.json``. A reload makes a new ``PriceTable``,
    which the next request sees and builds for."""

    def __init__(self, settings: DiscoverySettings) -> None:
        self._settings = settings
        self._table: PriceTable | None = None
        self._body = b""

    def body(self, table: PriceTable) -> bytes:
        if table is not self._table:
            self._body = msgspec.json.encode(openapi(table, self._settings))
            self._table = table
        return self._body


def example_path(path: str, operation: dict[str, Any]) -> str:
    """A concrete request path for an OpenAPI path: integer parameters ``15``, others
    ``ex-<name>-7`` (a value no literal segment of a price table uses)."""
    ints = {
        p["name"]
        for p in operation.get("parameters", [])
        if p.get("in") == "path" and p.get("schema", {}).get("type") == "integer"
    }
    return _PARAM.sub(lambda m: "15" if m[1] in ints else f"ex-{m[1]}-7", path)


def public_paths(core_path: str) -> list[str]:
    """The paths a client may send for one of the core's paths (the toolbox has two)."""
    if core_path.startswith(TOOLBOX):
        return [core_path, SEED_TOOLBOX + core_path.removeprefix(TOOLBOX)]
    return [core_path]


def openapi(
    table: PriceTable, settings: DiscoverySettings, core: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The document (see the module docstring); ``core`` defaults to the shipped artifact."""
    core = core if core is not None else core_document()
    paths: dict[str, Any] = _gateway_paths(table, settings)
    used_ids: set[str] = {op["operationId"] for item in paths.values() for op in item.values()}
    tags: dict[str, None] = {FREE_GROUP: None}
    for core_path, item in sorted({**core["paths"], **envd_paths()}.items()):
        if core_path in paths:  # /health: the gateway answers it itself
            continue
        for path in public_paths(core_path):
            documented: dict[str, Any] = {}
            for method, core_op in item.items():
                op = copy.deepcopy(core_op)
                quote = table.quote(method.upper(), example_path(path, op))
                group = group_of_path(path, quote.free)
                tags.setdefault(group)
                op["operationId"] = _operation_id(method, path, used_ids)
                op["tags"] = [group]
                if quote.pattern != "default":
                    op["summary"] = quote.description
                op["description"] = _describe(op.get("description"), quote, path)
                op["security"] = _security(quote, settings, path)
                op["responses"] = _responses(op["responses"], quote, settings, "requestBody" in op)
                op["x-dnah-price-rule"] = quote.pattern
                info = payment_info(quote, settings)
                if info is not None:
                    op["x-payment-info"] = info
                _link(op, method, path)
                documented[method] = op
            paths[path] = documented
    default = table.default
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": settings.title, "version": settings.version, "description": _info(settings)},
        "servers": [{"url": settings.base_url}],
        "tags": [{"name": name} for name in tags],
        "paths": paths,
        "components": _components(core, settings),
        "x-service-info": {
            "categories": ["compute", "developer-tools"],
            "docs": {
                "homepage": settings.base_url,
                "apiReference": f"{settings.base_url}/openapi.json",
                "llms": f"{settings.base_url}/llms.txt",
            },
        },
        "x-dnah-default": {
            "description": f"A served operation no price rule matches (x-dnah-price-rule: default): "
            f"{cost_text(default)}",
            "x-payment-info": payment_info(default, settings),
        },
    }


def _link(op: dict[str, Any], method: str, path: str) -> None:
    found = LINKS.get((method, path))
    if found is None:
        return
    status, links = found
    op["responses"][status]["links"] = {
        name: {"operationId": target, "parameters": {param: "$response.body#/id"}}
        for name, (target, param) in links.items()
    }


def _describe(core_text: str | None, quote: Priced, path: str) -> str:
    text = f"{cost_text(quote)} per request"
    if path.startswith(SEED_TOOLBOX):
        text += f" (the same operation as `{TOOLBOX}{path.removeprefix(SEED_TOOLBOX)}`)"
    return f"{text}.\n\n{core_text}" if core_text else text + "."


def _security(quote: Priced, settings: DiscoverySettings, path: str = "") -> list[dict[str, list[str]]]:
    """Who may call an operation: no one needs anything for a free one; a key (E2B's control
    plane takes it as X-API-KEY too) or a payment as the mode says. envd's calls also need the
    sandbox's access token (``X-Access-Token``, in each alternative); in bearer mode that token
    alone, since envd takes no API key there."""
    if quote.free:
        return []
    envd = path.startswith(e2b.ENVD_PREFIX + "/")
    keys: list[dict[str, list[str]]] = [{"bearer": []}]
    if envd or path.split("/")[1:2] in (["v2"], ["sandboxes"], ["snapshots"], ["templates"]):
        keys.append({"apiKey": []})
    if not quote.payable or not settings.paid:
        alternatives = keys
    elif settings.mode == "both":
        alternatives = [{"payment": []}, *keys]
    else:
        alternatives = [{"payment": []}]
    if not envd:
        return alternatives
    if not settings.paid:
        return [{"accessToken": []}]
    return [{**alternative, "accessToken": []} for alternative in alternatives]


def _merge(responses: dict[str, Any], status: int, media: str, schema: dict[str, Any], text: str) -> None:
    """Add an answer the gateway may give (``status``, ``media``) to an operation's responses.
    Where the core documents another body for the same status and media type (envd's
    ``{code, message}`` beside the gateway's ``ErrorBody`` on a 502), the answer is either."""
    response = responses.setdefault(str(status), {"description": text})
    if text not in response["description"]:
        response["description"] += "; " + text
    content = response.setdefault("content", {})
    known = content.get(media, {}).get("schema")
    if known is None or known == schema:
        content[media] = {"schema": schema}
    elif schema not in known.get("anyOf", []):
        content[media] = {"schema": {"anyOf": [*known.get("anyOf", [known]), schema]}}


def _responses(
    core: dict[str, Any], quote: Priced, settings: DiscoverySettings, has_body: bool
) -> dict[str, Any]:
    responses = copy.deepcopy(core)
    if has_body:  # the core's (and its guard's) size limits, which its route handlers do not declare
        _merge(responses, 413, "application/json", ERROR, "The body is over the core's limit")
    if quote.payable and not quote.free and settings.paid:
        for ok in (r for code, r in responses.items() if code.startswith("2")):
            ok.setdefault("headers", {})["Payment-Receipt"] = {
                "description": "base64url JSON receipt of the payment (method, reference = tx hash)",
                "schema": {"type": "string"},
            }
        responses["402"] = {"$ref": "#/components/responses/PaymentRequired"}
        problems = {
            400: "The Payment credential or the URL cannot be used",
            403: "The payment did not verify",
            409: "The Idempotency-Key or the credential is in use by a request in progress",
            413: "A paid request's body is over the limit",
            422: "The Idempotency-Key was used for a different request",
            503: "payment-outcome-unknown (retry with the same credential) or service-unavailable",
        }
        for status, text in problems.items():
            _merge(responses, status, "application/problem+json", PROBLEM, text)
    _merge(responses, 429, "application/json", ERROR, "Over a rate limit; Retry-After says when to retry")
    _merge(responses, 502, "application/json", ERROR, "The core is unreachable")
    _merge(responses, 504, "application/json", ERROR, "The core did not answer in time")
    return dict(sorted(responses.items()))


def _operation_id(method: str, path: str, used: set[str]) -> str:
    base = method.lower() + "_" + (re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_") or "root")
    candidate, n = base, 1
    while candidate in used:
        n += 1
        candidate = f"{base}_{n}"
    used.add(candidate)
    return candidate


def _json(schema: dict[str, Any], text: str, media: str = "application/json") -> dict[str, Any]:
    return {"description": text, "content": {media: {"schema": schema}}}


def _free(op_id: str, summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    if op_id != "get_health":  # /health spends no rate-limit budget (gateway/ratelimit.py)
        responses = {**responses, "429": _json(ERROR, "Over a rate limit; Retry-After says when to retry")}
    return {
        "operationId": op_id,
        "summary": summary,
        "description": "Free: answered by the gateway itself.",
        "tags": [FREE_GROUP],
        "security": [],
        "responses": responses,
        "x-payment-info": {"authMode": "none"},
        **extra,
    }


def _gateway_paths(table: PriceTable, settings: DiscoverySettings) -> dict[str, Any]:
    """The routes the gateway answers itself (``gateway/app.py``); never forwarded, never paid."""

    def summary(path: str, fallback: str) -> str:
        quote = table.quote("GET", path)
        return quote.description if quote.pattern == path else fallback

    obj = {"type": "object"}
    quote_params = [
        {"name": "method", "in": "query", "required": True, "schema": {"type": "string"}},
        {"name": "path", "in": "query", "required": True, "schema": {"type": "string"}},
    ]
    bad_quote = _json(
        PROBLEM, "`method` is not a method name or `path` does not start with /", "application/problem+json"
    )
    health_doc = {"$ref": "#/components/schemas/GatewayHealth"}
    return {
        "/health": {
            "get": _free(
                "get_health",
                summary("/health", "Health of the gateway and the core"),
                {"200": _json(health_doc, "The core answers"), "503": _json(health_doc, "The core does not")},
            )
        },
        "/openapi.json": {
            "get": _free(
                "get_openapi_json",
                summary("/openapi.json", "This document"),
                {"200": _json(obj, "OpenAPI 3.1")},
            )
        },
        "/llms.txt": {
            "get": _free(
                "get_llms_txt",
                summary("/llms.txt", "Prices and how to pay, for agents"),
                {"200": _json({"type": "string"}, "Markdown", "text/markdown")},
            )
        },
        "/__mpp/health": {
            "get": _free(
                "get_mpp_health",
                summary("/__mpp/health", "Health check"),
                {"200": _json(obj, "The core answers"), "503": _json(obj, "The core does not")},
            )
        },
        "/__mpp/config": {
            "get": _free(
                "get_mpp_config", summary("/__mpp/config", "Payment configuration"), {"200": _json(obj, "")}
            )
        },
        QUOTE_PATH: {
            "get": _free(
                "get_mpp_quote",
                summary(QUOTE_PATH, "Price of a request (dry run)"),
                {
                    "200": _json(
                        {"$ref": "#/components/schemas/Quote"},
                        "What `method path` would cost (the same quote the 402 would carry)",
                    ),
                    "400": bad_quote,
                },
                parameters=quote_params,
            )
        },
    }


def _info(settings: DiscoverySettings) -> str:
    if not settings.paid:
        return "Sandboxes for AI agents. Every non-free call needs `Authorization: Bearer <API key>`."
    text = (
        "Sandboxes for AI agents, paid per request over the Machine Payments Protocol "
        f"(HTTP 402, Tempo charge on {settings.network}, chain {settings.chain_id}). "
        f"Prices and payment rules: {settings.base_url}/llms.txt"
    )
    if settings.mode == "both":
        text += ". A bearer API key works instead of paying."
    return text


def _components(core: dict[str, Any], settings: DiscoverySettings) -> dict[str, Any]:
    schemes: dict[str, Any] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "An API key of the core."},
        "apiKey": {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-KEY",
            "description": "The same API key, as E2B's SDKs send it (E2B's routes, and envd's streams).",
        },
        "accessToken": {
            "type": "apiKey",
            "in": "header",
            "name": "X-Access-Token",
            "description": "A sandbox's envdAccessToken (from E2B's create or connect): every envd call.",
        },
    }
    if settings.paid:
        schemes["payment"] = {
            "type": "http",
            "scheme": "Payment",
            "description": "MPP: answer the 402's WWW-Authenticate Payment challenge "
            "(method tempo, intent charge) with Authorization: Payment <credential>.",
        }
    schemas = copy.deepcopy(core.get("components", {}).get("schemas", {}))
    gateway_schemas = _gateway_schemas()
    clash = set(schemas) & set(gateway_schemas)
    assert not clash, f"the core's and the gateway's schemas share names: {clash}"
    schemas.update(gateway_schemas)
    return {
        "securitySchemes": schemes,
        "schemas": dict(sorted(schemas.items())),
        "responses": {
            "PaymentRequired": {
                "description": "Payment required: pay the challenge and repeat the request "
                "with Authorization: Payment <credential>",
                "headers": {
                    "WWW-Authenticate": {
                        "description": 'Payment id="…", realm="…", method="tempo", intent="charge", '
                        'request="<base64url JSON: amount, currency, recipient, methodDetails>", '
                        'expires="…" (one per accepted currency)',
                        "schema": {"type": "string"},
                    }
                },
                "content": {"application/problem+json": {"schema": PROBLEM}},
            },
        },
    }


def _gateway_schemas() -> dict[str, Any]:
    return {
        "Problem": {
            "type": "object",
            "description": "RFC 9457 problem details",
            "properties": {
                "type": {"type": "string"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
                "challengeId": {"type": "string"},
            },
            "required": ["type", "title", "status"],
        },
        "GatewayHealth": {
            "type": "object",
            "properties": {"status": {"enum": ["ok", "degraded"]}, "core": {"type": "string"}},
            "required": ["status", "core"],
        },
        "Quote": {
            "type": "object",
            "description": "amount is in base units; price is the same in USD",
            "properties": {
                "method": {"type": "string"},
                "path": {"type": "string"},
                "amount": {"type": "string"},
                "price": {"type": "string"},
                "currency": {"type": ["string", "null"]},
                "decimals": {"type": "integer"},
                "description": {"type": "string"},
                "free": {"type": "boolean"},
                "payable": {"type": "boolean"},
                "served": {
                    "type": "boolean",
                    "description": "false: the API has no such route; the request is "
                    "answered 404 or 405 and never charged (amount 0, free)",
                },
            },
        },
    }


__all__ = ["ServedDocument", "core_document", "example_path", "openapi", "public_paths"]
