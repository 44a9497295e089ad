-- Pay-per-call: payers own orgs, every payment is in the ledger, failed paid calls become credit.

-- A payer (a wallet address, lowercase 0x…) gets an org of its own on its first payment.
ALTER TABLE orgs ADD COLUMN payer text UNIQUE;

CREATE TABLE payments (
    id                text PRIMARY KEY,
    challenge_id      text NOT NULL UNIQUE,     -- one payment per challenge, ever
    payer             text NOT NULL,
    method            text NOT NULL,
    path              text NOT NULL,
    amount            bigint NOT NULL CHECK (amount >= 0),
    currency          text NOT NULL,
    tx_hash           text UNIQUE,              -- NULL when paid from credit
    idempotency_key   text UNIQUE,
    fingerprint       text,
    upstream_status   integer,
    credited          bigint NOT NULL DEFAULT 0,
    response_status   integer,
    response_headers  jsonb,
    response_body     bytea,
    created_at        timestamptz NOT NULL DEFAULT now(),
    completed_at      timestamptz
);
CREATE INDEX payments_payer ON payments (payer, created_at DESC);

CREATE TABLE credits (
    payer       text PRIMARY KEY,
    balance     bigint NOT NULL CHECK (balance >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
