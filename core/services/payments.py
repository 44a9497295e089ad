"""The payment ledger, payer credit and idempotent replays, for the gateway's payment mode.

Rules (also in docs/payments.md and /llms.txt):

- Every settled payment is recorded before its request is forwarded; a challenge id or a
  transaction hash can be recorded once, ever — the database's unique constraints are the
  last line against replays, whatever happened in front of them.
- When the core rejects or fails a paid request (status ≥ 400), the amount becomes credit for
  the payer. Credit pays for the payer's next paid request (the gateway redeems it instead of
  broadcasting the payer's transaction), all or nothing; taking it and recording the payment
  are one transaction.
- The core records, itself, the status it answered to each paid request (the gateway passes
  the payment id, ``x-dnah-payment``); a paid request is served only while its payment has
  no outcome, once. A payment still without an outcome report after a bound is settled by
  the core's sweep from that record: answered → completed with that status (credited when
  ≥ 400); never served → credited back. No gateway death can lose a refund or a charge.
- An ``Idempotency-Key`` names one request: a retry with the same key and the same request
  fingerprint gets the stored response without paying again; the same key with a different
  request is refused.
"""

from __future__ import annotations

import asyncio
import hmac

import asyncpg
import structlog

from contracts.control import (
    CreditRedeem,
    CreditRedeemed,
    OutcomeRecorded,
    PaymentOutcome,
    PaymentRecord,
    PaymentRecorded,
    PaymentsSettle,
    PaymentsSettled,
    StoredResponse,
)
from core.db import payments as payments_db
from core.db.errors import translate
from core.errors import BadRequest, Conflict, Gone, NotFound, Unauthorized
from core.services.auth import check_payer, new_id

log = structlog.get_logger()

UNANSWERED_AFTER_S = 3600.0
"""A paid request the core began to serve and has not answered for this long is taken as
never answered (the core died mid-request); no route runs this long."""

UNANSWERED_STATUS = 502
"""The status a payment is settled with when the core began to serve its request and never
answered (it died mid-request): what the gateway reports for an upstream that failed."""


