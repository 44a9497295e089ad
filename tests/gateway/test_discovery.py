"""One price table feeds the quote, the OpenAPI document and llms.txt: for every route of the
shipped table (a concrete example path for each ``{param}`` and ``**`` rule, every method of
a ``"*"`` rule) the three say the same amount. The 402 challenge joins them through
``expected_price`` and ``price_cases``, which the payment tests reuse.

Also: the OpenAPI document is valid OpenAPI 3.1, and nothing secret from the gateway's config
reaches any discovery document.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from gateway.config import load_config
from gateway.discovery import (
    ANY_METHOD_AS,
    DiscoverySettings,
    llms_txt,
    mpp_config,
    mpp_health,
    openapi,
    settings_from_config,
)
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


def example_path(pattern: str) -> str:
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
        methods = ANY_METHOD_AS if rule.methods == ("*",) else rule.methods
        cases += [PriceCase(method, example_path(rule.pattern), rule) for method in methods]
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


def _template(pattern: str) -> str:
    return pattern.replace("/**", "/{rest}")


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


# Agreement: quote = OpenAPI = llms.txt ---------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_quote_openapi_and_llms_agree(table: PriceTable, case: PriceCase) -> None:
    quote = table.quote(case.method, case.path)
    expected = expected_price(table, case.method, case.path)
    assert quote.pattern == case.rule.pattern, "the example path must exercise its own rule"
    doc = openapi(table, settings())
    prices = llms_prices(llms_txt(table, settings()))

    if case.path == UNMATCHED:
        info = doc["x-dnah-default"]["x-payment-info"]
        assert info["amount"] == str(quote.amount)
        assert f"Any other request: ${quote.price} " in llms_txt(table, settings())
        return

    op = doc["paths"][_template(case.rule.pattern)][case.method.lower()]
    cost = prices.get((case.method, quote.pattern), prices.get(("*", quote.pattern)))
    assert cost is not None, f"llms.txt lists no price for {case.method} {quote.pattern}"
    assert _llms_amount(cost) == expected
    _assert_operation_priced(op, quote, expected)


def _assert_operation_priced(op: dict, quote: Quote, expected: int | None) -> None:
    info = op.get("x-payment-info")
    if not quote.payable:
        assert info is None
        assert op["security"] == [{"bearer": []}]
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


def test_every_documented_operation_is_priced_as_the_table_says(table: PriceTable) -> None:
    """The other direction: no operation in the document carries a price the table would not
    charge for it (so nothing is documented twice, or from the wrong rule)."""
    doc = openapi(table, settings())
    count = 0
    for template, item in doc["paths"].items():
        for method, op in item.items():
            if method.startswith("x-"):
                continue
            rest = [p["name"] for p in op.get("parameters", []) if p.get("x-dnah-wildcard")]
            path = template
            for name in rest:
                path = path.replace("{" + name + "}", EXAMPLE_REST)
            path = re.sub(r"\{([A-Za-z0-9_]+)\}", r"ex-\1-7", path)
            quote = table.quote(method, path)
            _assert_operation_priced(op, quote, expected_price(table, method, path))
            count += 1
    assert count == len(CASES) - 1  # every case but the default is one operation


def test_the_sandbox_prices_of_seed_004(table: PriceTable) -> None:
    """Spot checks against the seed, through the helper the 402 tests use."""
    assert expected_price(table, "POST", "/sandbox") == 10_000
    assert expected_price(table, "POST", "/sandbox/abc123/resize") == 2_000
    assert expected_price(table, "DELETE", "/sandbox/abc123") == 1_000
    assert expected_price(table, "POST", "/sandbox/abc123/toolbox/git/status") == 100
    assert expected_price(table, "GET", "/llms.txt") is None
    assert expected_price(table, "POST", "/v1/api-keys") is None


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
    for template, item in doc["paths"].items():
        assert template.startswith("/")
        shape = re.sub(r"\{[^}]+\}", "{}", template)
        assert shape not in shapes, f"two paths with the shape {shape}"
        shapes.add(shape)
        declared = re.findall(r"\{([^}]+)\}", template)
        for method, op in item.items():
            if method.startswith("x-"):
                continue
            assert method in ("get", "post", "put", "patch", "delete")
            names = [p["name"] for p in op.get("parameters", []) if p["in"] == "path"]
            assert names == declared, f"{method} {template}"
            assert op["operationId"] not in operation_ids
            operation_ids.add(op["operationId"])
            assert op["responses"]["200"]
            if method in ("post", "put", "patch"):
                assert op["requestBody"]["content"]["application/json"]["schema"]["type"] == "object"
            else:
                assert "requestBody" not in op


def test_openapi_top_level_discovery_fields(table: PriceTable) -> None:
    doc = openapi(table, settings())
    assert doc["servers"] == [{"url": "https://sandbox.example"}]
    assert doc["x-service-info"]["docs"]["llms"] == "https://sandbox.example/llms.txt"
    problem = doc["components"]["responses"]["PaymentRequired"]["content"]["application/problem+json"]
    assert problem["schema"] == {"$ref": "#/components/schemas/Problem"}
    assert doc["components"]["securitySchemes"]["payment"]["scheme"] == "Payment"
    wildcard = doc["paths"]["/sandbox/{id}/toolbox/{rest}"]
    assert wildcard["x-dnah-pattern"] == "/sandbox/{id}/toolbox/**"
    assert set(wildcard) == {"get", "post", "put", "delete", "x-dnah-pattern"}
    assert wildcard["get"]["parameters"][-1]["x-dnah-wildcard"] is True
    native_any = doc["paths"]["/v1/sandboxes/{id}/{rest}"]
    assert {m for m in native_any if not m.startswith("x-")} == {"get", "post", "put", "patch", "delete"}
    assert native_any["patch"]["x-dnah-any-method"] is True
    quote = doc["paths"]["/__mpp/quote"]["get"]
    assert [p["name"] for p in quote["parameters"]] == ["method", "path"]


def test_openapi_in_both_mode_accepts_a_bearer_key_instead(table: PriceTable) -> None:
    op = openapi(table, settings("both"))["paths"]["/sandbox"]["post"]
    assert op["security"] == [{"payment": []}, {"bearer": []}]
    assert op["x-payment-info"]["amount"] == "10000"


def test_openapi_in_bearer_mode_sells_nothing(table: PriceTable) -> None:
    doc = openapi(table, settings("bearer"))
    for item in doc["paths"].values():
        for method, op in item.items():
            if method.startswith("x-"):
                continue
            assert op.get("x-payment-info") in (None, {"authMode": "none"})
            assert "402" not in op["responses"]
    assert "payment" not in doc["components"]["securitySchemes"]


def test_a_table_with_clashing_shapes_still_makes_valid_openapi() -> None:
    """Same shape, different parameter names (allowed for different methods), a method rule
    and an any-method rule on one pattern, and a wildcard whose ``{rest}`` path would clash."""
    table = parse_table(
        """
version = 1
[[route]]
method = "GET"
path = "/a/{x}"
price = "0.5"
description = "read"
[[route]]
method = "DELETE"
path = "/a/{y}"
price = "1"
description = "delete"
[[route]]
method = "*"
path = "/a/{x}/**"
price = "0.25"
description = "anything below"
[[route]]
method = "GET"
path = "/a/{x}/**"
price = "0.75"
description = "reads below"
[[route]]
method = "GET"
path = "/a/{x}/{z}"
price = "0.1"
description = "one level below"
"""
    )
    doc = openapi(table, settings())
    _check_structure(doc)
    assert set(doc["paths"]["/a/{x}"]) == {"get", "delete"}
    assert doc["paths"]["/a/{x}"]["delete"]["x-payment-info"]["amount"] == "1000000"
    below = doc["x-dnah-wildcards"]["/a/{x}/**"]
    assert below["get"]["x-payment-info"]["amount"] == str(table.quote("GET", "/a/b/c/d").amount) == "750000"
    assert (
        below["post"]["x-payment-info"]["amount"] == str(table.quote("POST", "/a/b/c/d").amount) == "250000"
    )
    pytest.importorskip("openapi_spec_validator").validate(json.loads(json.dumps(doc)))


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
