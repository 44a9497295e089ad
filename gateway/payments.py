"""Payment mode: MPP ``charge`` over Tempo, driven through pympp's framework-neutral server API.

``PaymentGate.admit`` runs for every request ``gateway.forward`` would send to the core (in the
``payment`` and ``both`` modes) and decides whether it may go:

1. Price it with the live table (``gateway.prices``). Free routes, and routes that cannot be
   paid for (``payable = false``: admin, API keys), go through untouched. In ``both`` mode a
   request with ``Authorization: Bearer`` goes through too; if the core answers it 401, the
   client gets the 402 instead.
2. Read the body (at most ``max_body_bytes``, else 413): the challenge binds its digest.
3. No ``Authorization: Payment`` → 402 with one challenge per accepted currency, the route's
   exact price in each. Issuing a challenge is CPU only (HMAC, JCS): no RPC, no Redis.
4. With a credential: if this challenge is already claimed, either resume (same credential,
   same request: an earlier attempt whose chain outcome was lost, or that paid but could not
   be recorded) or refuse. Otherwise **validate** it without moving money (HMAC id, realm,
   expiry, price/currency/recipient, method+path+query, body digest, the signed transaction:
   chain id, transfer, challenge-bound memo, sender) — the sender is the payer, whose
   rate-limit bucket it spends from (``gateway.ratelimit``: 429 over the limit, nothing
   claimed).
5. ``Idempotency-Key``: a stored response for this payer+key is returned as is (nothing paid,
   nothing forwarded); a key in use by another request is refused.
6. Claim the challenge in Redis (one request per credential, across workers), then settle:
   from the payer's **credit** if it covers the price (the signed transaction is never
   broadcast and expires unused), else **broadcast** it and wait for the receipt. A lost
   answer from the chain is ``payment-outcome-unknown`` (503), never a fresh 402.
7. Record the payment in the core's ledger (a 409 there refuses the request), forward it with
   the edge token and ``x-dnah-payer``, relay the answer (``Payment-Receipt`` on 2xx), and
   report the core's status to the ledger (≥ 400 becomes credit for the payer).

Nothing is forwarded before step 7: an unpaid or badly paid request never reaches the core.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Literal

import httpx
import msgspec
import rlp
import structlog
from eth_hash.auto import keccak
from mpp import Credential, Receipt
from mpp._parsing import ParseError, _b64_decode
from mpp.errors import (
    CredentialReplayedError,
    InternalPaymentError,
    InvalidChallengeError,
    MalformedCredentialError,
    PaymentError,
    PaymentOutcomeUnknownError,
    VerificationError,
    VerificationFailedError,
)
from mpp.methods.tempo import server as tempo
from mpp.server import Mpp, Request
from mpp.stores import RedisStore
from redis.asyncio import Redis
from redis.exceptions import RedisError

from contracts.control import (
    MAX_STORED_RESPONSE,
    PAYER_HEADER,
    PAYMENT_ID_HEADER,
    CreditRedeem,
    PaymentOutcome,
    PaymentRecord,
    PaymentRecorded,
    StoredResponse,
)
from gateway import e2b
from gateway.config import GatewayConfig, PaymentConfig
from gateway.forward import CLIENT_CLOSED, Forwarder, Headers, Outcome, Receive, Send, Upstream, map_path
from gateway.framing import send_http_error
from gateway.idempotency import Claim, PaymentState, credential_hash, request_fingerprint
from gateway.ledger import AlreadyRecorded, KeyReleased, KeyReused, Ledger, LedgerError
from gateway.prices import LivePrices
from gateway.ratelimit import RateLimiter, api_key
from gateway.served import ServedRoutes
from pricing import CURRENCY_DECIMALS, Quote

log = structlog.get_logger()

PROBLEMS = "https://paymentauth.org/problems/"
"""Problem types: MPP's own (``payment-required``, ``invalid-challenge``, ...) and, like mppx,
a few more under the same base (``payment-outcome-unknown``, ``bad-request``, ...)."""

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
"""Methods whose body is bound to the challenge by digest (any other method's, if it has one)."""
IDEMPOTENT_KEY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_IDEMPOTENCY_KEY = 255
"""Responses up to this size are kept for ``Idempotency-Key`` replays."""
VALID_BEFORE_GRACE_S = 5
"""After a transaction's ``validBefore`` (plus this), a missing receipt means it never landed."""
PUSH_DEADLINE_S = 300
"""A pushed transaction hash whose receipt cannot be found this long after the challenge
expired counts as not paid."""
RETRY_AFTER_S = 2
NOT_SERVED = "Not served here: answered 404 or 405, without payment"
"""A quote's description for a request the core has no route for (it is never charged)."""

_JSON = msgspec.json.Encoder()
_REQUEST_ID = b"x-request-id"


class PaymentGate:
    """The ``gateway.forward.Gate`` of the payment modes. Enter it (the app's lifespan) to
    start the price watcher and open the Redis, RPC and ledger clients."""

    def __init__(self, config: GatewayConfig, limiter: RateLimiter | None = None) -> None:
        if config.payment is None:
            raise ValueError("PaymentGate needs the payment settings")
        pay: PaymentConfig = config.payment
        self.config = pay
        self.mode = config.mode
        self.limiter = limiter
        """Spends from the payer's rate-limit bucket once a credential names the payer."""
        self.prices = LivePrices(pay.pricing_file, pay.redis_url)
        self.currency = pay.currencies[0]
        self._redis = Redis.from_url(pay.redis_url)
        self._rpc = httpx.AsyncClient(timeout=pay.rpc_timeout_s, trust_env=False)
        self.ledger = Ledger(config.core_url, pay.edge_token)
        self.state = PaymentState(self._redis)
        self.mpp = Mpp(
            methods=tempo.charge(
                recipient=pay.recipient,
                chain_id=pay.chain_id,
                rpc_url=pay.rpc_url,
                currencies=list(pay.currencies),
                store=RedisStore(self._redis, key_prefix="dnah:mpp:"),
                http_client=self._rpc,
                timeout=pay.rpc_timeout_s,
                confirmation_timeout=pay.confirmation_timeout_s,
            ),
            realm=pay.realm,
            secret_key=pay.secret,
        )
        # Only the path and query of this URL are bound into challenges (pympp's scope); the
        # same public URL is built at issue and at verify time.
        self._origin = pay.public_url or f"http://{pay.realm}"
        self._edge_auth = f"Bearer {pay.edge_token}".encode()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._routes = ServedRoutes()
        self._handlers: dict[tuple[str, str], Any] = {}
        """pympp challenge handlers by (price, description): building one per 402 cost ~9% of
        the issuance path; expiry and body are per request (``expires_in``, ``_bound_body``)."""
        self._stale_after_s = pay.confirmation_timeout_s + 3 * pay.rpc_timeout_s + 30
        """A claim still ``pending`` after this long was abandoned mid-payment."""

    async def __aenter__(self) -> PaymentGate:
        await self.prices.__aenter__()
        await self.ledger.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._tasks:  # outcome reports still on their way: a lost one is a lost refund
            await asyncio.wait(self._tasks, timeout=10)
        await self.ledger.__aexit__(*exc_info)
        await self.prices.__aexit__(*exc_info)
        await self._rpc.aclose()
        await self._redis.aclose()

    # the gate ------------------------------------------------------------------------------

    async def admit(self, upstream: Upstream, receive: Receive, send: Send, forwarder: Forwarder) -> Outcome:
        if b"%2f" in upstream.raw_path.lower():
            # Priced as one segment, routed by the core as two: refuse rather than guess.
            return await _problem(
                send, upstream, 400, "bad-request", "Bad Request", "encoded '/' in the path"
            )
        quote = self.prices.table.quote(upstream.method, upstream.raw_path.decode("latin-1"))
        envd = e2b.envd_sandbox(upstream.raw_path)
        if quote.free or not self._served(upstream):
            return await forwarder.forward(upstream, receive, send)
        if not quote.payable:
            if envd is not None:  # the core's envd checks no API key: the gateway does
                return await self._keyed_stream(upstream, envd, receive, send, forwarder)
            return await forwarder.forward(upstream, receive, send)
        if self.mode == "both" and _has_api_key(upstream.headers):
            if envd is None:
                return await self._bearer(upstream, quote, receive, send, forwarder)
            if await forwarder.key_status(envd, api_key(upstream.headers) or "", upstream.request_id) == 200:
                return await forwarder.forward(upstream, receive, send)
        try:
            return await self._paid(upstream, quote, receive, send, forwarder)
        except RedisError as exc:
            # Only reads and claims can fail this way (``_save`` absorbs the rest), and they
            # all come before any money moves.
            log.warning("redis_unavailable", error=str(exc))
            return await _unavailable(send, upstream)

    def _served(self, upstream: Upstream) -> bool:
        """Whether the core has a route for the request (``gateway.served``, from the
        contract ``contracts/core_routes.py``). One it does not serve is passed on unpaid, to
        be answered 404 or 405: a caller never pays for a route that does not exist,
        whatever price a wildcard row or the default gives it."""
        target = map_path(upstream.raw_path).decode("latin-1")
        return self._routes.serves(upstream.method, target)

    async def _keyed_stream(
        self, upstream: Upstream, sandbox_id: str, receive: Receive, send: Send, forwarder: Forwarder
    ) -> Outcome:
        """A bearer-only envd route (a stream: ``process.Process/Start``, ``Connect``,
        ``StreamInput``, ``filesystem.Filesystem/WatchDir``). A stream cannot be paid per call,
        as a terminal cannot, so it needs an API key; and since the core's envd authorizes by
        the sandbox's access token alone, the gateway checks the key itself: it must be one
        of the org that owns the sandbox (``Forwarder.key_status``)."""
        key = api_key(upstream.headers)
        if key is None:
            message = (
                "a stream (process Start/Connect/StreamInput, filesystem WatchDir) cannot be paid "
                "per call: send an API key (X-API-KEY or Authorization: Bearer)"
            )
            return await _refuse(send, upstream, 401, "api_key_required", message)
        status = await forwarder.key_status(sandbox_id, key, upstream.request_id)
        if status == 200:
            return await forwarder.forward(upstream, receive, send)
        if status in (401, 403):
            return await _refuse(send, upstream, 401, "unauthorized", "the API key is not valid")
        if status == 404:
            return await _refuse(send, upstream, 404, "not_found", "no such sandbox for this API key")
        return await _refuse(send, upstream, 502, "upstream_unavailable", "the API key could not be checked")

    def refuse_websocket(self, upstream: Upstream) -> tuple[int, str, str] | None:
        """A WebSocket (a terminal) cannot be paid per call: a 402 challenge binds one request
        and its answer, not a stream. Free routes pass; a bearer-only route (``payable =
        false``, as the default table marks the terminals) needs an API key, which the core
        then checks; a priced route is refused (see ``gateway/wsforward.py``)."""
        quote = self.prices.table.quote("GET", upstream.raw_path.decode("latin-1"))
        if quote.free:
            return None
        if quote.payable:
            message = (
                "this WebSocket route has a price, but a WebSocket cannot be paid per call; "
                "the operator must mark it payable = false (then an API key opens it)"
            )
            return 400, "websocket_not_payable", message
        if not _has_api_key(upstream.headers):
            message = (
                "a terminal (WebSocket) cannot be paid per call: open it with an API key "
                "(Authorization: Bearer, or X-API-KEY)"
            )
            return 401, "api_key_required", message
        return None

    async def _bearer(
        self, upstream: Upstream, quote: Quote, receive: Receive, send: Send, forwarder: Forwarder
    ) -> Outcome:
        """``both`` mode, API key: forward as in bearer mode; a 401 becomes the 402 (the body
        is held, up to the limit, so the challenge can bind it; a larger one streams through
        and its 401 is relayed)."""
        read = await _read_body(receive, self.config.max_body_bytes)
        if read is None:
            return Outcome(CLIENT_CLOSED)
        body, complete = read
        if not complete:
            return await forwarder.forward(upstream, receive, send, body=body, more_body=True)
        tap = _RefuseUnauthorized()
        outcome = await forwarder.forward(upstream, receive, send, body=body, tap=tap)
        if not outcome.intercepted:
            return outcome
        call = _Call(upstream, quote, body, self._request(upstream))
        return await self._challenge(send, call)

    async def _paid(
        self, upstream: Upstream, quote: Quote, receive: Receive, send: Send, forwarder: Forwarder
    ) -> Outcome:
        limit = self.config.max_body_bytes
        declared = _content_length(upstream.headers)
        if declared is not None and declared > limit:
            return await _too_large(send, upstream, limit)
        read = await _read_body(receive, limit)
        if read is None:
            return Outcome(CLIENT_CLOSED)
        body, complete = read
        if not complete:
            return await _too_large(send, upstream, limit)
        call = _Call(upstream, quote, body, self._request(upstream))
        credentials = _payment_credentials(upstream.headers)
        if len(credentials) > 1:
            return await _problem(
                send, upstream, 400, "bad-request", "Bad Request", "more than one Payment credential"
            )
        try:
            if not credentials:
                return await self._challenge(send, call)
            call.authorization = credentials[0]
            return await self._settle(call, receive, send, forwarder)
        except httpx.InvalidURL:
            # pympp parses the URL (for the challenge's scope) before anything is settled.
            return await _problem(
                send, upstream, 400, "bad-request", "Bad Request", "the URL cannot be parsed"
            )

    def _request(self, upstream: Upstream) -> Request:
        """The request as pympp sees it: only its method, path and query count (its scope)."""
        target = upstream.raw_path.decode("latin-1")
        if upstream.query:
            target += "?" + upstream.query.decode("latin-1")
        return Request(upstream.method, self._origin + target)

    # challenges ----------------------------------------------------------------------------

    async def _challenge(
        self, send: Send, call: _Call, error: PaymentError | None = None, *, status: int = 402
    ) -> Outcome:
        """A fresh 402 for this request (``error`` says why the credential was refused)."""
        handler = self._handler(call.quote)
        request = call.request
        result = await handler(Request(request.method, request.url, body=call.bound_body))
        issued = result.challenge
        problem: dict[str, Any] = json.loads(issued.body or b"{}")
        if error is not None:
            problem = error.to_problem_details(problem.get("challengeId"))
        problem["status"] = status
        problem.update(self._price(call.quote))
        headers = [
            (name.lower().encode(), value.encode())
            for name, value in issued.headers.multi_items()
            if name.lower() == "www-authenticate"
        ]
        await _send_json(send, call.upstream, status, problem, [*headers, (b"cache-control", b"no-store")])
        return Outcome(status, None if error is None else _slug(error))

    def _handler(self, quote: Quote) -> Any:
        key = (quote.price, quote.description)
        handler = self._handlers.get(key)
        if handler is None:
            if len(self._handlers) >= _MAX_HANDLERS:  # only after many price-table reloads
                self._handlers.clear()
            handler = self.mpp.charge(
                amount=quote.price,
                description=quote.description,
                expires_in=timedelta(seconds=self.config.expires_s),
                body=_bound_body,
            )
            self._handlers[key] = handler
        return handler

    def _price(self, quote: Quote) -> dict[str, Any]:
        return {
            "amount": str(quote.amount),
            "price": quote.price,
            "currency": self.currency,
            "decimals": CURRENCY_DECIMALS,
            "description": quote.description,
        }

    def quote_json(self, method: str, path: str) -> dict[str, Any]:
        """``GET /__mpp/quote``: what ``method path`` would cost — what the gate would really
        ask. The live table prices it; a request the core does not serve is never charged
        (``admit``), so its quote is free with ``served`` false, whatever the table says."""
        quote = self.prices.table.quote(method, path)
        if not self._routes.serves(quote.method, map_path(quote.path.encode()).decode()):
            quote = msgspec.structs.replace(
                quote, amount=0, price="0", free=True, payable=True, description=NOT_SERVED
            )
            served = False
        else:
            served = True
        return {
            "method": quote.method,
            "path": quote.path,
            **self._price(quote),
            "free": quote.free,
            "payable": quote.payable,
            "served": served,
        }

    # credentials ---------------------------------------------------------------------------

    async def _settle(self, call: _Call, receive: Receive, send: Send, forwarder: Forwarder) -> Outcome:
        assert call.authorization is not None
        try:
            credential = Credential.from_authorization(call.authorization)
        except ParseError as exc:
            return await self._challenge(send, call, _malformed(str(exc)))
        except RecursionError:
            # pympp's json.loads on deeply nested JSON (a 64 KiB header holds ~48k brackets)
            return await self._challenge(send, call, _malformed("the credential is nested too deeply"))
        call.credential = credential
        challenge_id = credential.challenge.id
        fingerprint = request_fingerprint(
            call.upstream.method, call.upstream.raw_path, call.upstream.query, call.body
        )
        call.fingerprint = fingerprint
        call.credential_hash = credential_hash(call.authorization)

        existing = await self.state.get(challenge_id)
        if existing is not None:
            return await self._again(existing, call, receive, send, forwarder)

        started = time.perf_counter()
        try:
            validation = await self.mpp.validate_credential(
                credential, request={"amount": call.quote.price}, meta=None, body=call.bound_body
            )
            _check_scope(credential, call.request)
        except CredentialReplayedError as exc:
            if _is_push(credential):
                # A pushed transfer already moved; paying again would not help.
                return await _problem(send, call.upstream, 403, "verification-failed", exc.title, str(exc))
            return await self._challenge(send, call, exc)
        except (InternalPaymentError, PaymentOutcomeUnknownError) as exc:
            log.warning(
                "payment_validation_unavailable", challenge_id=challenge_id, error=repr(exc.__cause__)
            )
            return await _unknown(
                send, call.upstream, "the payment could not be checked; retry with the same credential"
            )
        except PaymentError as exc:
            return await self._challenge(send, call, exc)
        call.timings["verify_ms"] = _ms(started)
        payer = validation.payer
        if not payer:
            return await self._challenge(
                send, call, VerificationFailedError("the payer cannot be determined")
            )
        if self.limiter is not None:  # before anything is claimed: the credential stays usable
            decision = await self.limiter.for_payer(payer)
            if decision is not None and not decision.allowed:
                message = decision.message()
                await send_http_error(
                    send, 429, "rate_limited", message, call.upstream.request_id, decision.headers()
                )
                return Outcome(429, "rate_limited")
        mode: Literal["pull", "push"] = "push" if validation.details.get("mode") == "push" else "pull"
        claim = Claim(
            state="pending",
            credential=call.credential_hash,
            fingerprint=fingerprint,
            payer=payer.lower(),
            amount=call.quote.amount,
            currency=str(validation.request.get("currency", self.currency)),
            mode=mode,
            since=time.time(),
        )
        if mode == "pull":
            raw = str(validation.details.get("serialized_transaction", ""))
            claim.tx_hash, valid_before = _transaction_facts(raw)
            claim.deadline = (valid_before or 0) + VALID_BEFORE_GRACE_S
        else:
            pushed = credential.payload.get("hash") if isinstance(credential.payload, dict) else None
            claim.tx_hash = pushed if isinstance(pushed, str) else None
            claim.deadline = _expires_at(credential) + PUSH_DEADLINE_S

        key = _idempotency_key(call.upstream)
        if key is not None:
            if not key:
                return await _problem(
                    send, call.upstream, 400, "bad-request", "Bad Request",
                    f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters",
                )  # fmt: skip
            claim.idempotency_key = f"{claim.payer}:{key}"
            refused = await self._take_key(send, call, claim.idempotency_key)
            if refused is not None:
                return refused

        other = await self.state.claim(challenge_id, claim)
        if other is not None:
            if claim.idempotency_key:
                await self.state.release_key(claim.idempotency_key)
            return await self._again(other, call, receive, send, forwarder)
        return await self._pay(claim, call, receive, send, forwarder)

    async def _take_key(self, send: Send, call: _Call, scoped_key: str) -> Outcome | None:
        """Replay the stored response for this key, refuse a key in use, or take it (None)."""
        upstream = call.upstream
        try:
            marker = await self.state.key_marker(scoped_key)  # read before the ledger's answer
            stored = await self.ledger.stored_response(scoped_key, call.fingerprint, upstream.request_id)
        except KeyReused:
            return await _key_reused(send, upstream)
        except KeyReleased:
            # its request was never served and was credited back (a gateway died between
            # recording and forwarding): the marker it left lapses, the key is free
            stored = None
            if marker is not None:
                await self.state.drop_key(scoped_key, marker)
        except LedgerError as exc:
            log.warning("ledger_unavailable", error=str(exc))
            return await _unavailable(send, upstream)
        if stored is not None:
            return await _replay(send, upstream, stored)
        held = await self.state.take_key(scoped_key, call.fingerprint)
        if held is None:
            return None
        if held != call.fingerprint:
            return await _key_reused(send, upstream)
        return await _problem(
            send, upstream, 409, "idempotency-key-in-use", "Idempotency Key In Use",
            "a request with this Idempotency-Key is in progress, or its response was too large"
            " to keep; retry later, or use a new key",
            [(b"retry-after", str(RETRY_AFTER_S).encode())],
        )  # fmt: skip

    async def _again(
        self, existing: Claim, call: _Call, receive: Receive, send: Send, forwarder: Forwarder
    ) -> Outcome:
        """A challenge that is already claimed: resume our own unfinished payment, or refuse."""
        same = existing.credential == call.credential_hash and existing.fingerprint == call.fingerprint
        if same and existing.state == "pending" and time.time() - existing.since > self._stale_after_s:
            # The worker settling it never said how it went (it died, or Redis failed it):
            # find out from the ledger (it may have paid from credit), then from the chain,
            # like an unknown outcome.
            return await self._resume(existing, call, receive, send, forwarder)
        if same and existing.state == "pending":
            return await _problem(
                send, call.upstream, 409, "payment-in-progress", "Payment In Progress",
                "this credential is being settled by another request; retry it shortly",
                [(b"retry-after", str(RETRY_AFTER_S).encode())],
            )  # fmt: skip
        if same and existing.state == "paid":
            return await self._record_and_forward(existing, call, receive, send, forwarder)
        if same and existing.state == "unknown":
            return await self._recheck(existing, call, receive, send, forwarder)
        if same and existing.state == "used" and existing.idempotency_key:
            # Paid and forwarded, its answer lost (a gateway that died mid-forward): the
            # core kept the response it sent for the key; replay it.
            try:
                stored = await self.ledger.stored_response(
                    existing.idempotency_key, call.fingerprint, call.upstream.request_id
                )
            except KeyReleased:  # never served, credited back: this credential is spent
                stored = None
            except LedgerError as exc:
                log.warning("ledger_unavailable", error=str(exc))
                return await _unavailable(send, call.upstream)
            if stored is not None:
                return await _replay(send, call.upstream, stored)
        error = InvalidChallengeError(
            call.credential.challenge.id if call.credential else None, "already used"
        )
        return await self._challenge(send, call, error)

    # settling ------------------------------------------------------------------------------

    async def _pay(
        self, claim: Claim, call: _Call, receive: Receive, send: Send, forwarder: Forwarder
    ) -> Outcome:
        assert call.credential is not None
        challenge_id = call.credential.challenge.id
        upstream = call.upstream
        if claim.mode == "pull":
            started = time.perf_counter()
            record = self._record_of(msgspec.structs.replace(claim, via="credit"), call)
            redeem = CreditRedeem(
                payer=claim.payer, amount=claim.amount, challenge_id=challenge_id, record=record
            )
            try:
                redeemed = await self.ledger.redeem(redeem, upstream.request_id)
            except AlreadyRecorded as exc:  # the ledger's unique keys hold; nothing was taken
                log.error(
                    "payment_refused_by_ledger", challenge_id=challenge_id, via="credit", error=str(exc)
                )
                await self._fail(challenge_id, claim)
                return await self._challenge(send, call, InvalidChallengeError(challenge_id, "already used"))
            except LedgerError as exc:
                # The credit may have been taken (with its row): the same credential, retried,
                # claims afresh and the redemption, idempotent per challenge, is found again.
                log.warning("ledger_unavailable", error=str(exc))
                await self._forget(challenge_id, claim)
                return await _unknown(
                    send, upstream, "the payment could not be settled yet; retry this request with"
                    " the same credential (do not pay again)",
                )  # fmt: skip
            call.timings["credit_ms"] = _ms(started)
            if redeemed.redeemed:
                claim.state, claim.via, claim.tx_hash = "paid", "credit", None
                claim.payment_id = redeemed.payment_id
                await self._save(challenge_id, claim)
                return await self._record_and_forward(claim, call, receive, send, forwarder)
        return await self._broadcast(claim, call, receive, send, forwarder, bind=True)

    async def _broadcast(
        self, claim: Claim, call: _Call, receive: Receive, send: Send, forwarder: Forwarder, *, bind: bool
    ) -> Outcome:
        assert call.credential is not None
        challenge_id = call.credential.challenge.id
        started = time.perf_counter()
        # ``bind``: check the credential against this request again (a resumed payment was
        # checked when it was claimed, and the price may have changed since).
        bindings: dict[str, Any] = (
            {"request": {"amount": call.quote.price}, "meta": None, "body": call.bound_body} if bind else {}
        )
        try:
            receipt = await self.mpp.broadcast_credential(call.credential, **bindings)
        except CredentialReplayedError as exc:
            await self._fail(challenge_id, claim)
            return await self._challenge(send, call, exc)
        except PaymentError as exc:
            refused = _refused_by_chain(exc)
            if refused is None and isinstance(exc, (InternalPaymentError, PaymentOutcomeUnknownError)):
                return await self._lost(claim, call, send, exc)
            if refused is not None and claim.mode == "pull" and claim.tx_hash:
                return await self._after_refusal(claim, call, receive, send, forwarder, refused)
            await self._fail(challenge_id, claim)
            return await self._challenge(send, call, refused or exc)
        except Exception as exc:  # anything else after the credential left: outcome unknown
            return await self._lost(claim, call, send, exc)
        call.timings["broadcast_ms"] = _ms(started)
        claim.state, claim.via, claim.tx_hash = "paid", "chain", receipt.reference
        await self._save(challenge_id, claim)
        return await self._record_and_forward(claim, call, receive, send, forwarder)

    async def _after_refusal(
        self,
        claim: Claim,
        call: _Call,
        receive: Receive,
        send: Send,
        forwarder: Forwarder,
        refused: VerificationError,
    ) -> Outcome:
        """The node said no to a transaction that was sent. That "no" can be about an earlier
        copy that was included ("already known", "nonce too low", a replay), and pympp's one
        receipt lookup behind it may itself have failed, which it does not tell apart from
        "no receipt". Only a receipt settles it: found, the payment landed; lookup failed, the
        outcome is unknown; none, the refusal stands."""
        assert call.credential is not None and claim.tx_hash is not None
        try:
            receipt = await self._receipt(claim.tx_hash)
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            return await self._lost(claim, call, send, exc)
        if receipt is None:
            await self._fail(call.credential.challenge.id, claim)
            return await self._challenge(send, call, refused)
        return await self._from_receipt(receipt, claim, call, receive, send, forwarder)

    async def _from_receipt(
        self,
        receipt: dict[str, Any],
        claim: Claim,
        call: _Call,
        receive: Receive,
        send: Send,
        forwarder: Forwarder,
    ) -> Outcome:
        """Go on from the receipt of the claim's own transaction: paid if it succeeded."""
        assert call.credential is not None
        challenge_id = call.credential.challenge.id
        if receipt.get("status") == "0x1":
            claim.state, claim.via = "paid", "chain"
            await self._save(challenge_id, claim)
            return await self._record_and_forward(claim, call, receive, send, forwarder)
        await self._fail(challenge_id, claim)
        return await self._challenge(send, call, VerificationFailedError("the transaction reverted"))

    async def _lost(self, claim: Claim, call: _Call, send: Send, exc: BaseException) -> Outcome:
        """The chain's answer is unknown: remember it so the same request, retried with the
        same credential, looks the transaction up instead of paying again."""
        assert call.credential is not None
        claim.state = "unknown"
        await self._save(call.credential.challenge.id, claim)
        log.warning(
            "payment_outcome_unknown",
            challenge_id=call.credential.challenge.id,
            payer=claim.payer,
            tx_hash=claim.tx_hash,
            error=repr(exc.__cause__ or exc),
        )
        return await _unknown(
            send, call.upstream, "the chain did not confirm the payment in time; retry this request"
            " with the same credential (do not pay again)",
        )  # fmt: skip

    async def _resume(
        self, claim: Claim, call: _Call, receive: Receive, send: Send, forwarder: Forwarder
    ) -> Outcome:
        """Resume a payment abandoned mid-way: if the dead worker had paid it from credit,
        the ledger has that redemption (taking credit and recording are one transaction);
        otherwise whatever it sent is on the chain or not."""
        assert call.credential is not None
        if claim.mode == "pull":
            lookup = CreditRedeem(
                payer=claim.payer, amount=claim.amount, challenge_id=call.credential.challenge.id, resume=True
            )
            try:
                earlier = await self.ledger.redeem(lookup, call.upstream.request_id)
            except LedgerError as exc:
                log.warning("ledger_unavailable", error=str(exc))
                return await _unknown(
                    send, call.upstream, "the ledger cannot be asked right now; retry shortly"
                )
            if earlier.redeemed:
                claim.state, claim.via, claim.tx_hash = "paid", "credit", None
                claim.payment_id = earlier.payment_id
                await self._save(call.credential.challenge.id, claim)
                return await self._record_and_forward(claim, call, receive, send, forwarder)
        return await self._recheck(claim, call, receive, send, forwarder)

    async def _recheck(
        self, claim: Claim, call: _Call, receive: Receive, send: Send, forwarder: Forwarder
    ) -> Outcome:
        """Resume a payment whose outcome was unknown."""
        assert call.credential is not None
        challenge_id = call.credential.challenge.id
        if claim.mode == "pull" and claim.tx_hash:
            try:
                receipt = await self._receipt(claim.tx_hash)
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                log.warning("rpc_unavailable", error=repr(exc))
                return await _unknown(
                    send, call.upstream, "the chain cannot be asked right now; retry shortly"
                )
            if receipt is not None:
                return await self._from_receipt(receipt, claim, call, receive, send, forwarder)
            if time.time() > (claim.deadline or 0):
                await self._fail(challenge_id, claim)
                error = VerificationFailedError("the transaction was never included; nothing was charged")
                return await self._challenge(send, call, error)
            if _expires_at(call.credential) <= time.time():
                return await _unknown(
                    send, call.upstream, "the transaction is not confirmed yet; retry shortly"
                )
        return await self._broadcast(claim, call, receive, send, forwarder, bind=False)

    async def _receipt(self, tx_hash: str) -> dict[str, Any] | None:
        response = await self._rpc.post(
            self.config.rpc_url,
            json={"jsonrpc": "2.0", "id": 1, "method": "eth_getTransactionReceipt", "params": [tx_hash]},
        )
        response.raise_for_status()
        answer = response.json()
        if "error" in answer:
            raise ValueError(str(answer["error"]))
        result = answer["result"]
        return result if isinstance(result, dict) else None

    async def _save(self, challenge_id: str, claim: Claim) -> None:
        """Note how far a payment got. Never fatal: once money may have moved the request
        must go on, and the ledger's unique keys still stop a second use."""
        try:
            await self.state.update(challenge_id, claim)
        except RedisError as exc:
            log.warning(
                "payment_state_not_saved", challenge_id=challenge_id, state=claim.state, error=str(exc)
            )

    async def _fail(self, challenge_id: str, claim: Claim) -> None:
        claim.state = "failed"
        await self._save(challenge_id, claim)
        if claim.idempotency_key:
            with contextlib.suppress(RedisError):
                await self.state.release_key(claim.idempotency_key)

    async def _forget(self, challenge_id: str, claim: Claim) -> None:
        with contextlib.suppress(RedisError):
            await self.state.release(challenge_id)
            if claim.idempotency_key:
                await self.state.release_key(claim.idempotency_key)

    # recording and forwarding -------------------------------------------------------------

    async def _record_and_forward(
        self, claim: Claim, call: _Call, receive: Receive, send: Send, forwarder: Forwarder
    ) -> Outcome:
        assert call.credential is not None
        challenge_id = call.credential.challenge.id
        upstream = call.upstream
        started = time.perf_counter()
        try:
            if claim.via == "credit" and claim.payment_id:  # recorded with the redemption
                recorded = PaymentRecorded(payment_id=claim.payment_id)
            else:
                recorded = await self.ledger.record(self._record_of(claim, call), upstream.request_id)
        except AlreadyRecorded as exc:
            # Only reachable if Redis forgot the claim: the ledger's unique keys still hold.
            claim.state = "used"
            await self._save(challenge_id, claim)
            log.error(
                "payment_refused_by_ledger",
                challenge_id=challenge_id,
                payer=claim.payer,
                via=claim.via,
                tx_hash=claim.tx_hash,
                amount=claim.amount,
                error=str(exc),
            )
            return await self._challenge(send, call, InvalidChallengeError(challenge_id, "already used"))
        except LedgerError as exc:
            log.warning("ledger_unavailable", error=str(exc), challenge_id=challenge_id)
            return await _unknown(
                send, upstream, "the payment is settled but could not be recorded yet; retry this"
                " request with the same credential (do not pay again)",
            )  # fmt: skip
        call.timings["record_ms"] = _ms(started)
        claim.state, claim.payment_id = "used", recorded.payment_id
        await self._save(challenge_id, claim)

        reference = (
            claim.tx_hash if claim.via == "chain" and claim.tx_hash else f"credit:{recorded.payment_id}"
        )
        receipt = Receipt.success(reference)
        receipt = replace(receipt, extensions={"challengeId": challenge_id})
        # The payment is the credential: a client's API key goes no further (X-API-KEY too).
        headers = [(n, v) for n, v in upstream.headers if n not in (b"authorization", b"x-api-key")]
        headers += [
            (b"authorization", self._edge_auth),
            (PAYER_HEADER.encode(), claim.payer.encode()),
            # the core records what it answers for this payment itself: a gateway that dies
            # from here on loses no outcome (core.services.payments.settle)
            (PAYMENT_ID_HEADER.encode(), recorded.payment_id.encode()),
        ]
        tap = _PaidTap(receipt.to_payment_receipt().encode())
        started = time.perf_counter()
        outcome = await forwarder.forward(
            msgspec.structs.replace(upstream, headers=headers),
            receive,
            send,
            body=call.body,
            tap=tap,
            finish_without_client=True,
        )
        call.timings["forward_ms"] = _ms(started)
        report = PaymentOutcome(upstream_status=outcome.status, response=tap.stored(outcome))
        self._spawn(self.ledger.outcome(recorded.payment_id, report, upstream.request_id))
        log.info(
            "payment",
            challenge_id=challenge_id,
            payment_id=recorded.payment_id,
            payer=claim.payer,
            amount=claim.amount,
            currency=claim.currency,
            via=claim.via,
            tx_hash=claim.tx_hash,
            status=outcome.status,
            **call.timings,
        )
        return outcome

    def _record_of(self, claim: Claim, call: _Call) -> PaymentRecord:
        """The ledger row of this payment (``tx_hash`` None: paid from credit)."""
        assert call.credential is not None
        return PaymentRecord(
            challenge_id=call.credential.challenge.id,
            payer=claim.payer,
            method=call.upstream.method,
            path=call.upstream.raw_path.decode("latin-1"),
            amount=claim.amount,
            currency=claim.currency,
            tx_hash=claim.tx_hash if claim.via == "chain" else None,
            idempotency_key=claim.idempotency_key,
            fingerprint=claim.fingerprint if claim.idempotency_key else None,
        )

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class _Call:
    """One payable request on its way through the gate."""

    __slots__ = (
        "authorization",
        "body",
        "bound_body",
        "credential",
        "credential_hash",
        "fingerprint",
        "quote",
        "request",
        "timings",
        "upstream",
    )

    def __init__(self, upstream: Upstream, quote: Quote, body: bytes, request: Request) -> None:
        self.upstream = upstream
        self.quote = quote
        self.body = body
        self.bound_body: bytes | None = body if upstream.method in BODY_METHODS or body else None
        self.request = request
        self.authorization: str | None = None
        self.credential: Credential | None = None
        self.credential_hash = ""
        self.fingerprint = ""
        self.timings: dict[str, float] = {}


class _PaidTap:
    """Adds the receipt to a 2xx answer and keeps the answer (if small) for replays."""

    def __init__(self, receipt: bytes) -> None:
        self._receipt = receipt
        self._status = 0
        self._headers: Headers = []
        self._chunks: list[bytes] | None = []
        self._size = 0

    def start(self, status: int, headers: Headers) -> Headers:
        self._status, self._headers = status, headers
        if not 200 <= status < 300:
            return headers
        cache_control = b", ".join(v for n, v in headers if n == b"cache-control")
        out = [(n, v) for n, v in headers if n not in (b"cache-control", b"payment-receipt")]
        out += [(b"payment-receipt", self._receipt), (b"cache-control", _private(cache_control))]
        return out

    def chunk(self, data: bytes) -> None:
        if self._chunks is None:
            return
        self._size += len(data)
        if self._size > MAX_STORED_RESPONSE:
            self._chunks = None
        else:
            self._chunks.append(data)

    def stored(self, outcome: Outcome) -> StoredResponse | None:
        if not self._status or not outcome.complete or outcome.error or self._chunks is None:
            return None
        headers = [
            (n.decode("latin-1"), v.decode("latin-1"))
            for n, v in self._headers
            if n not in (_REQUEST_ID, b"content-length", b"set-cookie", b"payment-receipt")
        ]
        return StoredResponse(status=self._status, headers=headers, body=b"".join(self._chunks))


class _RefuseUnauthorized:
    """``both`` mode: keep a 401 from the client, who gets a 402 instead."""

    def start(self, status: int, headers: Headers) -> Headers | None:
        return None if status == 401 else headers

    def chunk(self, data: bytes) -> None:
        return None


# helpers ------------------------------------------------------------------------------------


_MAX_HANDLERS = 4096


def _bound_body(request: Request) -> bytes | None:
    """The body a challenge's digest binds: the one the gateway put on the pympp request
    (``None`` for a GET without a body, so no digest)."""
    return request.body


def _private(cache_control: bytes) -> bytes:
    """A paid answer must stay out of shared caches: ``private`` (unless already private or
    ``no-store``), without ``public`` or ``s-maxage``."""
    directives = [d.strip() for d in cache_control.split(b",") if d.strip()]
    lowered = [d.lower() for d in directives]
    if b"private" in lowered or b"no-store" in lowered:
        return b", ".join(directives)
    kept = [d for d in directives if d.lower() != b"public" and not d.lower().startswith(b"s-maxage")]
    return b", ".join([b"private", *kept])


def _has_api_key(headers: Headers) -> bool:
    """``Authorization: Bearer`` or E2B's ``X-API-KEY``: an API key stands in for a payment."""
    return api_key(headers) is not None


async def _refuse(send: Send, upstream: Upstream, status: int, code: str, message: str) -> Outcome:
    """The gateway's error body (not a payment problem: nothing here can be paid)."""
    await send_http_error(send, status, code, message, upstream.request_id)
    return Outcome(status, code)


def _payment_credentials(headers: Headers) -> list[str]:
    found = []
    for name, value in headers:
        if name != b"authorization":
            continue
        for part in value.decode("latin-1").split(","):
            part = part.strip()
            if part[:8].lower() == "payment ":
                found.append(part)
    return found


def _content_length(headers: Headers) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _idempotency_key(upstream: Upstream) -> str | None:
    """The request's ``Idempotency-Key`` (None: none, or a method it does not apply to;
    "": present but malformed)."""
    if upstream.method not in IDEMPOTENT_KEY_METHODS:
        return None
    for name, value in upstream.headers:
        if name == b"idempotency-key":
            key = value.decode("latin-1").strip()
            ok = 0 < len(key) <= MAX_IDEMPOTENCY_KEY and all(33 <= ord(c) <= 126 for c in key)
            return key if ok else ""
    return None


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, bool] | None:
    """Up to ``limit`` bytes of the body and whether that is all of it; None if the client left."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        more = message.get("more_body", False)
        if size > limit:
            return b"".join(chunks), False
        if not more:
            return b"".join(chunks), True


def _check_scope(credential: Credential, request: Request) -> None:
    """The echoed request must name this method, path and query (pympp's ``_mppx_scope``:
    ``Mpp.validate_credential`` compares everything else, but not this)."""
    try:
        echoed = _b64_decode(credential.challenge.request) if credential.challenge.request else {}
    except ParseError as exc:
        raise InvalidChallengeError(credential.challenge.id, "unreadable request") from exc
    scope = echoed.get("_mppx_scope") if isinstance(echoed, dict) else None
    if scope != request.scope():
        raise InvalidChallengeError(credential.challenge.id, "credential was issued for another request")


def _refused_by_chain(error: PaymentError) -> VerificationError | None:
    """The node's definite "no" behind pympp's generic post-broadcast error, if that is what
    it was: the node refused the transaction (or it reverted) and no receipt exists, so
    nothing was paid and a fresh challenge is the right answer. A timeout, a lost connection
    or an unreachable node leave no ``VerificationError`` behind: the outcome is unknown."""
    cause = error.__cause__
    if (
        isinstance(error, InternalPaymentError)
        and isinstance(cause, VerificationError)
        and not isinstance(cause, CredentialReplayedError)
    ):
        return cause
    return None


def _is_push(credential: Credential) -> bool:
    payload = credential.payload
    return isinstance(payload, dict) and payload.get("type") == "hash"


def _expires_at(credential: Credential) -> float:
    try:
        return datetime.fromisoformat((credential.challenge.expires or "").replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _transaction_facts(raw: str) -> tuple[str | None, int | None]:
    """The hash a Tempo node gives a signed 0x76 transaction, and its ``validBefore``.

    Nodes hash the canonical encoding, whose secp256k1 recovery id is 27/28 (also inside a
    keychain signature, after its type byte and 20-byte account); clients may send 0/1.
    """
    try:
        data = bytes.fromhex(raw.removeprefix("0x"))
        if data[:1] != b"\x76":
            return None, None
        fields = rlp.decode(data[1:])
    except (ValueError, rlp.DecodingError):
        return None, None
    if not isinstance(fields, list) or len(fields) < 14 or not isinstance(fields[-1], bytes):
        return None, None
    valid_before = int.from_bytes(fields[8], "big") if isinstance(fields[8], bytes) and fields[8] else None
    signature = fields[-1]
    canonical = _canonical_signature(signature)
    if canonical != signature:
        data = b"\x76" + rlp.encode([*fields[:-1], canonical])
    return "0x" + keccak(data).hex(), valid_before


def _canonical_signature(signature: bytes) -> bytes:
    if len(signature) == 65 and signature[64] < 2:
        return signature[:64] + bytes([signature[64] + 27])
    if len(signature) > 21 and signature[0] in (3, 4):  # keychain: type, root account, inner
        return signature[:21] + _canonical_signature(signature[21:])
    return signature


def _malformed(reason: str) -> PaymentError:
    return MalformedCredentialError(reason)


def _slug(error: PaymentError) -> str:
    return error.type.removeprefix(PROBLEMS)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


async def _send_json(
    send: Send, upstream: Upstream, status: int, body: dict[str, Any], headers: Headers
) -> None:
    data = _JSON.encode(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(data)).encode()),
                (_REQUEST_ID, upstream.request_id.encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": data, "more_body": False})


async def _problem(
    send: Send,
    upstream: Upstream,
    status: int,
    slug: str,
    title: str,
    detail: str,
    headers: Headers | None = None,
) -> Outcome:
    """An RFC 9457 problem that invites no payment."""
    body = {"type": PROBLEMS + slug, "title": title, "status": status, "detail": detail}
    await _send_json(send, upstream, status, body, [*(headers or []), (b"cache-control", b"no-store")])
    return Outcome(status, slug)


async def _unknown(send: Send, upstream: Upstream, detail: str) -> Outcome:
    return await _problem(
        send, upstream, 503, "payment-outcome-unknown", "Payment Outcome Unknown", detail,
        [(b"retry-after", str(RETRY_AFTER_S).encode())],
    )  # fmt: skip


async def _unavailable(send: Send, upstream: Upstream) -> Outcome:
    return await _problem(
        send, upstream, 503, "service-unavailable", "Service Unavailable",
        "payments cannot be processed right now; nothing was charged, retry shortly",
        [(b"retry-after", str(RETRY_AFTER_S).encode())],
    )  # fmt: skip


async def _too_large(send: Send, upstream: Upstream, limit: int) -> Outcome:
    return await _problem(
        send, upstream, 413, "content-too-large", "Content Too Large",
        f"a paid request's body may be at most {limit} bytes",
    )  # fmt: skip


async def _key_reused(send: Send, upstream: Upstream) -> Outcome:
    return await _problem(
        send, upstream, 422, "idempotency-key-reused", "Idempotency Key Reused",
        "this Idempotency-Key was used for a different request",
    )  # fmt: skip


async def _replay(send: Send, upstream: Upstream, stored: StoredResponse) -> Outcome:
    headers: Headers = [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in stored.headers]
    if not any(n == b"cache-control" for n, _ in headers):
        headers.append((b"cache-control", b"private"))
    headers += [
        (b"content-length", str(len(stored.body)).encode()),
        (_REQUEST_ID, upstream.request_id.encode()),
        (b"idempotent-replayed", b"true"),
    ]
    await send({"type": "http.response.start", "status": stored.status, "headers": headers})
    await send({"type": "http.response.body", "body": stored.body, "more_body": False})
    outcome = Outcome(stored.status)
    outcome.complete = True
    return outcome
