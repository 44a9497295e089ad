"""The seed-004 routes issue 12 made real, walked through a payment-mode gateway: a funded
devnet wallet pays per call with pympp's client, as a Daytona user without an API key would.

``test_price_table_walk.py`` shows every priced route reaches a handler in bearer mode; this
is its payment-mode counterpart for the routes issue 12 added (the same steps, taken from its
``WALK``): each answers 2xx with the body its contract type describes, carries a payment
receipt, and costs exactly the table's price, seen three ways: the recipient's balance on
the devnet grows by the price during the call, the ledger has one on-chain row per call
with that amount, and the wallet paid the prices plus the chain's fees in all.

E2B's shape is walked the same way on a sandbox of its own: its create, list and read, and
envd's request/response calls (a file written and read, a ``Stat``) with the sandbox's
access token, each at the table's price.

Preview traffic is never sold: a public sandbox's path-based preview URL reaches a
``python3 -m http.server`` in the sandbox (started through the paid toolbox) with no
payment, no 402 and no receipt. One sandbox serves every step.
"""

# The fixtures are imported from payment_fixtures, so test arguments "redefine" them.
# ruff: noqa: F811

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import httpx
import msgspec
import pytest
from mpp import Receipt

from cli.stack import Stack
from contracts.e2b_api import E2bListedSandbox, E2bSandbox, E2bSandboxDetail
from contracts.preview import DaytonaPortPreviewUrl, DaytonaSignedPortPreviewUrl
from contracts.public import DaytonaPaginatedSandboxes, DaytonaSandbox, DaytonaToolboxUrl
from contracts.ssh import DaytonaSshAccess, DaytonaSshValidation
from tests.gateway.payment_fixtures import (  # noqa: F401 - fixtures are used by name
    Devnet,
    Payer,
    PayGateway,
    devnet,
    ledger,
    pay_gateway,
    payer,
)
from tests.gateway.test_payments import _wait_outcomes
from tests.stack.test_price_table_walk import PORT, TABLE, WALK, Context, Step, _fill, _keep
from tests.support import await_for

pytestmark = pytest.mark.stack

Check = Callable[[bytes, Context], None]
"""Says whether an answer's body has the shape (and the values) the step should give."""


def _walked(method: str, path: str) -> Step:
    """The bearer walk's step for ``method path``: both walks send the very same request."""
    [found] = [s for s in WALK if (s.method, s.path) == (method, path)]
    return found


def _sandbox(**want: Any) -> Check:
    def check(body: bytes, ctx: Context) -> None:
        sandbox = msgspec.json.decode(body, type=DaytonaSandbox)
        assert sandbox.id == ctx["sid"]
        for name, value in want.items():
            assert getattr(sandbox, name) == value, (name, getattr(sandbox, name))

    return check


def _page(body: bytes, ctx: Context) -> None:
    page = msgspec.json.decode(body, type=DaytonaPaginatedSandboxes)
    assert page.page == 1 and page.total >= 1 and page.total_pages >= 1
    assert ctx["sid"] in {s.id for s in page.items}


def _preview_url(body: bytes, ctx: Context) -> None:
    link = msgspec.json.decode(body, type=DaytonaPortPreviewUrl)
    assert link.sandbox_id == ctx["sid"] and link.token
    assert httpx.URL(link.url).path == f"/preview/{ctx['sid']}/{PORT}/"
    ctx["preview"] = link.url


def _signed_url(body: bytes, ctx: Context) -> None:
    link = msgspec.json.decode(body, type=DaytonaSignedPortPreviewUrl)
    assert (link.sandbox_id, link.port) == (ctx["sid"], PORT) and link.token in link.url


def _ssh_access(body: bytes, ctx: Context) -> None:
    access = msgspec.json.decode(body, type=DaytonaSshAccess)
    assert access.sandbox_id == ctx["sid"] and access.token and access.ssh_command


def _ssh_valid(body: bytes, ctx: Context) -> None:
    validation = msgspec.json.decode(body, type=DaytonaSshValidation)
    assert (validation.valid, validation.sandbox_id) == (True, ctx["sid"])


def _build_logs_url(body: bytes, ctx: Context) -> None:
    link = msgspec.json.decode(body, type=DaytonaToolboxUrl)
    assert httpx.URL(link.url).path == f"/sandbox/{ctx['sid']}/build-logs"
    ctx["logs"] = link.url


def _anything(body: bytes, ctx: Context) -> None:
    """The expire route answers with its status alone."""


