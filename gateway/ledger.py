"""The gateway's client for the core's payment ledger (``contracts.control``): record a
payment before forwarding, report what the core answered, redeem credit, and look up stored
responses for ``Idempotency-Key`` replays. Every call carries the edge token.
"""

from __future__ import annotations

import asyncio
from typing import TypeVar
from urllib.parse import quote

import httpx
import msgspec
import structlog

from contracts.control import (
    REQUEST_ID_HEADER,
    CreditRedeem,
    CreditRedeemed,
    OutcomeRecorded,
    PaymentOutcome,
    PaymentRecord,
    PaymentRecorded,
    StoredResponse,
)

log = structlog.get_logger()

LEDGER_TIMEOUT_S = 10.0
OUTCOME_RETRY_DELAYS_S = (0.2, 1.0, 3.0)
"""A lost outcome report is a lost refund: retry a few times before giving up (and logging)."""


class LedgerError(RuntimeError):
    """The core could not be asked, or answered something unexpected."""


class AlreadyRecorded(LedgerError):
    """409: this challenge, transaction or idempotency key is in the ledger already."""


class KeyReused(LedgerError):
    """409 on a replay lookup: the idempotency key names a different request."""


class KeyReleased(LedgerError):
    """410 on a replay lookup: the key's request was never served and its payment was
    credited back; the key is free (its marker, left by a dead gateway, may be dropped)."""


_ENCODE = msgspec.json.Encoder()
_T = TypeVar("_T")


class Ledger:
    """Enter it to open the connection pool to the core; leave it to close the pool."""

    _client: httpx.AsyncClient

    def __init__(self, core_url: str, edge_token: str, timeout_s: float = LEDGER_TIMEOUT_S) -> None:
        self._core_url = core_url
        self._edge_token = edge_token
        self._timeout_s = timeout_s

    async def __aenter__(self) -> Ledger:
        self._client = httpx.AsyncClient(
            base_url=self._core_url,
            timeout=self._timeout_s,
            headers={"authorization": f"Bearer {self._edge_token}", "content-type": "application/json"},
            trust_env=False,
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._client.aclose()

    async def record(self, record: PaymentRecord, request_id: str) -> PaymentRecorded:
        """Raises ``AlreadyRecorded`` (409) or ``LedgerError``."""
        response = await self._call("POST", "/internal/payments", request_id, _ENCODE.encode(record))
        if response.status_code == 409:
            raise AlreadyRecorded(_message(response))
        return self._decode(response, 201, PaymentRecorded)

    async def redeem(self, redeem: CreditRedeem, request_id: str) -> CreditRedeemed:
        """Pay from credit and record it in one go. Raises ``AlreadyRecorded`` (409: the
        challenge was paid otherwise, or the key is taken; nothing was taken) or ``LedgerError``."""
        response = await self._call("POST", "/internal/credits/redeem", request_id, _ENCODE.encode(redeem))
        if response.status_code == 409:
            raise AlreadyRecorded(_message(response))
        return self._decode(response, 200, CreditRedeemed)

    async def stored_response(self, key: str, fingerprint: str, request_id: str) -> StoredResponse | None:
        """The response stored for this key, None if there is none (yet). Raises ``KeyReused``
        when the key was used for a request with another fingerprint, ``KeyReleased`` when
        the core gave the key up (its request never served, credited back)."""
        path = f"/internal/idempotency?key={quote(key, safe='')}&fingerprint={quote(fingerprint, safe='')}"
        response = await self._call("GET", path, request_id)
        if response.status_code == 404:
            return None
        if response.status_code in (409, 422):
            raise KeyReused(_message(response))
        if response.status_code == 410:
            raise KeyReleased(_message(response))
        return self._decode(response, 200, StoredResponse)

    async def outcome(
        self, payment_id: str, outcome: PaymentOutcome, request_id: str
    ) -> OutcomeRecorded | None:
        """Report what the core answered to a paid request, retrying a lost report.

        None when the report could not be delivered (logged: the payer's refund, if one was
        due, needs a look) or was already recorded by an earlier attempt.
        """
        body = _ENCODE.encode(outcome)
        path = f"/internal/payments/{quote(payment_id, safe='')}/outcome"
        for attempt, delay in enumerate((0.0, *OUTCOME_RETRY_DELAYS_S)):
            if delay:
                await asyncio.sleep(delay)
            try:
                response = await self._call("POST", path, request_id, body)
                if response.status_code == 409:
                    return None  # an earlier attempt got through
                return self._decode(response, 200, OutcomeRecorded)
            except LedgerError as exc:
                log.warning(
                    "ledger_outcome_retry", payment_id=payment_id, attempt=attempt + 1, error=str(exc)
                )
        log.error(
            "ledger_outcome_lost",
            payment_id=payment_id,
            upstream_status=outcome.upstream_status,
            note="the outcome was not recorded; a refund (credit) may be owed",
        )
        return None

    async def _call(
        self, method: str, path: str, request_id: str, body: bytes | None = None
    ) -> httpx.Response:
        try:
            return await self._client.request(
                method, path, content=body, headers={REQUEST_ID_HEADER: request_id}
            )
        except httpx.HTTPError as exc:
            raise LedgerError(f"the core's ledger is unreachable: {exc.__class__.__name__}") from exc

    @staticmethod
    def _decode(response: httpx.Response, expected: int, kind: type[_T]) -> _T:
        if response.status_code != expected:
            raise LedgerError(f"the core's ledger answered {response.status_code}: {_message(response)}")
        try:
            return msgspec.json.decode(response.content, type=kind)
        except msgspec.ValidationError as exc:
            raise LedgerError(f"the core's ledger answered an unexpected body: {exc}") from exc


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    return response.text[:200]