class PaymentService:
    def __init__(self, db: asyncpg.Pool, edge_token: str | None) -> None:
        self._db = db
        self._edge_token = edge_token

    def check_edge(self, token: str | None) -> None:
        if (
            not self._edge_token
            or not token
            or not hmac.compare_digest(token.encode(), self._edge_token.encode())
        ):
            raise Unauthorized("this route is for the gateway")

    def is_edge(self, token: str | None) -> bool:
        try:
            self.check_edge(token)
        except Unauthorized:
            return False
        return True

    async def start_serving(self, payment_id: str, payer: str | None) -> bool | None:
        """None: refuse to serve it; else whether its response is to be kept (a key)."""
        return await payments_db.start_serving(self._db, payment_id, payer)

    async def store_response(self, payment_id: str, response: StoredResponse) -> None:
        await payments_db.store_response(self._db, payment_id, response)

    async def served(self, payment_id: str, status: int) -> None:
        await payments_db.served(self._db, payment_id, status)

    async def settle(self, req: PaymentsSettle) -> PaymentsSettled:
        """Settle payments whose outcome report never came (see ``PaymentsSettle``)."""
        if req.payer is not None:
            check_payer(req.payer)
        if req.older_than_s < 0:
            raise BadRequest("older_than_s must be 0 or more")
        completed = credited_unserved = 0
        async with self._db.acquire() as conn, conn.transaction():
            for row in await payments_db.unsettled(
                conn, req.older_than_s, max(req.older_than_s, UNANSWERED_AFTER_S), req.payer
            ):
                if row["served_status"] is not None:
                    status = int(row["served_status"])
                    completed += 1
                elif row["serving_since"] is None:
                    # never served: credited back (start_serving now refuses it), and its
                    # idempotency key is free again
                    status = None
                    credited_unserved += 1
                    await payments_db.release_key(conn, row["id"])
                elif row["serving_stale"]:
                    status = UNANSWERED_STATUS
                    credited_unserved += 1
                else:
                    continue  # still being served
                await self._complete(conn, row["id"], status, None, "core")
        if completed or credited_unserved:
            log.info("payments_settled_by_core", completed=completed, credited_unserved=credited_unserved)
        return PaymentsSettled(completed=completed, credited_unserved=credited_unserved)

    async def sweep(self, older_than_s: float, interval_s: float) -> None:
        """Run ``settle`` for every payer every ``interval_s``."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.settle(PaymentsSettle(older_than_s=older_than_s))
            except Exception:
                log.exception("payment_sweep_failed")

    async def record(self, rec: PaymentRecord) -> PaymentRecorded:
        check_payer(rec.payer)
        payment_id = new_id("pay")
        with translate("this challenge, transaction or idempotency key was already used"):
            await payments_db.insert(self._db, payment_id, rec)
        return PaymentRecorded(payment_id=payment_id)

    async def outcome(self, payment_id: str, outcome: PaymentOutcome) -> OutcomeRecorded:
        async with self._db.acquire() as conn, conn.transaction():
            status, response = outcome.upstream_status, outcome.response
            done = await self._complete(conn, payment_id, status, response, "gateway")
            if done is None:
                raise Conflict(f"payment {payment_id!r} is unknown or its outcome is already recorded")
        return done

    @staticmethod
    async def _complete(
        conn: asyncpg.Connection,
        payment_id: str,
        status: int | None,
        response: StoredResponse | None,
        settled_by: str,
    ) -> OutcomeRecorded | None:
        """Record the outcome once, crediting the amount when the payer got nothing (status
        ≥ 400, or None: never served). None when it was recorded already."""
        row = await payments_db.complete(conn, payment_id, status, response, settled_by)
        if row is None:
            return None
        credited = 0
        if (status is None or status >= 400) and row["amount"] > 0:
            credited = row["amount"]
            balance = await payments_db.add_credit(conn, payment_id, row["payer"], credited)
        else:
            balance = await payments_db.balance(conn, row["payer"])
        return OutcomeRecorded(credited=credited, balance=balance)

    async def redeem(self, req: CreditRedeem) -> CreditRedeemed:
        """Take the credit and write the payment's row in one transaction (or find the
        redemption an earlier call for the same challenge made): a gateway that dies, or
        loses the answer, between the two can neither lose the credit nor take it twice."""
        check_payer(req.payer)
        record = req.record
        if record is not None and (
            record.challenge_id != req.challenge_id
            or record.payer != req.payer
            or record.amount != req.amount
            or record.tx_hash is not None
        ):
            raise BadRequest("the record must be this challenge's credit payment")
        if record is None and not req.resume:
            raise BadRequest("a redemption needs its payment record")
        async with self._db.acquire() as conn, conn.transaction():
            earlier = await payments_db.by_challenge(conn, req.challenge_id)
            if earlier is not None:
                if earlier["tx_hash"] is not None or earlier["payer"] != req.payer:
                    raise Conflict("this challenge was already paid otherwise")
                left = await payments_db.balance(conn, req.payer)
                return CreditRedeemed(redeemed=True, balance=left, payment_id=earlier["id"])
            balance = None if record is None else await payments_db.redeem(conn, req.payer, req.amount)
            if record is None or balance is None:
                left = await payments_db.balance(conn, req.payer)
                return CreditRedeemed(redeemed=False, balance=left)
            payment_id = new_id("pay")
            with translate("this challenge, transaction or idempotency key was already used"):
                await payments_db.insert(conn, payment_id, record)
        return CreditRedeemed(redeemed=True, balance=balance, payment_id=payment_id)

    async def replay(self, key: str, fingerprint: str) -> StoredResponse:
        row = await payments_db.stored_response(self._db, key)
        if row is None and await payments_db.key_released(self._db, key):
            raise Gone("this idempotency key's request was never served (credited back): the key is free")
        if row is None or row["response_status"] is None:
            raise NotFound("no stored response for this idempotency key")
        if row["fingerprint"] != fingerprint:
            raise Conflict("this idempotency key was used for a different request")
        return StoredResponse(
            status=row["response_status"],
            headers=[(k, v) for k, v in row["response_headers"]],
            body=bytes(row["response_body"] or b""),
        )
