"""Queries on ``payments`` (the ledger) and ``credits``."""

from __future__ import annotations

import asyncpg

from contracts.control import PaymentRecord, StoredResponse


async def insert(db: asyncpg.Pool | asyncpg.Connection, payment_id: str, rec: PaymentRecord) -> None:
    """Raises ``asyncpg.UniqueViolationError`` when the challenge, tx or key was used before."""
    await db.execute(
        "INSERT INTO payments (id, challenge_id, payer, method, path, amount, currency, tx_hash,"
        " idempotency_key, fingerprint) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        payment_id,
        rec.challenge_id,
        rec.payer,
        rec.method,
        rec.path,
        rec.amount,
        rec.currency,
        rec.tx_hash,
        rec.idempotency_key,
        rec.fingerprint,
    )


async def complete(
    conn: asyncpg.Connection,
    payment_id: str,
    status: int | None,
    response: StoredResponse | None,
    settled_by: str = "gateway",
) -> asyncpg.Record | None:
    """Record the upstream outcome once; returns the payment row, or None if it was already
    completed (or does not exist): a retried outcome report, or the core's sweep racing the
    gateway's report, must not credit twice."""
    return await conn.fetchrow(
        "UPDATE payments SET upstream_status = $2, completed_at = now(),"
        # no response in the report (or the sweep's): keep the one the core stored, if any
        " response_status = COALESCE($3, response_status),"
        " response_headers = CASE WHEN $3::integer IS NULL THEN response_headers ELSE $4 END,"
        " response_body = CASE WHEN $3::integer IS NULL THEN response_body ELSE $5 END, settled_by = $6"
        " WHERE id = $1 AND completed_at IS NULL RETURNING payer, amount",
        payment_id,
        status,
        response.status if response else None,
        [list(h) for h in response.headers] if response else None,
        response.body if response else None,
        settled_by,
    )


async def start_serving(
    db: asyncpg.Pool | asyncpg.Connection, payment_id: str, payer: str | None
) -> bool | None:
    """Mark a paid request as being served by the core; None when its payment is unknown, is
    another payer's, has an outcome already (e.g. credited back as never served), or was
    already served once, else whether it has an idempotency key. The row lock makes this and
    the sweep's "never served" exclusive."""
    value = await db.fetchval(
        "UPDATE payments SET serving_since = now() WHERE id = $1 AND payer = $2"
        " AND completed_at IS NULL AND serving_since IS NULL RETURNING idempotency_key IS NOT NULL",
        payment_id,
        payer,
    )
    return None if value is None else bool(value)


async def store_response(
    db: asyncpg.Pool | asyncpg.Connection, payment_id: str, response: StoredResponse
) -> None:
    """The response the core sent, kept for replays unless one is stored already."""
    await db.execute(
        "UPDATE payments SET response_status = $2, response_headers = $3, response_body = $4"
        " WHERE id = $1 AND response_status IS NULL",
        payment_id,
        response.status,
        [list(h) for h in response.headers],
        response.body,
    )


async def served(db: asyncpg.Pool | asyncpg.Connection, payment_id: str, status: int) -> None:
    await db.execute(
        "UPDATE payments SET served_status = $2 WHERE id = $1 AND served_status IS NULL", payment_id, status
    )


async def unsettled(
    conn: asyncpg.Connection, older_than_s: float, serving_s: float, payer: str | None, limit: int = 500
) -> list[asyncpg.Record]:
    """Payments without an outcome recorded at least ``older_than_s`` ago, locked (others
    skipped: a concurrent sweep or report has them); ``serving_stale``: the core began to
    serve it at least ``serving_s`` ago."""
    return list(
        await conn.fetch(
            "SELECT id, serving_since, served_status,"
            " serving_since < now() - make_interval(secs => $4) AS serving_stale FROM payments"
            " WHERE completed_at IS NULL AND created_at < now() - make_interval(secs => $1)"
            " AND ($2::text IS NULL OR payer = $2) ORDER BY created_at LIMIT $3"
            " FOR UPDATE SKIP LOCKED",
            older_than_s,
            payer,
            limit,
            serving_s,
        )
    )


async def add_credit(conn: asyncpg.Connection, payment_id: str, payer: str, amount: int) -> int:
    await conn.execute("UPDATE payments SET credited = $2 WHERE id = $1", payment_id, amount)
    return int(
        await conn.fetchval(
            "INSERT INTO credits (payer, balance) VALUES ($1, $2) ON CONFLICT (payer)"
            " DO UPDATE SET balance = credits.balance + EXCLUDED.balance, updated_at = now()"
            " RETURNING balance",
            payer,
            amount,
        )
    )


async def balance(db: asyncpg.Pool | asyncpg.Connection, payer: str) -> int:
    return int(await db.fetchval("SELECT COALESCE((SELECT balance FROM credits WHERE payer = $1), 0)", payer))


async def redeem(db: asyncpg.Pool | asyncpg.Connection, payer: str, amount: int) -> int | None:
    """Take ``amount`` from the payer's credit if it covers it; the new balance, or None."""
    value = await db.fetchval(
        "UPDATE credits SET balance = balance - $2, updated_at = now()"
        " WHERE payer = $1 AND balance >= $2 RETURNING balance",
        payer,
        amount,
    )
    return None if value is None else int(value)


async def by_challenge(db: asyncpg.Pool | asyncpg.Connection, challenge_id: str) -> asyncpg.Record | None:
    return await db.fetchrow("SELECT id, payer, tx_hash FROM payments WHERE challenge_id = $1", challenge_id)


async def release_key(conn: asyncpg.Connection, payment_id: str) -> None:
    await conn.execute(
        "UPDATE payments SET released_key = idempotency_key, idempotency_key = NULL"
        " WHERE id = $1 AND idempotency_key IS NOT NULL",
        payment_id,
    )


async def key_released(db: asyncpg.Pool, key: str) -> bool:
    return bool(await db.fetchval("SELECT EXISTS (SELECT 1 FROM payments WHERE released_key = $1)", key))


async def stored_response(db: asyncpg.Pool, key: str) -> asyncpg.Record | None:
    return await db.fetchrow(
        "SELECT fingerprint, response_status, response_headers, response_body FROM payments"
        " WHERE idempotency_key = $1",
        key,
    )


async def org_for_payer(db: asyncpg.Pool, new_org_id: str, payer: str) -> str:
    """The payer's org, created on first use (concurrent first payments agree on one org)."""
    await db.execute(
        "INSERT INTO orgs (id, name, payer) VALUES ($1, $2, $2) ON CONFLICT (payer) DO NOTHING",
        new_org_id,
        payer,
    )
    return str(await db.fetchval("SELECT id FROM orgs WHERE payer = $1", payer))
