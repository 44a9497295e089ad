"""The payment ledger, payer credit and idempotent replays, for the gateway's payment mode.

Rules (also in docs/payments.md and /llms.txt):

- Every settled payment is recorded before its request is forwarded; a challenge id or a
  transaction hash can be recorded once, ever — the database's unique constraints are the
  last line against replays, whatever happened in front of them.
- When the core rejects or fails a paid request (status ≥ 400), the amount becomes credit for
  the payer. Credit pays for the payer's next paid request (the gateway redeems it instead of
  broadcasting the payer's transaction), all or nothing; taking it and recording the payment
  are one transaction.
- An ``Idempotency-Key`` names one request: a retry with the same key and the same request
  fingerprint gets the stored response without paying again; the same key with a different
  request is refused.
"""

from __future__ import annotations

import hmac

import asyncpg

from contracts.control import (
    CreditRedeem,
    CreditRedeemed,
    OutcomeRecorded,
    PaymentOutcome,
    PaymentRecord,
    PaymentRecorded,
    StoredResponse,
)
from core.db import payments as payments_db
from core.db.errors import translate
from core.errors import BadRequest, Conflict, NotFound, Unauthorized
from core.services.auth import check_payer, new_id


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

    async def record(self, rec: PaymentRecord) -> PaymentRecorded:
        check_payer(rec.payer)
        payment_id = new_id("pay")
        with translate("this challenge, transaction or idempotency key was already used"):
            await payments_db.insert(self._db, payment_id, rec)
        return PaymentRecorded(payment_id=payment_id)

    async def outcome(self, payment_id: str, outcome: PaymentOutcome) -> OutcomeRecorded:
        async with self._db.acquire() as conn, conn.transaction():
            row = await payments_db.complete(conn, payment_id, outcome.upstream_status, outcome.response)
            if row is None:
                raise Conflict(f"payment {payment_id!r} is unknown or its outcome is already recorded")
            credited = 0
            if outcome.upstream_status >= 400 and row["amount"] > 0:
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
        if row is None or row["response_status"] is None:
            raise NotFound("no stored response for this idempotency key")
        if row["fingerprint"] != fingerprint:
            raise Conflict("this idempotency key was used for a different request")
        return StoredResponse(
            status=row["response_status"],
            headers=[(k, v) for k, v in row["response_headers"]],
            body=bytes(row["response_body"] or b""),
        )
