"""One price table feeds everything: for every route of the shipped table, the live 402
challenge, the free quote route, the live OpenAPI document and the live llms.txt all state
the price the table gives (the discovery functions are checked the same way, offline, in
test_discovery.py)."""

from __future__ import annotations

import httpx
import pytest

from gateway.apidoc import example_path
from gateway.forward import map_path
from gateway.served import ServedRoutes
from pricing import default_table_path, format_price, load_table
from tests.gateway.payment_fixtures import challenges
from tests.gateway.test_discovery import PriceCase, expected_price, price_cases

TABLE = load_table(default_table_path())
CASES = price_cases(TABLE)
ROUTES = ServedRoutes()


def challenged_amount(response: httpx.Response) -> int:
    (challenge,) = challenges(response)
    return int(challenge.request["amount"])


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.method} {c.path}")
async def test_402_and_quote_agree_with_the_table(case: PriceCase, anon: httpx.AsyncClient) -> None:
    expected = expected_price(TABLE, case.method, case.path)
    body = b"{}" if case.method in ("POST", "PUT", "PATCH") else None
    response = await anon.request(case.method, case.path, content=body)
    served = ROUTES.serves(case.method, map_path(case.path.encode()).decode())
    if expected is None or not served:  # a route the core does not serve is never sold
        assert response.status_code != 402, (case, response.text)
    else:
        assert response.status_code == 402, (case, response.text)
        assert challenged_amount(response) == expected
    quote = (await anon.get("/__mpp/quote", params={"method": case.method, "path": case.path})).json()
    assert int(quote["amount"]) == (expected if served and expected is not None else 0)
    assert quote["served"] is served


async def test_live_openapi_and_llms_txt_agree_with_the_table(anon: httpx.AsyncClient) -> None:
    spec = (await anon.get("/openapi.json")).json()
    llms = (await anon.get("/llms.txt")).text
    priced = 0
    for path, item in spec["paths"].items():
        for method, op in item.items():
            info = op.get("x-payment-info")
            if info is None or info == {"authMode": "none"}:
                continue
            quote = TABLE.quote(method, example_path(path, op))
            assert int(info["amount"]) == quote.amount, (method, path)
            priced += 1
    assert priced > 100
    for rule in TABLE.routes():
        if rule.payable and not rule.free:
            assert format_price(rule.amount) in llms or f"${rule.price}" in llms, rule.pattern
