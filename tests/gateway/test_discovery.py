"""One price table feeds the quote, the OpenAPI document and llms.txt: for every route of the
shipped table (a concrete example path for each ``{param}`` and ``**`` rule, every method of
a ``"*"`` rule) the quote and llms.txt say the same amount, and every operation the OpenAPI
document lists is priced as the gate prices a request to it. The 402 challenge joins them
through ``expected_price`` and ``price_cases``, which the payment tests reuse.

The document lists exactly what is served (the core's routes, seed 004's toolbox paths, the
gateway's own), is valid OpenAPI 3.1, and nothing secret from the gateway's config reaches
any discovery document.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from contracts.core_routes import CORE_ROUTES
from contracts.e2b import ENVD_ROUTES
from gateway.apidoc import ServedDocument, example_path, openapi, public_paths
from gateway.config import load_config
from gateway.discovery import (
    DiscoverySettings,
    llms_txt,
    mpp_config,
    mpp_health,
    settings_from_config,
)
from gateway.forward import map_path
from gateway.served import ServedRoutes
from pricing import PriceTable, Quote, RouteRule, default_table_path, load_table, parse_table

PATH_USD = "0x20c0000000000000000000000000000000000000"
USDC_E = "0x20C000000000000000000000b9537d11c60E8b50"
RECIPIENT = "0x742d35Cc6634c0532925a3b844bC9e7595F8fE00"
UNMATCHED = "/no-such-route/at/all"
EXAMPLE_REST = "custom/sub/path"


def settings(mode: str = "payment", **changes: object) -> DiscoverySettings:
    fields: dict[str, object] = {
        "base_url": "https://sandbox.example",
        "mode": mode,
        "network": "testnet",
        "chain_id": 42431,
        "currencies": (PATH_USD, USDC_E),
        "recipient": RECIPIENT,
        "realm": "sandbox.example",
    }
    fields.update(changes)
    return DiscoverySettings(**fields)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return load_table(default_table_path())


# Helpers the payment tests reuse -------------------------------------------------------------


@dataclass(frozen=True)
class PriceCase:
    """One request to price: ``method path``, made from ``rule`` (``path`` is concrete)."""

    method: str
    path: str
    rule: RouteRule


ANY_METHOD = ("GET", "POST", "PUT", "PATCH", "DELETE")
"""The methods a price case tries for a ``"*"`` rule."""


def rule_example(pattern: str) -> str:
    """A concrete request path for a table pattern: ``{id}`` → ``ex-id-7``, ``**`` →
    ``custom/sub/path`` (values no literal segment of a table uses)."""
    segments = []
    for seg in pattern.split("/")[1:]:
        if seg == "**":
            segments.append(EXAMPLE_REST)
        elif seg.startswith("{"):
            segments.append(f"ex-{seg[1:-1]}-7")
        else:
            segments.append(seg)
    return "/" + "/".join(segments)


def price_cases(table: PriceTable) -> list[PriceCase]:
    """Every route of ``table`` as concrete requests: one per method (a ``"*"`` rule once per
    documented method), plus one request that only the default prices."""
    cases = []
    for rule in table.routes():
        methods = ANY_METHOD if rule.methods == ("*",) else rule.methods
        cases += [PriceCase(method, rule_example(rule.pattern), rule) for method in methods]
    cases.append(PriceCase("GET", UNMATCHED, table.default))
    return cases


def expected_price(table: PriceTable, method: str, path: str) -> int | None:
    """What ``method path`` must be charged, in base units, per the table; ``None`` when no
    payment may be asked for (a free route, or a bearer-only one). The 402 challenge, the
    quote route, OpenAPI and llms.txt must all agree with this."""
    quote = table.quote(method, path)
    if not quote.payable or quote.free:
        return None
    return quote.amount


def _case_id(case: PriceCase) -> str:
    return f"{case.method} {case.path}"


CASES = price_cases(load_table(default_table_path()))


# Reading the documents back --------------------------------------------------------------------


def _base_units(usd: str) -> int:
    return int(Decimal(usd) * 10**6)


_ROW = re.compile(r"^\| ([A-Z, ]+) \| (/\S*) \| ([^|]+) \| [^|]+ \|$", re.M)
_FREE = re.compile(r"^- `([A-Z]+) (/[^`?]*)(?:\?[^`]*)?` — ", re.M)


def llms_prices(text: str) -> dict[tuple[str, str], str]:
    """``(method, pattern) → cost cell`` from llms.txt (``ANY`` rows under ``"*"``)."""
    found: dict[tuple[str, str], str] = {}
    for methods, pattern, cost in _ROW.findall(text):
        for method in methods.split(", "):
            found[("*" if method == "ANY" else method, pattern)] = cost.strip()
    for method, pattern in _FREE.findall(text):
        found[(method, pattern)] = "free"
    return found


def _llms_amount(cost: str) -> int | None:
    if cost in ("free", "bearer key only"):
        return None
    assert cost.startswith("$"), cost
    return _base_units(cost[1:])


# Agreement: quote = llms.txt; the document prices each operation as the gate does ------------


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_quote_and_llms_agree(table: PriceTable, case: PriceCase) -> None:
    quote = table.quote(case.method, case.path)
    expected = expected_price(table, case.method, case.path)
    assert quote.pattern == case.rule.pattern, "the example path must exercise its own rule"
    text = llms_txt(table, settings())
    if case.path == UNMATCHED:
        assert f"Any other request: ${quote.price} " in text
        return
    prices = llms_prices(text)
    cost = prices.get((case.method, quote.pattern), prices.get(("*", quote.pattern)))
    assert cost is not None, f"llms.txt lists no price for {case.method} {quote.pattern}"
    assert _llms_amount(cost) == expected


def operations(doc: dict) -> list[tuple[str, str, dict]]:
    """``(METHOD, path, operation)`` for every documented operation."""
    return [
        (method.upper(), path, op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if not method.startswith("x-")
    ]


@pytest.mark.parametrize("mode", ["payment", "both"])
def test_every_documented_operation_is_priced_as_the_gate_prices_it(table: PriceTable, mode: str) -> None:
    doc = openapi(table, settings(mode))
    for method, path, op in operations(doc):
        if path in GATEWAY_ROUTES:
            assert op["x-payment-info"] == {"authMode": "none"} and op["security"] == []
            continue
        concrete = example_path(path, op)
        quote = table.quote(method, concrete)
        assert op["x-dnah-price-rule"] == quote.pattern
        _assert_operation_priced(op, quote, expected_price(table, method, concrete), path)
        if mode == "both" and quote.payable and not quote.free:
            assert op["security"] == _with_e2b([{"payment": []}, {"bearer": []}], path)


def _with_e2b(security: list[dict], path: str) -> list[dict]:
    """The security an operation has once E2B's credentials are added: its routes take the API
    key as X-API-KEY too, and envd's need the sandbox's access token in every alternative."""
    if not path.startswith(("/envd/", "/v2/", "/sandboxes", "/snapshots", "/templates/")):
        return security
    keyed = [*security, {"apiKey": []}] if {"bearer": []} in security else security
    if path.startswith("/envd/"):
        return [{**alternative, "accessToken": []} for alternative in keyed]
    return keyed


def _assert_operation_priced(op: dict, quote: Quote, expected: int | None, path: str = "") -> None:
    info = op.get("x-payment-info")
    if not quote.payable:
        assert info is None
        assert op["security"] == _with_e2b([{"bearer": []}], path)
        assert "402" not in op["responses"]
    elif quote.free:
        assert info == {"authMode": "none"}
        assert op["security"] == []
        assert "402" not in op["responses"]
    else:
        assert expected is not None and info is not None
        assert info["amount"] == str(expected)
        assert _base_units(info["price"]) == expected
        assert len(info["price"].split(".")[1]) == 6
        assert info["description"] == quote.description
        assert (info["intent"], info["method"], info["currency"]) == ("charge", "tempo", PATH_USD)
        assert (info["pricingMode"], info["protocols"], info["authMode"]) == ("fixed", ["mpp"], "paid")
        assert op["responses"]["402"] == {"$ref": "#/components/responses/PaymentRequired"}


def test_the_sandbox_prices_of_seed_004(table: PriceTable) -> None:
    """Spot checks against the seed, through the helper the 402 tests use."""
    assert expected_price(table, "POST", "/sandbox") == 10_000
    assert expected_price(table, "POST", "/sandbox/abc123/resize") == 2_000
    assert expected_price(table, "DELETE", "/sandbox/abc123") == 1_000
    assert expected_price(table, "POST", "/sandbox/abc123/toolbox/git/status") == 100
    assert expected_price(table, "GET", "/llms.txt") is None
    assert expected_price(table, "POST", "/v1/api-keys") is None
    doc = openapi(table, settings())
    assert doc["paths"]["/sandbox"]["post"]["x-payment-info"]["amount"] == "10000"
    assert doc["paths"]["/sandbox/{ref}"]["delete"]["x-payment-info"]["amount"] == "1000"
    clone = "/sandbox/{sandbox_id}/toolbox/git/clone"
    assert doc["paths"][clone]["post"]["x-payment-info"]["amount"] == "1000"


# What is documented is what is served ---------------------------------------------------------

GATEWAY_ROUTES = {"/health", "/openapi.json", "/llms.txt", "/__mpp/health", "/__mpp/config", "/__mpp/quote"}
"""The routes the gateway answers itself in the payment modes (``gateway/app.py``)."""


def served_operations() -> set[tuple[str, str]]:
    """Every (method, path) a client can reach: the core's routes but ``/internal/*`` and
    ``OPTIONS`` (a WebSocket as the GET that opens it), each ``/toolbox/{sandbox_id}/…`` also
    as seed 004's ``/sandbox/{sandbox_id}/toolbox/…``, and the gateway's own routes."""
    served = {("GET", path) for path in GATEWAY_ROUTES}
    for method, template in CORE_ROUTES + ENVD_ROUTES:
        if method == "OPTIONS" or template.startswith("/internal/"):
            continue
        path = template.replace(":int}", "}")
        for public in public_paths(path):
            served.add(("GET" if method == "WEBSOCKET" else method, public))
    return served


@pytest.mark.parametrize("mode", ["payment", "both"])
def test_the_document_lists_exactly_what_is_served(table: PriceTable, mode: str) -> None:
    """ "A route that is not documented does not exist", and the other way round."""
    documented = {(method, path) for method, path, _ in operations(openapi(table, settings(mode)))}
    served = served_operations()
    assert not served - documented, f"served but not documented: {sorted(served - documented)}"
    assert not documented - served, f"documented but not served: {sorted(documented - served)}"


def test_every_documented_operation_reaches_a_route() -> None:
    """Each documented operation, with example parameter values, is one the core's router
    takes after the gateway's path mapping (so no documented request gets a router's 404/405)."""
    routes = ServedRoutes()
    doc = openapi(load_table(default_table_path()), settings())
    for method, path, op in operations(doc):
        if path in GATEWAY_ROUTES:
            continue
        target = map_path(example_path(path, op).encode()).decode()
        assert routes.serves(method, target), f"{method} {path} ({target}) reaches no route of the core"


def test_a_rule_documents_only_what_the_core_serves(table: PriceTable) -> None:
    """The outside tester's drifts: a ``"*"`` rule documents the methods the core serves under
    it, not five; a table rule for a route the core lacks documents nothing."""
    paths = openapi(table, settings())["paths"]
    assert set(paths["/v1/webhooks"]) == {"get", "post"}
    assert set(paths["/v1/webhooks/{webhook_id}"]) == {"delete"}
    assert set(paths["/v1/sandboxes/{sandbox_id}/files"]) == {"get", "put", "delete"}
    assert table.quote("POST", "/sandbox/x/backup").pattern == "/sandbox/{id}/backup"
    # seed 004's rules document their routes once the core serves them
    assert {"/sandbox/{ref}/backup", "/sandbox/{ref}/ssh-access", "/sandbox/ssh-access/validate"} <= set(
        paths
    )
    unserved = default_table_path().read_text() + (
        '\n[[route]]\nmethod = "POST"\npath = "/sandbox/{id}/not-built"\nprice = "0.001"\n'
        'description = "A route the core lacks"\n'
    )
    assert not [p for p in openapi(parse_table(unserved), settings())["paths"] if "not-built" in p]


def test_the_natural_chains_are_linked(table: PriceTable) -> None:
    """Stateful testers follow links: create a sandbox → read it, run a command, delete it."""
    paths = openapi(table, settings())["paths"]
    links = paths["/v1/sandboxes"]["post"]["responses"]["201"]["links"]
    assert links["Exec"] == {
        "operationId": "post_v1_sandboxes_sandbox_id_exec",
        "parameters": {"sandbox_id": "$response.body#/id"},
    }
    assert set(paths["/sandbox"]["post"]["responses"]["200"]["links"]) == {
        "GetSandbox",
        "Execute",
        "DeleteSandbox",
    }


def test_terminals_are_documented_as_their_upgrade(table: PriceTable) -> None:
    paths = openapi(table, settings())["paths"]
    for path in (
        "/v1/sandboxes/{sandbox_id}/terminal",
        "/toolbox/{sandbox_id}/process/pty/create-connect",
        "/sandbox/{sandbox_id}/toolbox/process/pty/{session_id}/connect",
    ):
        op = paths[path]["get"]
        assert op["x-dnah-websocket"] is True
        assert {"101", "426", "401"} <= set(op["responses"])
        assert op["security"] == [{"bearer": []}] and "x-payment-info" not in op


def test_documented_bodies_are_the_core_types(table: PriceTable) -> None:
    """Request and response schemas come from the core's msgspec types (Litestar's generator),
    so an invalid body can be generated and a wrong answer caught."""
    doc = openapi(table, settings())
    create = doc["paths"]["/v1/sandboxes"]["post"]
    body = create["requestBody"]["content"]["application/json"]["schema"]
    assert {"$ref": "#/components/schemas/CreateSandbox"} in body["oneOf"]
    assert create["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Sandbox"
    }
    assert "template" in doc["components"]["schemas"]["CreateSandbox"]["properties"]
    error = create["responses"]["404" if "404" in create["responses"] else "400"]
    assert error["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
    quote = doc["paths"]["/__mpp/quote"]["get"]
    assert quote["responses"]["400"]["content"]["application/problem+json"]
    assert [p["name"] for p in quote["parameters"]] == ["method", "path"]


def test_the_served_document_is_built_once_per_table(table: PriceTable) -> None:
    """Building takes a few hundred ms; a reload (a new table) is seen by the next request."""
    served = ServedDocument(settings())
    first = served.body(table)
    assert served.body(table) is first
    assert json.loads(first) == json.loads(json.dumps(openapi(table, settings())))
    text = (
        default_table_path()
        .read_text()
        .replace(
            'price = "0.01"\ndescription = "Create a sandbox"',
            'price = "0.02"\ndescription = "Create a sandbox"',
        )
    )
    reloaded = parse_table(text)
    doc = json.loads(served.body(reloaded))
    assert doc["paths"]["/v1/sandboxes"]["post"]["x-payment-info"]["amount"] == "20000"


# OpenAPI shape ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["payment", "both", "bearer"])
def test_openapi_is_valid_openapi_3_1(table: PriceTable, mode: str) -> None:
    doc = openapi(table, settings(mode))
    _check_structure(doc)
    validator = pytest.importorskip("openapi_spec_validator", reason="dev dependency openapi-spec-validator")
    validator.validate(json.loads(json.dumps(doc)))


def _check_structure(doc: dict) -> None:
    """What the validator checks and a few things it does not (identical templates)."""
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["title"] and doc["info"]["version"]
    shapes = set()
    operation_ids = set()
    links: set[str] = set()
    for template, item in doc["paths"].items():
        assert template.startswith("/")
        shape = re.sub(r"\{[^}]+\}", "{}", template)
        assert shape not in shapes, f"two paths with the shape {shape}"
        shapes.add(shape)
        declared = re.findall(r"\{([^}]+)\}", template)
        for method, op in item.items():
            assert method in ("get", "post", "put", "patch", "delete")
            names = [p["name"] for p in op.get("parameters", []) if p["in"] == "path"]
            assert sorted(names) == sorted(declared), f"{method} {template}"
            assert op["operationId"] not in operation_ids
            operation_ids.add(op["operationId"])
            assert any(code.startswith(("2", "1")) for code in op["responses"]), f"{method} {template}"
            if method == "get":
                assert "requestBody" not in op
            for response in op["responses"].values():
                links.update(link["operationId"] for link in response.get("links", {}).values())
    assert links <= operation_ids, f"links to no operation: {links - operation_ids}"


def test_openapi_top_level_discovery_fields(table: PriceTable) -> None:
    doc = openapi(table, settings())
    assert doc["servers"] == [{"url": "https://sandbox.example"}]
    assert doc["x-service-info"]["docs"]["llms"] == "https://sandbox.example/llms.txt"
    problem = doc["components"]["responses"]["PaymentRequired"]["content"]["application/problem+json"]
    assert problem["schema"] == {"$ref": "#/components/schemas/Problem"}
    assert doc["components"]["securitySchemes"]["payment"]["scheme"] == "Payment"
    assert doc["x-dnah-default"]["x-payment-info"]["amount"] == str(table.default.amount)


def test_openapi_in_bearer_mode_sells_nothing(table: PriceTable) -> None:
    doc = openapi(table, settings("bearer"))
    for item in doc["paths"].values():
        for op in item.values():
            assert op.get("x-payment-info") in (None, {"authMode": "none"})
            assert "402" not in op["responses"]
    assert "payment" not in doc["components"]["securitySchemes"]


# llms.txt --------------------------------------------------------------------------------------


def test_llms_txt_says_how_to_pay(table: PriceTable) -> None:
    text = llms_txt(table, settings())
    base = "https://sandbox.example"
    assert text.startswith("# ")
    assert f"## Base URL\n\n{base}\n" in text
    for tool in ("tempo request", "dnah request"):
        assert f"{tool} -X POST --json '{{}}' {base}/sandbox" in text.replace(" -n testnet", "")
        assert f"{base}/sandbox/$SBX/toolbox/process/execute" in text
        assert f"{tool} -X DELETE {base}/sandbox/$SBX" in text.replace(" -n testnet", "")
    assert "--dry-run" in text
    assert f"{base}/__mpp/quote?method=POST&path=/sandbox" in text
    assert "`GET /__mpp/quote?method=METHOD&path=PATH`" in text
    assert "# 1. Create a sandbox ($0.01)" in text
    assert "# 3. Delete it ($0.001)" in text
    assert RECIPIENT in text and PATH_USD in text and "chain id 42431" in text


def test_llms_txt_states_the_money_safety_rules(table: PriceTable) -> None:
    text = " ".join(llms_txt(table, settings()).split())
    assert (
        "A paid request that the core rejects or fails (status ≥ 400) is recorded and its amount "
        "credited to the payer; credit pays for the payer's next paid request instead of a new "
        "on-chain transfer." in text
    )
    assert (
        "Idempotency-Key on POST/PUT/DELETE: a retry with the same key returns the stored response "
        "and is charged once." in text
    )
    assert (
        "If the chain's answer is unknown the gateway answers 503 payment-outcome-unknown and never "
        "asks you to pay twice for that request: retry with the same credential." in text
    )
    assert "Authorization: Bearer <key>" in text


def test_llms_txt_lists_every_free_endpoint_and_the_default(table: PriceTable) -> None:
    prices = llms_prices(llms_txt(table, settings()))
    free = [r for r in table.routes() if r.free]
    assert free
    for rule in free:
        assert prices[(rule.methods[0], rule.pattern)] == "free"
    assert "Any other request: $0.0001 (API request)." in llms_txt(table, settings())


def test_llms_txt_on_a_devnet_points_at_dnah_request(table: PriceTable) -> None:
    text = llms_txt(table, settings(network="devnet", chain_id=1337, currencies=(PATH_USD,)))
    assert "Tempo CLI cannot pay on" in text and "dnah wallet fund" in text
    assert " -n testnet" not in text


def test_llms_txt_in_bearer_mode(table: PriceTable) -> None:
    text = llms_txt(table, settings("bearer"))
    assert "Payments are off" in text and "Authorization: Bearer" in text
    assert "How to pay" not in text and "Money safety" not in text


# /__mpp/* ------------------------------------------------------------------------------------

SECRET = "fake-hmac-secret-0123456789abcdefghijklmnop"
EDGE_TOKEN = "fake-edge-token-0123456789abcdefghijklmnop"


def _real_settings() -> DiscoverySettings:
    config = load_config(
        {
            "DNAH_GATEWAY_MODE": "payment",
            "DNAH_PAYMENT_NETWORK": "devnet",
            "DNAH_PAYMENT_RECIPIENT": RECIPIENT,
            "DNAH_MPP_SECRET": SECRET,
            "DNAH_EDGE_TOKEN": EDGE_TOKEN,
            "DNAH_REDIS_URL": "redis://127.0.0.1:6379/0",
            "DNAH_PUBLIC_URL": "https://pay.example:8443/",
        }
    )
    return settings_from_config(config)


def test_no_secret_reaches_any_document(table: PriceTable) -> None:
    conf = _real_settings()
    assert conf.base_url == "https://pay.example:8443"
    assert conf.realm == "pay.example:8443" and conf.chain_id == 1337
    outputs = [
        json.dumps(mpp_config(conf)),
        json.dumps(mpp_health(conf, True)),
        json.dumps(openapi(table, conf)),
        llms_txt(table, conf),
        repr(conf),
    ]
    for text in outputs:
        assert SECRET not in text and EDGE_TOKEN not in text
        assert "fake-" not in text


def test_mpp_config_shape() -> None:
    conf = _real_settings()
    doc = mpp_config(conf)
    assert doc["paymentScheme"] == "Payment" and doc["paymentMethod"] == "tempo"
    assert doc["payTo"] == RECIPIENT
    assert doc["chainId"] == 1337 and doc["network"] == "devnet" and doc["tempoTestnet"] is False
    assert doc["currencies"] == [{"address": PATH_USD, "symbol": "pathUSD", "decimals": 6}]
    assert doc["docs"]["llms"] == "https://pay.example:8443/llms.txt"
    bearer = mpp_config(settings("bearer"))
    assert bearer["paymentScheme"] is None and "payTo" not in bearer


def test_mpp_health_shape() -> None:
    moment = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
    assert mpp_health(settings(), True, now=moment) == {
        "status": "ok",
        "proxy": "dnah",
        "paymentMethod": "tempo",
        "mode": "payment",
        "upstream": "ok",
        "timestamp": "2026-01-15T12:00:00Z",
    }
    down = mpp_health(settings(), False)
    assert (down["status"], down["upstream"]) == ("degraded", "unreachable")
