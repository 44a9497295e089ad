"""``dnah request``: curl for APIs that answer ``402 Payment Required`` (MPP, Tempo charge).

For people and agents without the ``tempo`` CLI. It sends the request as given; if the server
answers 402 it reads the ``WWW-Authenticate: Payment`` offers, picks a Tempo ``charge`` it can
pay, checks it against ``--max-spend``, signs the transfer with pympp's Tempo client and sends
the same request again with the credential. The response body goes to stdout; with ``-v`` the
statuses, the offer and the decoded ``Payment-Receipt`` go to stderr.

``--dry-run`` sends the request, prints the quote from the 402 and pays nothing. (The unpaid
request reaches the server with its body, as with ``tempo request --dry-run``: an MPP server
does nothing for it but answer 402.)

POST, PUT, PATCH and DELETE carry an ``Idempotency-Key`` (a fresh one unless ``-H`` gives
one), so a server that honours it charges a retried request once.

A paid retry whose outcome is unknown (the connection broke, or the server answered ``503``
``payment-outcome-unknown``) is retried a few times with the *same* credential, which can settle
at most once, and never paid afresh; if it stays unknown (or the server answers 5xx) the
credential is printed so the request can be retried by hand with ``-H 'Authorization: Payment …'``
(a request that already carries a ``Payment`` credential is sent as it is).

Exit status: 0 the server answered below 400 (or a dry run read a quote); 1 it answered 400 or
more without a payment at stake; 2 bad usage; 3 nothing was paid because this command refused
(over ``--max-spend``, no offer it can pay, no key, signing failed); 4 a payment was sent and
the server rejected it, failed, or its outcome is unknown.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import httpx

from contracts.tempo import DEVNET, MAINNET, TESTNET, TOKENS

if TYPE_CHECKING:
    from mpp import Challenge

EXIT_OK = 0
EXIT_HTTP_ERROR = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_PAYMENT_FAILED = 4

KEY_ENV = "DNAH_PRIVATE_KEY"
RPC_ENV = "DNAH_RPC_URL"
DECIMALS = 6
UNKNOWN_OUTCOME_RETRIES = 3
_IDEMPOTENT_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_OUTCOME_UNKNOWN = "payment-outcome-unknown"


@dataclass(frozen=True)
class Network:
    name: str
    chain_id: int
    rpc_url: str


NETWORKS: dict[str, Network] = {
    name: Network(name, preset.chain_id, preset.rpc_url)
    for name, preset in (("mainnet", MAINNET), ("testnet", TESTNET), ("devnet", DEVNET))
}
"""The chains a payment may go to. ``devnet`` is ``python -m devnet`` (or Tempo's localnet)."""

TOKEN_NAMES = {token.address.lower(): token.symbol for token in TOKENS} | {
    "0x20c0000000000000000000006a37da5c996874be": "OUSD",  # pympp servers offer it by default
}
"""Display names of the TIP-20 tokens a quote may name (keys lower-case)."""


class RequestError(Exception):
    """Ends the command with ``exit_code`` and ``str(self)`` on stderr."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Offer:
    """One Tempo charge a 402 offered, with the fields a payer decides on."""

    challenge: Challenge
    amount: int
    """Base units (6 decimals)."""
    currency: str
    recipient: str
    chain_id: int | None

    @property
    def network(self) -> str:
        for net in NETWORKS.values():
            if net.chain_id == self.chain_id:
                return net.name
        return "unknown"


# Parsing ------------------------------------------------------------------------------------


def usd(amount: int) -> str:
    """100 → ``"$0.0001"``: base units as an exact USD string."""
    whole, frac = divmod(amount, 10**DECIMALS)
    text = f"{whole}.{frac:0{DECIMALS}d}".rstrip("0").rstrip(".")
    return f"${text}"


def parse_usd(raw: str) -> int:
    """``"0.01"`` or ``"$0.01"`` → 10000 base units; exact, at most 6 decimals."""
    text = raw.strip().removeprefix("$")
    match = re.fullmatch(r"([0-9]+)(?:\.([0-9]*))?", text)
    if match is None or (match[2] is not None and len(match[2]) > DECIMALS):
        raise ValueError(f"{raw!r} is not a USD amount with at most {DECIMALS} decimals (like 0.01)")
    return int(match[1]) * 10**DECIMALS + int((match[2] or "").ljust(DECIMALS, "0"))


def split_challenges(value: str) -> list[str]:
    """The ``Payment`` challenges in one ``WWW-Authenticate`` value (several may share one line,
    separated by commas, and quoted strings may hold commas)."""
    pieces: list[str] = []
    start, quoted, escaped = 0, False, False
    for i, ch in enumerate(value):
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            pieces.append(value[start:i])
            start = i + 1
    pieces.append(value[start:])

    challenges: list[list[str]] = []
    scheme_start = re.compile(r"([A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*)\s+\S")
    for piece in (p.strip() for p in pieces):
        head = scheme_start.match(piece)
        # "Scheme param=…" starts a challenge; "param=…" continues the current one.
        if head and "=" not in piece[: head.end(1)] and not piece[head.end(1) :].lstrip().startswith("="):
            challenges.append([piece])
        elif challenges and piece:
            challenges[-1].append(piece)
    return [", ".join(parts) for parts in challenges if parts[0].lower().startswith("payment ")]


def parse_offers(response: httpx.Response) -> tuple[list[Offer], list[str]]:
    """Every Tempo charge a 402 offers, and a note for each challenge that is not one."""
    from mpp import Challenge

    offers: list[Offer] = []
    skipped: list[str] = []
    for value in response.headers.get_list("www-authenticate"):
        for text in split_challenges(value):
            try:
                challenge = Challenge.from_www_authenticate(text)
            except Exception as exc:  # pympp's ParseError and base64/JSON errors
                skipped.append(f"unreadable challenge ({exc})")
                continue
            if (challenge.method, challenge.intent) != ("tempo", "charge"):
                skipped.append(f"{challenge.method}/{challenge.intent} (only tempo/charge is supported)")
                continue
            req = challenge.request
            details = req.get("methodDetails")
            chain = details.get("chainId") if isinstance(details, dict) else None
            try:
                amount = int(req["amount"])
                currency, recipient = str(req["currency"]), str(req["recipient"])
                chain_id = None if chain is None else int(chain)
            except (KeyError, TypeError, ValueError):
                skipped.append("tempo/charge with a malformed request")
                continue
            offers.append(Offer(challenge, amount, currency, recipient, chain_id))
    return offers, skipped


def decode_receipt(value: str) -> dict[str, Any]:
    """A ``Payment-Receipt`` header (base64url JSON) as a dict."""
    padded = value.strip() + "=" * (-len(value.strip()) % 4)
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(padded))
    return decoded


def describe_offer(offer: Offer) -> str:
    """The quote as ``key: value`` lines (what ``--dry-run`` prints)."""
    c = offer.challenge
    token = TOKEN_NAMES.get(offer.currency.lower())
    lines = [
        f"amount: {usd(offer.amount)} ({offer.amount} base units)",
        f"currency: {offer.currency}" + (f" ({token})" if token else ""),
        f"recipient: {offer.recipient}",
        f"chain: {offer.chain_id if offer.chain_id is not None else 'unspecified'} ({offer.network})",
        f"intent: {c.method}/{c.intent}",
        f"realm: {c.realm}",
        f"challenge: {c.id}",
    ]
    if c.description:
        lines.append(f"description: {c.description}")
    if c.expires:
        lines.append(f"expires: {c.expires}")
    return "\n".join(lines)


# The command ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    url: str
    method: str
    headers: list[tuple[str, str]]
    body: bytes | None
    dry_run: bool = False
    max_spend: int | None = None
    network: str | None = None
    rpc_url: str | None = None
    key: str | None = None
    verbose: bool = False
    timeout_s: float = 60.0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``request`` on a ``dnah`` sub-command parser."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "request",
        help="send an HTTP request, paying a 402 (MPP, Tempo charge) if asked",
        description=(__doc__ or "").replace("``", "`"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("url", metavar="URL")
    p.add_argument("-X", "--request", dest="method", metavar="METHOD", help="default GET, POST with a body")
    p.add_argument("-H", "--header", dest="headers", action="append", default=[], metavar="'K: V'")
    body = p.add_mutually_exclusive_group()
    body.add_argument("--json", dest="json_body", metavar="BODY", help="JSON body (sets content-type)")
    body.add_argument(
        "-d", "--data", dest="data", metavar="BODY", help="raw body; @FILE reads a file, @- stdin"
    )
    p.add_argument("--dry-run", action="store_true", help="print the price from the 402, pay nothing")
    p.add_argument("--max-spend", metavar="USD", help="refuse to pay more than this per request (e.g. 0.01)")
    p.add_argument(
        "--network", choices=sorted(NETWORKS), help="only pay on this chain (default: the offer's)"
    )
    p.add_argument("--rpc", metavar="URL", help=f"Tempo JSON-RPC URL (default: ${RPC_ENV} or the network's)")
    p.add_argument("--key-file", type=Path, metavar="FILE", help=f"private key file (default: ${KEY_ENV})")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S", help="per-request timeout (60)")
    p.add_argument(
        "-v", "--verbose", action="store_true", help="statuses, the offer and the receipt on stderr"
    )
    p.set_defaults(func=cmd_request)
    return p


def cmd_request(args: argparse.Namespace) -> int:
    try:
        options = _options(args)
    except RequestError as exc:
        print(f"dnah request: {exc}", file=sys.stderr)
        return exc.exit_code
    return asyncio.run(run(options, sys.stdout.buffer, sys.stderr))


def _options(args: argparse.Namespace) -> Options:
    headers = []
    for raw in args.headers:
        name, sep, value = raw.partition(":")
        if not sep or not name.strip():
            raise RequestError(f"a header looks like 'Name: value', got {raw!r}", EXIT_USAGE)
        headers.append((name.strip(), value.strip()))
    body: bytes | None = None
    if args.json_body is not None:
        body = _read_body(args.json_body)
        try:
            json.loads(body)
        except ValueError:
            raise RequestError("--json is not valid JSON", EXIT_USAGE) from None
        names = {n.lower() for n, _ in headers}
        if "content-type" not in names:
            headers.append(("content-type", "application/json"))
        if "accept" not in names:
            headers.append(("accept", "application/json"))
    elif args.data is not None:
        body = _read_body(args.data)
    max_spend = None
    if args.max_spend is not None:
        try:
            max_spend = parse_usd(args.max_spend)
        except ValueError as exc:
            raise RequestError(f"--max-spend: {exc}", EXIT_USAGE) from None
    key = os.environ.get(KEY_ENV) or None
    if args.key_file is not None:
        try:
            key = args.key_file.read_text().strip()
        except OSError as exc:
            raise RequestError(f"--key-file: {exc.strerror}: {args.key_file}", EXIT_USAGE) from None
    url = httpx.URL(args.url)
    if url.scheme not in ("http", "https") or not url.host:
        raise RequestError(f"URL must be http(s)://host/…, got {args.url!r}", EXIT_USAGE)
    return Options(
        url=args.url,
        method=(args.method or ("POST" if body is not None else "GET")).upper(),
        headers=headers,
        body=body,
        dry_run=args.dry_run,
        max_spend=max_spend,
        network=args.network,
        rpc_url=args.rpc or os.environ.get(RPC_ENV) or None,
        key=key,
        verbose=args.verbose,
        timeout_s=args.timeout,
    )


def _read_body(raw: str) -> bytes:
    if raw == "@-":
        return sys.stdin.buffer.read()
    if raw.startswith("@"):
        try:
            return Path(raw[1:]).read_bytes()
        except OSError as exc:
            raise RequestError(f"cannot read {raw[1:]}: {exc.strerror}", EXIT_USAGE) from None
    return raw.encode()


async def run(options: Options, out: IO[bytes], err: IO[str]) -> int:
    """The whole command; returns the exit status."""
    try:
        async with httpx.AsyncClient(timeout=options.timeout_s) as client:
            return await _run(client, options, out, err)
    except RequestError as exc:
        print(f"dnah request: {exc}", file=err)
        return exc.exit_code
    except httpx.HTTPError as exc:
        print(f"dnah request: {options.method} {options.url}: {exc!r}", file=err)
        return EXIT_HTTP_ERROR


async def _run(client: httpx.AsyncClient, options: Options, out: IO[bytes], err: IO[str]) -> int:
    headers = list(options.headers)
    names = {n.lower() for n, _ in headers}
    supplied_credential = any(
        n.lower() in ("authorization", "payment-authorization") and v.lower().startswith("payment ")
        for n, v in headers
    )
    if options.method in _IDEMPOTENT_METHODS and "idempotency-key" not in names and not options.dry_run:
        # The paid retry, and any retry of it, carry the same key: the server charges once.
        headers.append(("idempotency-key", str(uuid.uuid4())))

    async def send(extra: Sequence[tuple[str, str]] = ()) -> httpx.Response:
        replaced = {n.lower() for n, _ in extra}
        merged = [(n, v) for n, v in headers if n.lower() not in replaced] + list(extra)
        return await client.request(options.method, options.url, headers=merged, content=options.body)

    first = await send()
    if options.verbose:
        print(f"> {options.method} {options.url}", file=err)
        for name, value in headers:
            if name.lower() == "idempotency-key":
                print(f"> idempotency-key: {value}", file=err)
        print(f"< {first.status_code} {first.reason_phrase}", file=err)
    if first.status_code != 402 or supplied_credential:
        if options.dry_run:
            print(f"no payment asked: {first.status_code} {first.reason_phrase}", file=err)
        return _finish(first, out, err)

    offer = _choose(first, options, err)
    if options.dry_run:
        out.write(f"{describe_offer(offer)}\n".encode())
        out.flush()
        print("dry run: nothing was paid", file=err)
        return EXIT_OK
    if options.verbose:
        print("  offer:\n" + _indent(describe_offer(offer)), file=err)
    if options.max_spend is not None and offer.amount > options.max_spend:
        raise RequestError(
            f"refusing to pay {usd(offer.amount)} ({offer.amount} base units) for {options.method} "
            f"{httpx.URL(options.url).path}: more than --max-spend {usd(options.max_spend)}; "
            "nothing was paid",
            EXIT_REFUSED,
        )
    header, credential, tx_hash = await _sign(offer, options)
    return await _pay(send, header, credential, tx_hash, options, out, err)


def _choose(response: httpx.Response, options: Options, err: IO[str]) -> Offer:
    """The first offer (in the server's order) this client may pay: on ``--network`` if given,
    else on a chain it knows; within ``--max-spend`` if one is."""
    offers, skipped = parse_offers(response)
    if options.verbose:
        for note in skipped:
            print(f"  skipped offer: {note}", file=err)
    if options.network is not None:
        wanted = NETWORKS[options.network].chain_id
        usable = [o for o in offers if o.chain_id in (wanted, None)]
    else:
        known = {net.chain_id for net in NETWORKS.values()}
        usable = [o for o in offers if o.chain_id in known]
    if not usable:
        seen = ", ".join(f"{o.challenge.method}/{o.challenge.intent} on chain {o.chain_id}" for o in offers)
        problem = _problem(response)
        raise RequestError(
            "the server asked for payment but offered nothing this client can pay"
            + (f" (offers: {seen})" if seen else "")
            + (f" (skipped: {'; '.join(skipped)})" if skipped else "")
            + (f": {problem}" if problem else ""),
            EXIT_REFUSED,
        )
    if options.max_spend is not None:
        affordable = [o for o in usable if o.amount <= options.max_spend]
        if affordable:
            return affordable[0]
    return usable[0]


async def _sign(offer: Offer, options: Options) -> tuple[str, str, str | None]:
    """Sign the transfer for ``offer`` with pympp's Tempo client: ``(header name, header value,
    the transaction's hash if known)``. Nothing is broadcast here: the server does that."""
    from mpp.client import PaymentRuntime
    from mpp.methods.tempo import TempoAccount
    from mpp.methods.tempo import client as tempo

    if not options.key:
        raise RequestError(
            f"payment needed ({usd(offer.amount)}) but no key: set {KEY_ENV} or pass --key-file "
            "(`dnah wallet new` makes one); nothing was paid",
            EXIT_REFUSED,
        )
    try:
        account = TempoAccount.from_key(options.key)
    except Exception:  # eth-account raises several types for a bad key; never echo the key
        raise RequestError("the private key is not a 32-byte hex key", EXIT_USAGE) from None
    network = next((n for n in NETWORKS.values() if n.chain_id == offer.chain_id), None)
    if network is None and options.network is not None:
        network = NETWORKS[options.network]
    assert network is not None  # _choose keeps only offers on a known chain
    method = tempo.charge(
        account=account,
        chain_id=network.chain_id,
        rpc_url=options.rpc_url or network.rpc_url,
        currencies=[offer.currency],
        max_atomic_amount=options.max_spend,
    )
    try:
        credential = await PaymentRuntime([method]).create_credential(offer.challenge, method)
    except httpx.HTTPError as exc:
        raise RequestError(
            f"cannot reach the {network.name} RPC {options.rpc_url or network.rpc_url}: {exc!r}; "
            "nothing was paid",
            EXIT_REFUSED,
        ) from None
    except Exception as exc:
        raise RequestError(f"could not sign the payment: {exc}; nothing was paid", EXIT_REFUSED) from None
    tx_hash = method.transaction_hash(credential) if method.transaction_hash else None
    return offer.challenge.credential_header, credential.to_authorization(), tx_hash


async def _pay(
    send: Any,
    header: str,
    credential: str,
    tx_hash: str | None,
    options: Options,
    out: IO[bytes],
    err: IO[str],
) -> int:
    """Send the request with the credential; retry only with the same credential, and only
    while the outcome is unknown (it settles at most once)."""
    response: httpx.Response | None = None
    failure = ""
    for attempt in range(1 + UNKNOWN_OUTCOME_RETRIES):
        if attempt:
            await asyncio.sleep(_retry_after(response))
            print(f"  payment outcome unknown ({failure}); retrying with the same credential", file=err)
        try:
            response = await send([(header, credential)])
        except httpx.TransportError as exc:
            response, failure = None, repr(exc)
            continue
        if response.status_code == 503 and _OUTCOME_UNKNOWN in _problem_type(response):
            failure = "503 payment-outcome-unknown"
            continue
        break
    else:
        _unknown_outcome(failure, header, credential, tx_hash, options, err)
        return EXIT_PAYMENT_FAILED
    assert response is not None
    if options.verbose:
        print(f"< {response.status_code} {response.reason_phrase} (paid)", file=err)
        receipt = response.headers.get("payment-receipt")
        if receipt:
            try:
                print(f"  receipt: {json.dumps(decode_receipt(receipt))}", file=err)
            except ValueError:
                print(f"  receipt (undecodable): {receipt}", file=err)
        elif tx_hash:
            print(f"  transaction: {tx_hash}", file=err)
    if response.status_code == 402:
        _write_body(response, out)
        print(f"dnah request: the server rejected the payment: {_problem(response)}", file=err)
        return EXIT_PAYMENT_FAILED
    if response.status_code >= 500:
        # The server failed after the credential reached it: the payment may have settled.
        _write_body(response, out)
        failure = f"HTTP {response.status_code} {response.reason_phrase}: {_problem(response)}"
        _unknown_outcome(failure, header, credential, tx_hash, options, err)
        return EXIT_PAYMENT_FAILED
    return _finish(response, out, err)


def _unknown_outcome(
    failure: str, header: str, credential: str, tx_hash: str | None, options: Options, err: IO[str]
) -> None:
    print(
        f"dnah request: the payment's outcome is unknown ({failure}); it may have settled"
        + (f" (transaction {tx_hash})" if tx_hash else "")
        + ". Do not pay again: retry later with the same credential, which settles at most once:\n"
        f"  dnah request -X {options.method} -H '{header}: {credential}' ... {options.url}",
        file=err,
    )


def _finish(response: httpx.Response, out: IO[bytes], err: IO[str]) -> int:
    _write_body(response, out)
    if response.status_code >= 400:
        print(f"dnah request: HTTP {response.status_code} {response.reason_phrase}", file=err)
        return EXIT_HTTP_ERROR
    return EXIT_OK


def _write_body(response: httpx.Response, out: IO[bytes]) -> None:
    """The body as received; on a terminal, ended with a newline so the prompt starts clean."""
    body = response.content
    out.write(body)
    if body and not body.endswith(b"\n") and out.isatty():
        out.write(b"\n")
    out.flush()


def _problem(response: httpx.Response) -> str:
    """``type: detail`` of an RFC 9457 body, or its first 200 characters."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if not isinstance(body, dict):
        return response.text[:200]
    kind = str(body.get("type", "")).rsplit("/", 1)[-1]
    detail = body.get("detail") or body.get("title") or body.get("message") or ""
    return f"{kind}: {detail}" if kind else str(detail)


def _problem_type(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("type", "")) if isinstance(body, dict) else ""


def _retry_after(response: httpx.Response | None) -> float:
    raw = response.headers.get("retry-after", "") if response is not None else ""
    try:
        return min(max(float(raw), 0.0), 10.0)
    except ValueError:
        return 1.0


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


def main(argv: list[str] | None = None) -> int:
    """``python -m cli.request_cmd …``: the command without the rest of ``dnah``."""
    parser = argparse.ArgumentParser(prog="dnah")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["request", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
