"""The ``egress`` column of ``sandboxes``: a sandbox's egress policy as JSON
(``contracts.host.EgressPolicy``), NULL for the operator's default."""

from __future__ import annotations

from typing import Any

import asyncpg


async def store(conn: asyncpg.Connection, sandbox_id: str, policy: dict[str, Any] | None) -> None:
    await conn.execute(
        "UPDATE sandboxes SET egress = $2, updated_at = now() WHERE id = $1", sandbox_id, policy
    )
