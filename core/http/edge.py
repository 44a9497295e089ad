"""Routes only the gateway calls (edge token): the payment ledger, credit and idempotent
replays. See ``contracts.control`` for the contract and ``core.services.payments`` for the rules.
"""

from __future__ import annotations

from litestar import Controller, Request, get, post
from litestar.di import Provide

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
from core.http.internal import bearer_token
from core.services.payments import PaymentService


async def provide_payments(request: Request) -> PaymentService:
    """The payment service, after checking the caller holds the edge token."""
    payments: PaymentService = request.app.state.payments
    payments.check_edge(bearer_token(request))
    return payments


class EdgePayments(Controller):
    path = "/internal"
    dependencies = {"payments": Provide(provide_payments)}

    @post("/payments", status_code=201)
    async def record(self, data: PaymentRecord, payments: PaymentService) -> PaymentRecorded:
        return await payments.record(data)

    @post("/payments/{payment_id:str}/outcome", status_code=200)
    async def outcome(
        self, payment_id: str, data: PaymentOutcome, payments: PaymentService
    ) -> OutcomeRecorded:
        return await payments.outcome(payment_id, data)

    @post("/payments/settle", status_code=200)
    async def settle(self, data: PaymentsSettle, payments: PaymentService) -> PaymentsSettled:
        return await payments.settle(data)

    @post("/credits/redeem", status_code=200)
    async def redeem(self, data: CreditRedeem, payments: PaymentService) -> CreditRedeemed:
        return await payments.redeem(data)

    @get("/idempotency")
    async def replay(self, key: str, fingerprint: str, payments: PaymentService) -> StoredResponse:
        return await payments.replay(key, fingerprint)