def _e2b_sandbox(body: bytes, ctx: Context) -> None:
    made = msgspec.json.decode(body, type=E2bSandbox)
    assert made.sandbox_id == ctx["e2b"] and made.envd_access_token == ctx["envd"]


def _e2b_detail(body: bytes, ctx: Context) -> None:
    detail = msgspec.json.decode(body, type=E2bSandboxDetail)
    assert (detail.sandbox_id, detail.state) == (ctx["e2b"], "running")


def _e2b_listed(body: bytes, ctx: Context) -> None:
    listed = msgspec.json.decode(body, type=list[E2bListedSandbox])
    assert ctx["e2b"] in {s.sandbox_id for s in listed}


def _envd_entry(body: bytes, ctx: Context) -> None:
    entry = msgspec.json.decode(body)["entry"]
    assert entry["type"] == "FILE_TYPE_FILE" and entry["path"].endswith("/walk-e2b/a.txt")


def _envd_file(body: bytes, ctx: Context) -> None:
    assert body == b"e2b walk\n"


@dataclass(frozen=True)
class PaidStep:
    step: Step
    check: Check


CREATE = replace(_walked("POST", "/sandbox"), save=_keep(sid="id"))
PAID_WALK: list[PaidStep] = [
    PaidStep(CREATE, _sandbox(state="started")),
    PaidStep(_walked("GET", "/sandbox/paginated"), _page),
    PaidStep(_walked("POST", "/sandbox/{sid}/public/true"), _sandbox(public=True)),
    PaidStep(_walked("GET", f"/sandbox/{{sid}}/ports/{PORT}/preview-url"), _preview_url),
    PaidStep(_walked("GET", f"/sandbox/{{sid}}/ports/{PORT}/signed-preview-url"), _signed_url),
    PaidStep(
        _walked("POST", f"/sandbox/{{sid}}/ports/{PORT}/signed-preview-url/{{signed}}/expire"), _anything
    ),
    PaidStep(_walked("POST", "/sandbox/{sid}/ssh-access"), _ssh_access),
    PaidStep(_walked("GET", "/sandbox/ssh-access/validate"), _ssh_valid),
    PaidStep(_walked("DELETE", "/sandbox/{sid}/ssh-access"), _sandbox()),
    PaidStep(_walked("POST", "/sandbox/{life}/backup"), _sandbox(backup_state="Completed")),
    PaidStep(_walked("GET", "/sandbox/{sid}/build-logs-url"), _build_logs_url),
    # E2B's shape, with a sandbox of its own: the control plane and envd's request/response calls
    PaidStep(_walked("POST", "/v2/sandboxes"), _e2b_sandbox),
    PaidStep(_walked("GET", "/v2/sandboxes"), _e2b_listed),
    PaidStep(_walked("GET", "/sandboxes/{e2b}"), _e2b_detail),
    PaidStep(_walked("POST", "/envd/{e2b}/files"), _anything),
    PaidStep(_walked("GET", "/envd/{e2b}/files"), _envd_file),
    PaidStep(_walked("POST", "/envd/{e2b}/filesystem.Filesystem/Stat"), _envd_entry),
]


@dataclass
class Charges:
    """Every paid call of the test, and what the table says each costs."""

    payer: Payer
    devnet: Devnet
    recipient: str
    calls: list[tuple[str, str, int]]
    """(method, path without query, the table's price) per paid call, in order."""

    async def pay(self, client: httpx.AsyncClient, method: str, url: str, **kw: Any) -> httpx.Response:
        """Send one paid request; the recipient must gain exactly its price while it is made
        (the gateway confirms the transfer on chain before it forwards)."""
        path = httpx.URL(url).path
        price = TABLE.quote(method, path).amount
        before = self.devnet.balance(self.recipient)
        resp = await client.request(method, url, **kw)
        assert resp.status_code < 300, (method, url, resp.status_code, resp.text[:300])
        receipt = Receipt.from_payment_receipt(resp.headers["payment-receipt"])
        assert receipt.status == "success" and receipt.reference.startswith("0x"), receipt
        assert self.devnet.balance(self.recipient) - before == price, (method, path)
        self.calls.append((method, path, price))
        return resp


