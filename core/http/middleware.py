"""Per-request context: bind the request id for every log line, echo it back, log once; and
the core's own record of each paid request it serves (``paid_requests``)."""

from __future__ import annotations

import time
from collections.abc import Iterable

import msgspec
import structlog
from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Message,
    Receive,
    Scope,
    Send,
)

from contracts.control import (
    MAX_STORED_RESPONSE,
    PAYER_HEADER,
    PAYMENT_ID_HEADER,
    REQUEST_ID_HEADER,
    STORED_RESPONSE_DROPPED_HEADERS,
    StoredResponse,
)
from contracts.observability import bind_request_id
from contracts.public import ErrorBody
from core.http.metrics import REQUESTS

log = structlog.get_logger()
_HEADER = REQUEST_ID_HEADER.encode()


def request_context(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        incoming = next((v.decode("latin-1") for k, v in scope["headers"] if k == _HEADER), None)
        request_id = bind_request_id(incoming)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (_HEADER, request_id.encode())]
            await send(message)

        try:
            await app(scope, receive, send_with_id)
        finally:
            REQUESTS[f"{status // 100}xx"] += 1
            log.info(
                "request",
                method=scope.get("method"),
                path=scope["path"],
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )

    return middleware


_PAYMENT = PAYMENT_ID_HEADER.encode()
_PAYER = PAYER_HEADER.encode()
_BEARER = b"bearer "


def paid_requests(app: ASGIApp) -> ASGIApp:
    """A request the gateway forwards for a payment (edge token and ``x-dnah-payment``) is
    served only while that payment has no outcome, and once: the row is marked as being
    served before the handler runs, and the status answered is written into it before the
    answer leaves. What a gateway that dies after recording the payment leaves unsettled,
    the core's payment sweep settles from this record. A payment header without the edge
    token is ignored (the gateway drops it from clients)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        raw_id = headers.get(_PAYMENT)
        auth = headers.get(b"authorization", b"")
        token = auth[len(_BEARER) :].strip().decode("latin-1") if auth.lower().startswith(_BEARER) else None
        payments = scope["litestar_app"].state.payments
        if raw_id is None or not payments.is_edge(token):
            await app(scope, receive, send)
            return
        payment_id = raw_id.decode("latin-1")
        payer = headers.get(_PAYER, b"").decode("latin-1").lower() or None
        try:
            keyed = await payments.start_serving(payment_id, payer)
        except Exception:
            log.exception("paid_request_unmarked", payment_id=payment_id)
            await _refuse(send, 503, "service-unavailable", "the payment ledger is unavailable")
            return
        if keyed is None:
            await _refuse(
                send, 409, "payment-settled",
                "this payment is unknown, another payer's, already served or already settled",
            )  # fmt: skip
            return
        answered = False
        kept = _Kept() if keyed else None

        async def send_recording(message: Message) -> None:
            nonlocal answered, kept
            if message["type"] == "http.response.start" and not answered:
                answered = True
                try:
                    await payments.served(payment_id, message["status"])
                except Exception:  # the sweep then takes it as never answered (credited)
                    log.exception("paid_request_status_unrecorded", payment_id=payment_id)
                if kept is not None:
                    kept.start(message["status"], message.get("headers", []))
            elif message["type"] == "http.response.body" and kept is not None:
                if not kept.chunk(message.get("body", b"")):
                    kept = None
                elif not message.get("more_body", False):
                    try:  # before the end leaves: a gateway that dies now loses no replay
                        await payments.store_response(payment_id, kept.response())
                    except Exception:
                        log.exception("paid_response_unstored", payment_id=payment_id)
                    kept = None
            await send(message)

        await app(scope, receive, send_recording)

    return middleware


class _Kept:
    """A paid response with an ``Idempotency-Key``, kept (up to ``MAX_STORED_RESPONSE``)."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.chunks: list[bytes] = []
        self.size = 0

    def start(self, status: int, headers: Iterable[tuple[bytes, bytes]]) -> None:
        self.status = status
        for name, value in headers:
            text = name.decode("latin-1").lower()
            if text not in STORED_RESPONSE_DROPPED_HEADERS:
                self.headers.append((text, value.decode("latin-1")))

    def chunk(self, data: bytes) -> bool:
        """False once the response is too large to keep."""
        self.size += len(data)
        self.chunks.append(data)
        return self.size <= MAX_STORED_RESPONSE

    def response(self) -> StoredResponse:
        return StoredResponse(status=self.status, headers=self.headers, body=b"".join(self.chunks))


async def _refuse(send: Send, status: int, code: str, message: str) -> None:
    body = msgspec.json.encode(ErrorBody(status_code=status, message=message, code=code))
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }
    await send(start)
    end: HTTPResponseBodyEvent = {"type": "http.response.body", "body": body, "more_body": False}
    await send(end)
