"""Placement against real Postgres: capacity, overcommit, staleness, and what is placed."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime

import asyncpg
import pytest

from cli.stack import Stack
from contracts.host import Capabilities
from core.db import hosts as hosts_db
from core.db import sandboxes as sandboxes_db
from core.db.migrate import migrate
from core.db.pool import create_pool
from core.db.sandboxes import SandboxRecord


@pytest.fixture
async def db(stack: Stack) -> AsyncIterator[asyncpg.Pool]:
    """A scratch database on the stack's Postgres, migrated from scratch."""
    name = f"sched_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(stack.database_url)
    await admin.execute(f"CREATE DATABASE {name}")
    url = stack.database_url.replace("/dnah?", f"/{name}?")
    pool = await create_pool(url)
    async with pool.acquire() as conn:
        await migrate(conn)
    await pool.execute("INSERT INTO orgs (id, name) VALUES ('org_t', 't')")
    try:
        yield pool
    finally:
        await pool.close()
        await admin.execute(f"DROP DATABASE {name}")
        await admin.close()


async def add_host(
    db: asyncpg.Pool, name: str, *, cpu: int, ram_mb: int, disk_gb: int, stale: bool = False
) -> str:
    host = await hosts_db.upsert(
        db,
        new_id=f"host_{name}",
        name=name,
        api_url="http://127.0.0.1:9",
        api_token="t",
        runtime="namespace",
        cpu=cpu,
        ram_mb=ram_mb,
        disk_gb=disk_gb,
        templates=["base"],
        capabilities=Capabilities(memory_snapshot=False, live_resize=True, fork=False),
    )
    if stale:
        await db.execute(
            "UPDATE hosts SET last_heartbeat_at = now() - interval '1 hour' WHERE id = $1", host.id
        )
    return host.id


async def place_and_insert(
    db: asyncpg.Pool, *, cpu: int = 1, ram_mb: int = 1024, disk_gb: int = 1
) -> str | None:
    async with db.acquire() as conn, conn.transaction():
        host = await hosts_db.place(
            conn,
            template="base",
            cpu=cpu,
            ram_mb=ram_mb,
            disk_gb=disk_gb,
            cpu_overcommit=1.0,
            ram_overcommit=1.0,
            fresh_within_s=30,
        )
        if host is None:
            return None
        now = datetime.now().astimezone()
        sid = str(uuid.uuid4())
        await sandboxes_db.insert(
            conn,
            SandboxRecord(
                id=sid,
                org_id="org_t",
                name=sid,
                host_id=host.id,
                template="base",
                cpu=cpu,
                ram_mb=ram_mb,
                disk_gb=disk_gb,
                env={},
                labels={},
                language="python",
                state="started",
                error_reason=None,
                ip=None,
                lifecycle="persistent",
                auto_stop_minutes=None,
                auto_archive_minutes=None,
                auto_delete_minutes=None,
                created_at=now,
                updated_at=now,
                last_activity_at=now,
            ),
        )
        return host.id


async def test_fills_hosts_by_free_memory_and_respects_capacity(db: asyncpg.Pool) -> None:
    big = await add_host(db, "big", cpu=4, ram_mb=4096, disk_gb=100)
    small = await add_host(db, "small", cpu=4, ram_mb=2048, disk_gb=100)
    placed = [await place_and_insert(db) for _ in range(6)]
    assert placed[0] == big  # most free memory first
    assert placed.count(big) == 4 and placed.count(small) == 2
    assert await place_and_insert(db) is None  # both full


async def test_skips_stale_and_draining_hosts_and_checks_cpu_and_disk(db: asyncpg.Pool) -> None:
    await add_host(db, "stale", cpu=8, ram_mb=8192, disk_gb=100, stale=True)
    draining = await add_host(db, "draining", cpu=8, ram_mb=8192, disk_gb=100)
    await db.execute("UPDATE hosts SET state = 'draining' WHERE id = $1", draining)
    assert await place_and_insert(db) is None
    tiny = await add_host(db, "tiny", cpu=2, ram_mb=8192, disk_gb=5)
    assert await place_and_insert(db, cpu=3) is None
    assert await place_and_insert(db, disk_gb=6) is None
    assert await place_and_insert(db, cpu=2, disk_gb=5) == tiny
    assert await place_and_insert(db, cpu=1, disk_gb=1) is None


async def test_stopped_sandboxes_free_cpu_and_memory_but_keep_disk(db: asyncpg.Pool) -> None:
    await add_host(db, "one", cpu=1, ram_mb=1024, disk_gb=2)
    assert await place_and_insert(db) is not None
    assert await place_and_insert(db) is None
    await db.execute("UPDATE sandboxes SET state = 'stopped'")
    assert await place_and_insert(db) is not None  # cpu/ram freed, 1 GB disk left
    await db.execute("UPDATE sandboxes SET state = 'stopped'")
    assert await place_and_insert(db) is None  # disk is still held by the stopped ones
    await db.execute("UPDATE sandboxes SET state = 'destroyed'")
    assert await place_and_insert(db) is not None


async def test_concurrent_placements_never_overcommit(db: asyncpg.Pool) -> None:
    await add_host(db, "h", cpu=10, ram_mb=5 * 1024, disk_gb=100)
    results = await asyncio.gather(*(place_and_insert(db) for _ in range(12)))
    assert sum(r is not None for r in results) == 5
    used = await db.fetchval("SELECT sum(ram_mb) FROM sandboxes WHERE state <> 'destroyed'")
    assert used == 5 * 1024