async def test_issue_12_routes_answer_and_are_charged_the_table_price_in_payment_mode(
    payer: Payer, pay_gateway: PayGateway, devnet: Devnet, stack: Stack
) -> None:
    charges = Charges(payer=payer, devnet=devnet, recipient=pay_gateway.recipient, calls=[])
    wallet_before = devnet.balance(payer.address)
    recipient_before = devnet.balance(pay_gateway.recipient)
    ctx: Context = {}
    async with payer.client(pay_gateway.url) as paying:
        try:
            for paid in PAID_WALK:
                s = paid.step
                resp = await charges.pay(
                    paying,
                    s.method,
                    _fill(s.path, ctx),
                    params=_fill(s.params, ctx) or None,
                    json=_fill(s.body, ctx) if s.body is not None else None,
                    files=s.files,
                    headers=_fill(s.headers, ctx) or None,
                )
                assert resp.status_code in s.expect, (s.method, s.path, resp.status_code)
                if s.save is not None:
                    s.save(resp.json(), ctx)
                paid.check(resp.content, ctx)
                if s is CREATE:
                    ctx["life"] = ctx["sid"]  # one sandbox takes the bearer walk's lifecycle steps too
                    await _serve_a_page(charges, paying, ctx)

            await _preview_is_free(pay_gateway, stack, payer, ctx)

            logs = await charges.pay(paying, "GET", _on(pay_gateway, ctx["logs"]))
            assert logs.headers["content-type"].startswith("text/plain") and logs.text.strip()
        finally:
            if "sid" in ctx:
                await charges.pay(paying, "DELETE", f"/sandbox/{ctx['sid']}")
            if "e2b" in ctx:
                await charges.pay(paying, "DELETE", f"/sandboxes/{ctx['e2b']}")

    rows = await _wait_outcomes(stack, payer.address, len(charges.calls))
    assert [(r["method"], r["path"], r["amount"]) for r in rows] == charges.calls
    assert all(r["tx_hash"] and r["credited"] == 0 and 200 <= r["upstream_status"] < 300 for r in rows)
    prices = sum(price for _, _, price in charges.calls)
    fees = sum(devnet.fee(r["tx_hash"]) for r in rows)
    assert devnet.balance(pay_gateway.recipient) - recipient_before == prices
    assert wallet_before - devnet.balance(payer.address) == prices + fees


SITE = "/tmp/paid-walk-site"


async def _serve_a_page(charges: Charges, paying: httpx.AsyncClient, ctx: Context) -> None:
    """Start ``python3 -m http.server`` on ``PORT`` in the sandbox (paid: the toolbox execute
    route) serving a page only this run knows, kept in ``ctx["page"]``."""
    ctx["page"] = f"paid walk {uuid.uuid4().hex}"
    command = (
        f"mkdir -p {SITE} && echo '{ctx['page']}' > {SITE}/index.html && "
        f"setsid python3 -m http.server {PORT} --bind 127.0.0.1 --directory {SITE}"
        " >/dev/null 2>&1 </dev/null &"
    )
    ran = await charges.pay(
        paying, "POST", f"/sandbox/{ctx['sid']}/toolbox/process/execute", json={"command": command}
    )
    assert ran.json()["exitCode"] == 0, ran.text


async def _preview_is_free(pay_gateway: PayGateway, stack: Stack, payer: Payer, ctx: Context) -> None:
    """The public sandbox's preview URL, fetched without a wallet or a token, reaches the
    server in the sandbox; nothing is asked, paid or recorded for it."""
    rows_before = len(await ledger(stack, payer.address))
    balance_before = payer.devnet.balance(pay_gateway.recipient)
    url = _on(pay_gateway, ctx["preview"])
    async with httpx.AsyncClient(timeout=60) as anyone:

        async def served() -> httpx.Response | None:
            resp = await anyone.get(url)
            assert resp.status_code != 402, resp.text  # never sold, not even before the server is up
            return resp if resp.status_code == 200 else None

        page = await await_for(served, what="the http.server in the sandbox to answer its preview URL")
    assert page is not None
    assert page.text.strip() == ctx["page"]
    assert "payment-receipt" not in page.headers and "www-authenticate" not in page.headers
    assert payer.devnet.balance(pay_gateway.recipient) == balance_before
    assert len(await ledger(stack, payer.address)) == rows_before


def _on(pay_gateway: PayGateway, url: str) -> str:
    """``url`` (which the core builds on the stack's public URL, the bearer gateway's) sent to
    the payment gateway instead: the same path and query, the gateway under test."""
    link = httpx.URL(url)
    return str(httpx.URL(pay_gateway.url).copy_with(raw_path=link.raw_path))
