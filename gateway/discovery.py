"""What the gateway tells agents about itself: ``/openapi.json``, ``/llms.txt``,
``/__mpp/health`` and ``/__mpp/config``.

Pure functions of the live price table and a ``DiscoverySettings``; no I/O and no web
framework, so ``gateway/app.py`` only serves what these return. Every price shown comes from
the same ``PriceTable`` that quotes requests and prices 402 challenges, so the documents cannot
disagree with what a request costs (``tests/gateway/test_discovery.py`` checks every route).

The OpenAPI document is built in ``gateway/apidoc.py`` from the core's generated document and
this module's pieces: ``payment_info`` (in both known shapes at once: the discovery draft's
shorthand ``intent``, ``method``, ``amount`` in base units, ``currency``, ``description``, and
the Daytona proxy's ``pricingMode``, ``price`` with six decimals, ``protocols``,
``authMode: "paid"``; free ones ``{"authMode": "none"}``; bearer-only ones none at all),
``cost_text`` and ``group_of_path``. llms.txt lists the price table itself, rule by rule.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import msgspec

from contracts.tempo import DEVNET, MAINNET, TESTNET, TOKENS
from pricing import PriceTable, RouteRule

Mode = Literal["bearer", "payment", "both"]

OPENAPI_VERSION = "3.1.0"
QUOTE_PATH = "/__mpp/quote"
FREE_GROUP = "Free endpoints"


class DiscoverySettings(msgspec.Struct, frozen=True, kw_only=True):
    """What the discovery documents say about this gateway. Holds no secret on purpose:
    build it with ``settings_from_config``, which copies only public fields."""

    base_url: str
    """Public origin clients use, without a trailing slash (``https://sandbox.example``)."""
    mode: Mode = "payment"
    network: str = "mainnet"
    """``mainnet``, ``testnet`` or ``devnet``."""
    chain_id: int = MAINNET.chain_id
    currencies: tuple[str, ...] = ()
    """Accepted TIP-20 tokens, in offer order (one 402 challenge each)."""
    recipient: str | None = None
    """Address that receives payments (public: it is in every challenge)."""
    realm: str = "localhost"
    decimals: int = 6
    proxy_name: str = "dnah"
    title: str = "dnah sandbox API"
    version: str = "0.1.0"

    @property
    def paid(self) -> bool:
        """Whether the gateway takes payments (``payment`` or ``both`` mode)."""
        return self.mode != "bearer"


class _PaymentFields(Protocol):
    """The public fields of ``gateway.config.PaymentConfig`` (not imported: discovery depends
    on ``pricing`` and ``contracts`` only)."""

    @property
    def network(self) -> str: ...
    @property
    def chain_id(self) -> int: ...
    @property
    def currencies(self) -> tuple[str, ...]: ...
    @property
    def recipient(self) -> str: ...
    @property
    def realm(self) -> str: ...
    @property
    def public_url(self) -> str | None: ...


class _GatewayFields(Protocol):
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def mode(self) -> Mode: ...
    @property
    def payment(self) -> _PaymentFields | None: ...


def settings_from_config(config: _GatewayFields, *, base_url: str | None = None) -> DiscoverySettings:
    """The public part of the gateway's config (``gateway.config.GatewayConfig``).

    Reads named fields only, so the HMAC secret and the edge token can never reach a document.
    ``base_url`` wins over ``DNAH_PUBLIC_URL``, which wins over the listening address.
    """
    payment = config.payment
    url = base_url or (payment.public_url if payment else None) or f"http://{config.host}:{config.port}"
    if payment is None:
        return DiscoverySettings(base_url=url.rstrip("/"), mode="bearer", network="", chain_id=0)
    return DiscoverySettings(
        base_url=url.rstrip("/"),
        mode=config.mode,
        network=payment.network,
        chain_id=payment.chain_id,
        currencies=tuple(payment.currencies),
        recipient=payment.recipient,
        realm=payment.realm,
    )


# Prices, as documents show them ------------------------------------------------------------


class Priced(Protocol):
    """What a document needs to show a price: a ``RouteRule`` or a ``Quote``."""

    @property
    def free(self) -> bool: ...
    @property
    def payable(self) -> bool: ...
    @property
    def amount(self) -> int: ...
    @property
    def price(self) -> str: ...
    @property
    def description(self) -> str: ...


def group_of(rule: RouteRule) -> str:
    """The section a rule is listed under in llms.txt."""
    return group_of_path(rule.pattern, rule.free)


def group_of_path(path: str, free: bool) -> str:
    """The section of a path (a table pattern, or an OpenAPI path): an OpenAPI tag, a heading
    in llms.txt."""
    if free:
        return FREE_GROUP
    segs = [s for s in path.split("/") if s]
    literal = [s for s in segs if not s.startswith("{")]
    if "toolbox" in segs:
        after = literal[literal.index("toolbox") + 1 :]
        area = after[0] if after else "**"
        if area == "process":
            return "Toolbox: process execution"
        if area in ("files", "project-dir", "user-home-dir", "work-dir"):
            return "Toolbox: file operations"
        if area == "git":
            return "Toolbox: git operations"
        if area == "**":
            return "Toolbox: any other path"
        return "Toolbox: other"
    if segs and segs[0] == "envd":
        return "E2B: envd (data plane)"
    if segs and (segs[0] in ("v2", "sandboxes", "snapshots", "templates")):
        return "E2B: control plane"
    if segs and segs[0] == "v1":
        return "Native API: " + (literal[1].replace("-", " ") if len(literal) > 1 else "other")
    if segs and segs[0] == "sandbox":
        if any(s in ("autostop", "autoarchive", "autodelete", "public", "labels") for s in segs):
            return "Sandbox configuration"
        if "ssh-access" in segs:
            return "SSH access"
        if "ports" in segs or segs[-1].endswith("-url"):
            return "URLs & ports"
        return "Sandbox lifecycle"
    return "Other: /" + (segs[0] if segs else "")


def _usd6(amount: int, decimals: int) -> str:
    """100 → ``"0.000100"``: the Daytona proxy's fixed-decimals price."""
    whole, frac = divmod(amount, 10**decimals)
    return f"{whole}.{frac:0{decimals}d}"


def cost_text(rule: Priced) -> str:
    """The ``Cost`` cell of llms.txt: ``$0.0001``, ``free`` or ``bearer key only``."""
    if not rule.payable:
        return "bearer key only"
    if rule.free:
        return "free"
    return "$" + rule.price


def _token_symbol(address: str) -> str | None:
    for token in TOKENS:
        if token.address.lower() == address.lower():
            return token.symbol
    return None


# OpenAPI ------------------------------------------------------------------------------------


def payment_info(rule: Priced, settings: DiscoverySettings) -> dict[str, Any] | None:
    """The ``x-payment-info`` of an operation priced by ``rule`` (a rule or a quote); None for
    a bearer-only one, or when the gateway takes no payments."""
    if rule.free:
        return {"authMode": "none"}
    if not rule.payable or not settings.paid:
        return None
    return {
        "intent": "charge",
        "method": "tempo",
        "amount": str(rule.amount),
        "currency": settings.currencies[0] if settings.currencies else None,
        "description": rule.description,
        "pricingMode": "fixed",
        "price": _usd6(rule.amount, settings.decimals),
        "protocols": ["mpp"],
        "authMode": "paid",
    }


# llms.txt ----------------------------------------------------------------------------------


def _groups(table: PriceTable) -> dict[str, list[tuple[str, RouteRule]]]:
    """Rows ``(method cell, rule)`` per section, sections and rows in table order."""
    groups: dict[str, list[tuple[str, RouteRule]]] = {}
    for rule in table.routes():
        method = "ANY" if rule.methods == ("*",) else ", ".join(rule.methods)
        groups.setdefault(group_of(rule), []).append((method, rule))
    return groups


def llms_txt(table: PriceTable, settings: DiscoverySettings) -> str:
    """Markdown for agents: what the gateway is, how to pay, what everything costs."""
    base = settings.base_url
    groups = _groups(table)
    free = groups.pop(FREE_GROUP, [])
    out: list[str] = [f"# {settings.title}", ""]
    if settings.paid:
        out += [
            "> Isolated Linux sandboxes for AI agents: create one, run commands, move files, use "
            "git, delete it. Pay per request in USD stablecoins over the Machine Payments "
            "Protocol (HTTP 402, Tempo); no account and no API key needed.",
            "",
        ]
    else:
        out += [
            "> Isolated Linux sandboxes for AI agents: create one, run commands, move files, use "
            "git, delete it. This gateway runs in bearer mode: every non-free call needs an API key.",
            "",
        ]
    out += ["## Base URL", "", base, ""]
    out += _how_to_pay(table, settings) if settings.paid else _bearer_only(settings)
    out += ["## Free Endpoints", ""]
    for method, rule in free:
        query = "?method=METHOD&path=PATH" if rule.pattern == QUOTE_PATH else ""
        out.append(f"- `{method} {rule.pattern}{query}` — {rule.description}")
    out.append("")
    out += [
        "## Pricing",
        "",
        "Costs are USD per request, charged in base units of a 6-decimal stablecoin "
        "($0.0001 = `100`). They come from the same price table as the 402 challenges; the "
        "402 is authoritative. `{name}` is one path segment; `**` is any further path "
        "(one or more segments).",
        "",
    ]
    for title, rows in groups.items():
        out += [f"### {title}", "", "| Method | Path | Cost | Description |", "|---|---|---|---|"]
        out += [f"| {m} | {r.pattern} | {cost_text(r)} | {r.description} |" for m, r in rows]
        out.append("")
    out += [f"Any other request: {cost_text(table.default)} ({table.default.description}).", ""]
    if settings.paid:
        out += _money_safety(settings)
    out += _notes(settings)
    return "\n".join(out).rstrip() + "\n"


def _price_of(table: PriceTable, method: str, path: str) -> str:
    quote = table.quote(method, path)
    if not quote.payable:
        return "bearer key only"
    return "free" if quote.free else f"${quote.price}"


def _how_to_pay(table: PriceTable, settings: DiscoverySettings) -> list[str]:
    base = settings.base_url
    tokens = (
        ", ".join(f"{_token_symbol(c) or 'token'} `{c}`" for c in settings.currencies) or "a USD stablecoin"
    )
    tempo_net = " -n testnet" if settings.chain_id == TESTNET.chain_id else ""
    create = _price_of(table, "POST", "/sandbox")
    execute = _price_of(table, "POST", "/sandbox/ID/toolbox/process/execute")
    delete = _price_of(table, "DELETE", "/sandbox/ID")
    lines = [
        "## How to pay",
        "",
        "Every endpoint not marked free costs a micropayment per request (MPP `tempo` method, "
        f"`charge` intent) on Tempo {settings.network} (chain id {settings.chain_id}), in "
        f"{tokens}, paid to `{settings.recipient}` (realm `{settings.realm}`). An unpaid "
        "request gets `402 Payment Required` with a `WWW-Authenticate: Payment` challenge "
        "holding the price; pay it and send the same request again with "
        "`Authorization: Payment <credential>`. A paid success carries a `Payment-Receipt` "
        "header (the transaction hash is its `reference`).",
        "",
        "Use `tempo request` (the Tempo CLI) or `dnah request` (ships with dnah; key from "
        "`DNAH_PRIVATE_KEY` or `--key-file`) instead of curl; any MPP client (pympp, mppx) works.",
        "",
    ]
    if settings.chain_id == DEVNET.chain_id:
        lines += [
            "This gateway settles on a local devnet (chain id 1337), which the Tempo CLI cannot "
            "pay on: use `dnah request --network devnet --rpc <devnet RPC URL>`. Make a key "
            "with `dnah wallet new` and fund it with `dnah wallet fund ADDRESS --rpc <URL>`.",
            "",
        ]
    lines += [
        "```bash",
        "# See a price without paying: sends the request, reads the 402, pays nothing",
        f"tempo request{tempo_net} --dry-run -X POST --json '{{}}' {base}/sandbox",
        f"dnah request --dry-run -X POST --json '{{}}' {base}/sandbox",
        "# Or ask the gateway (free, no side effects):",
        f"curl -s '{base}{QUOTE_PATH}?method=POST&path=/sandbox'",
        "",
        f"# 1. Create a sandbox ({create})",
        f"tempo request{tempo_net} -X POST --json '{{}}' {base}/sandbox",
        f"dnah request -X POST --json '{{}}' {base}/sandbox",
        '# → {"id": "…", "state": "started", …}; SBX=<that id>',
        "",
        f"# 2. Execute a command ({execute})",
        f'tempo request{tempo_net} -X POST --json \'{{"command": "echo hello"}}\' '
        f"{base}/sandbox/$SBX/toolbox/process/execute",
        f'dnah request -X POST --json \'{{"command": "echo hello"}}\' '
        f"{base}/sandbox/$SBX/toolbox/process/execute",
        "",
        f"# 3. Delete it ({delete})",
        f"tempo request{tempo_net} -X DELETE {base}/sandbox/$SBX",
        f"dnah request -X DELETE {base}/sandbox/$SBX",
        "```",
        "",
        "`dnah request --max-spend 0.01 …` refuses (exit 3, nothing paid) when the 402 asks "
        "for more; `-v` prints the challenge and the decoded receipt to stderr. The native API "
        f"works the same way: `POST {base}/v1/sandboxes` with "
        '`{"template": "dnah-base"}`, then `POST /v1/sandboxes/$SBX/exec` with '
        '`{"cmd": ["uname", "-a"]}`.',
        "",
    ]
    if settings.mode == "both":
        lines += [
            "Have an API key? Send `Authorization: Bearer <key>` instead and nothing is charged "
            "(see *Bearer mode* below).",
            "",
        ]
    return lines


def _bearer_only(settings: DiscoverySettings) -> list[str]:
    return [
        "## Authentication",
        "",
        "Payments are off on this gateway: send `Authorization: Bearer <API key>` with every "
        "call that is not free. The costs below apply only when an operator turns payments on.",
        "",
        "```bash",
        f"curl -s -H \"Authorization: Bearer $KEY\" -X POST --json '{{}}' {settings.base_url}/sandbox",
        "```",
        "",
    ]


def _money_safety(settings: DiscoverySettings) -> list[str]:
    return [
        "## Money safety",
        "",
        "- A paid request that the core rejects or fails (status ≥ 400) is recorded and its "
        "amount credited to the payer; credit pays for the payer's next paid request instead "
        "of a new on-chain transfer.",
        "- Idempotency-Key on POST/PUT/DELETE: a retry with the same key returns the stored "
        "response and is charged once. (`dnah request` sends one by itself.)",
        "- If the chain's answer is unknown the gateway answers 503 payment-outcome-unknown and "
        "never asks you to pay twice for that request: retry with the same credential.",
        "- The unpaid request that draws a 402 has no side effect; so `--dry-run` and "
        f"`GET {QUOTE_PATH}` never cost anything.",
        "- Each payer (the paying address) sees and controls only the sandboxes it created.",
        "",
    ]


def _notes(settings: DiscoverySettings) -> list[str]:
    lines = ["## Bearer mode", ""]
    if settings.mode == "payment":
        lines += [
            "This gateway takes payments only; operators run dnah in bearer mode (API keys, no "
            "payments) or both modes at once. With a key: `Authorization: Bearer <key>`; same "
            "routes, same responses, never a 402.",
            "",
        ]
    else:
        lines += [
            "`Authorization: Bearer <API key>` authenticates a call without paying: same routes, "
            "same responses, never a 402. Keys are minted with `POST /v1/api-keys` by an admin.",
            "",
        ]
    lines += [
        "## Notes",
        "",
        "- File operations take `path` as a query parameter (`?path=/home/daytona/file`).",
        "- `/sandbox/{id}/toolbox/…` and `/toolbox/{id}/…` are the same toolbox.",
        "- Preview traffic (`/preview/{id}/{port}/…`, or a `{port}-{id}.` host under the preview "
        "domain) reaches a server inside a sandbox and is never priced or paid: the sandbox's "
        "preview token or public flag decides who may see it.",
        "- E2B's API is served too (its SDKs unmodified: `E2B_API_URL` and `E2B_SANDBOX_URL` = "
        f"{settings.base_url}, `E2B_API_KEY` = an API key, sent as `X-API-KEY`, which counts "
        "wherever `Authorization: Bearer` does). Its data plane names the sandbox in "
        "`E2b-Sandbox-Id`/`E2b-Sandbox-Port` headers or a `{port}-{id}.` host under the preview "
        "domain: envd's port 49983 is the API path `/envd/{id}/…` (priced as listed, and each "
        "call needs the sandbox's `envdAccessToken` as `X-Access-Token`); its streams "
        "(`process.Process/Start`, `Connect`, `StreamInput`, `filesystem.Filesystem/WatchDir`) "
        "cannot be paid per call and need an API key of the sandbox's owner; the code "
        "interpreter (port 49999) and every other port are preview traffic, never priced.",
        "- Too many requests: 429 with `Retry-After`; answers carry `RateLimit-Limit`, "
        "`RateLimit-Remaining`, `RateLimit-Reset` and `RateLimit-Policy`.",
        f"- Machine-readable: `GET {settings.base_url}/openapi.json` (prices in `x-payment-info`), "
        f"`GET {settings.base_url}/__mpp/config`.",
        "",
    ]
    return lines


# /__mpp/* -----------------------------------------------------------------------------------


def mpp_health(settings: DiscoverySettings, core_ok: bool, *, now: datetime | None = None) -> dict[str, Any]:
    """``GET /__mpp/health`` (the mpp-proxy convention, plus ``upstream`` and ``mode``)."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return {
        "status": "ok" if core_ok else "degraded",
        "proxy": settings.proxy_name,
        "paymentMethod": "tempo" if settings.paid else None,
        "mode": settings.mode,
        "upstream": "ok" if core_ok else "unreachable",
        "timestamp": moment.isoformat(timespec="seconds").replace("+00:00", "Z"),
    }


def mpp_config(settings: DiscoverySettings) -> dict[str, Any]:
    """``GET /__mpp/config``: the payment configuration a client needs, and nothing secret
    (``DiscoverySettings`` holds no secret; the recipient is public, it is in every 402)."""
    base = settings.base_url
    doc: dict[str, Any] = {
        "proxy": settings.proxy_name,
        "mode": settings.mode,
        "paymentScheme": "Payment" if settings.paid else None,
        "paymentMethod": "tempo" if settings.paid else None,
        "docs": {"openapi": f"{base}/openapi.json", "llms": f"{base}/llms.txt"},
    }
    if not settings.paid:
        return doc
    doc.update(
        {
            "intent": "charge",
            "protocols": ["mpp"],
            "network": settings.network,
            "chainId": settings.chain_id,
            "tempoTestnet": settings.chain_id == TESTNET.chain_id,
            "realm": settings.realm,
            "payTo": settings.recipient,
            "currencies": [
                {"address": c, "symbol": _token_symbol(c), "decimals": settings.decimals}
                for c in settings.currencies
            ],
            "decimals": settings.decimals,
            "quote": f"{base}{QUOTE_PATH}?method=METHOD&path=PATH",
        }
    )
    return doc


__all__ = [
    "DiscoverySettings",
    "Priced",
    "cost_text",
    "group_of",
    "group_of_path",
    "llms_txt",
    "mpp_config",
    "mpp_health",
    "payment_info",
    "settings_from_config",
]
