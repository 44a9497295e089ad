"""gateway ↔ core: what the edge adds to a request it forwards.

In bearer mode the gateway forwards the client's request unchanged (the core authenticates
the API key itself); it adds a request id, which every hop logs and passes on, and the usual
forwarding headers so the core can build public URLs such as Daytona's ``toolboxProxyUrl``.
"""

import msgspec

REQUEST_ID_HEADER = "x-request-id"
FORWARDED_HOST_HEADER = "x-forwarded-host"
FORWARDED_PROTO_HEADER = "x-forwarded-proto"
FORWARDED_PREFIX_HEADER = "x-forwarded-prefix"

HOP_BY_HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
"""Headers a proxy must not copy from one hop to the next (RFC 9110 §7.6.1), plus ``host``
and ``content-length``, which the HTTP client sets for the new hop."""


# Payments: the gateway as the core's trusted edge -------------------------------------------
#
# In payment mode a caller has no API key: the gateway verifies the payment, then forwards
# the request with ``Authorization: Bearer <edge token>`` (a secret shared by the gateway and
# the core, ``DNAH_EDGE_TOKEN``) and ``x-dnah-payer: <0x address, lowercase>``. The core maps
# each payer to an org of its own (created on first payment), so a payer sees only its own
# sandboxes. The core ignores ``x-dnah-payer`` on any request not carrying the edge token.
#
# The gateway records every payment in the core's ledger (Postgres) through the routes below,
# all of which require the edge token:
#
#   POST /internal/payments                 PaymentRecord    → PaymentRecorded   (409: challenge or tx reused)
#   POST /internal/payments/{id}/outcome    PaymentOutcome   → OutcomeRecorded   (credits on failure)
#   POST /internal/credits/redeem           CreditRedeem     → CreditRedeemed    (records the payment too)
#   GET  /internal/idempotency?key=&fingerprint=             → StoredResponse     (404: none stored)
#   POST /internal/payments/settle          PaymentsSettle   → PaymentsSettled   (what the core's sweep does)
#
# A paid request is forwarded with ``x-dnah-payment: <payment id>`` too. The core (with the
# edge token only; the gateway drops the header from clients) serves it only while that
# payment has no outcome, marks the row as being served before the handler runs and writes
# the status it answered into the row before the answer leaves; for a request with an
# ``Idempotency-Key`` it also stores the response it sent (as the gateway's report would),
# before the last of it leaves. So a gateway that dies after
# recording a payment loses nothing: the core's sweep settles any payment without an outcome
# report after a bound, from what the core itself saw (``PaymentsSettle``).

PAYER_HEADER = "x-dnah-payer"
PAYMENT_ID_HEADER = "x-dnah-payment"

MAX_STORED_RESPONSE = 1024 * 1024
"""Responses up to this size are kept for ``Idempotency-Key`` replays."""
STORED_RESPONSE_DROPPED_HEADERS = frozenset(
    {"x-request-id", "content-length", "set-cookie", "payment-receipt"}
)
"""Headers a stored response never keeps (lowercase)."""


class _Wire(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class StoredResponse(_Wire, frozen=True):
    """A response kept for ``Idempotency-Key`` replays (bodies up to 1 MiB are kept)."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


class PaymentRecord(_Wire, frozen=True):
    """One settled payment, written before the request is forwarded."""

    challenge_id: str
    payer: str
    method: str
    path: str
    amount: int
    """Base units (6 decimals)."""
    currency: str
    tx_hash: str | None
    """None when the request was paid from the payer's credit instead of on chain."""
    idempotency_key: str | None = None
    fingerprint: str | None = None
    """sha256 of method, path, query and body: a key reused for another request is refused."""


class PaymentRecorded(_Wire, frozen=True):
    payment_id: str


class PaymentOutcome(_Wire, frozen=True):
    """What the core answered to the paid request. A status of 400 or more means the payer got
    nothing for their money: the amount is credited back (see ``OutcomeRecorded.credited``)."""

    upstream_status: int
    response: StoredResponse | None = None


class OutcomeRecorded(_Wire, frozen=True):
    credited: int
    balance: int


class CreditRedeem(_Wire, frozen=True):
    """Pay ``amount`` from ``payer``'s credit if it covers it (all or nothing), and record
    ``record`` (its ``tx_hash`` None) in the same transaction, so that no credit is ever
    taken without a ledger row that says what for. Idempotent per challenge: a challenge
    already paid from credit answers ``redeemed`` with that payment, taking nothing again.
    ``resume``: only look for such an earlier redemption (a gateway that died mid-payment
    left it unknown), never take credit now; ``record`` may then be None."""

    payer: str
    amount: int
    challenge_id: str
    record: PaymentRecord | None = None
    resume: bool = False


class CreditRedeemed(_Wire, frozen=True):
    redeemed: bool
    balance: int
    payment_id: str | None = None
    """The ledger row of the redemption, when ``redeemed``."""


class PaymentsSettle(_Wire, frozen=True):
    """Settle every payment recorded at least ``older_than_s`` ago that still has no outcome
    report (the gateway that took it died, or lost the report): one the core answered is
    completed with the status it answered (≥ 400: credited, as the report would have); one
    the core never began to serve is credited back in full and can no longer be served; one
    it began to serve and never answered (the core died mid-request) is credited once its
    start is an hour old (or ``older_than_s``, if longer). ``payer``: only that payer's payments."""

    older_than_s: float
    payer: str | None = None


class PaymentsSettled(_Wire, frozen=True):
    completed: int
    """Payments completed with the status the core answered."""
    credited_unserved: int
    """Payments the core never served (or never finished serving), credited back."""
