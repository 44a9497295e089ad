"""The queries behind ``GET /metrics``: what the database knows about the cluster, read in one
transaction so the numbers agree with each other."""

from __future__ import annotations

import asyncpg
import msgspec

from core.db.sandboxes import POOL_ORG


class HostUsage(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    state: str
    cpu: int
    ram_mb: int
    disk_gb: int
    used_cpu: int
    used_ram_mb: int
    used_disk_gb: int
    heartbeat_age_s: float


class ClusterNumbers(msgspec.Struct, frozen=True, kw_only=True):
    sandboxes: dict[str, int]
    """Live sandboxes of real orgs, by state."""
    warm_pool: dict[str, int]
    """Started warm-pool sandboxes, by template."""
    hosts: list[HostUsage]
    snapshots: int
    snapshot_bytes: int
    webhook_deliveries: dict[str, int]
    paid_last_hour: dict[str, int]
    """Base units received per currency in the last hour (USDC: micro-dollars)."""


async def read(db: asyncpg.Pool, running_states: list[str], disk_states: list[str]) -> ClusterNumbers:
    async with db.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        sandboxes = await conn.fetch(
            "SELECT state, count(*) AS n FROM sandboxes"
            " WHERE state <> 'destroyed' AND org_id <> $1 GROUP BY state",
            POOL_ORG,
        )
        pool = await conn.fetch(
            "SELECT template, count(*) AS n FROM sandboxes"
            " WHERE org_id = $1 AND state = 'started' GROUP BY template",
            POOL_ORG,
        )
        hosts = await conn.fetch(
            """
            SELECT h.name, h.state, h.cpu, h.ram_mb, h.disk_gb,
                   COALESCE(sum(s.cpu) FILTER (WHERE s.state = ANY($1::text[])), 0) AS used_cpu,
                   COALESCE(sum(s.ram_mb) FILTER (WHERE s.state = ANY($1::text[])), 0) AS used_ram_mb,
                   COALESCE(sum(s.disk_gb) FILTER (WHERE s.state = ANY($2::text[])), 0) AS used_disk_gb,
                   extract(epoch FROM now() - h.last_heartbeat_at) AS heartbeat_age_s
            FROM hosts h LEFT JOIN sandboxes s ON s.host_id = h.id
            GROUP BY h.id ORDER BY h.name
            """,
            running_states,
            disk_states,
        )
        snapshots = await conn.fetchrow(
            "SELECT count(*) AS n, COALESCE(sum(size_bytes), 0) AS bytes FROM snapshots WHERE state = 'ready'"
        )
        deliveries = await conn.fetch("SELECT status, count(*) AS n FROM webhook_deliveries GROUP BY status")
        paid = await conn.fetch(
            "SELECT currency, COALESCE(sum(amount), 0) AS amount FROM payments"
            " WHERE created_at > now() - interval '1 hour' AND tx_hash IS NOT NULL GROUP BY currency"
        )
    return ClusterNumbers(
        sandboxes={r["state"]: r["n"] for r in sandboxes},
        warm_pool={r["template"]: r["n"] for r in pool},
        hosts=[HostUsage(**{**dict(r), "heartbeat_age_s": float(r["heartbeat_age_s"])}) for r in hosts],
        snapshots=snapshots["n"],
        snapshot_bytes=snapshots["bytes"],
        webhook_deliveries={r["status"]: r["n"] for r in deliveries},
        paid_last_hour={r["currency"]: r["amount"] for r in paid},
    )
