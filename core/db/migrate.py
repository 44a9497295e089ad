"""Applies ``migrations/NNNN_*.sql`` in order, each once, each in its own transaction.

Applied versions are recorded in ``schema_migrations``. A session-level advisory lock makes
concurrent starts (several core replicas, or tests) apply each migration exactly once.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
import structlog

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_LOCK_KEY = 0x646E6168  # "dnah"

log = structlog.get_logger()


def _migrations() -> list[tuple[int, Path]]:
    found = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        version = int(path.name.split("_", 1)[0])
        found.append((version, path))
    return found


async def migrate(conn: asyncpg.Connection) -> list[int]:
    """Bring the schema up to date; return the versions applied now."""
    applied_now: list[int] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, path in _migrations():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            log.info("migration_applied", version=version, file=path.name)
            applied_now.append(version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied_now
