"""Daytona's filtered, sorted listings of an org's sandboxes: numbered pages (``GET
/sandbox/paginated``: page N from an offset, and the total) and keyset pages (``GET /sandbox``,
what SDK 0.226.1's ``list`` iterates: the next page starts after the last row seen, so it
stays stable while sandboxes come and go). Every sort ends with the id, so pages never
overlap.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from core.db.sandboxes import COLUMNS, SandboxRecord, record

MEMORY_GIB = "GREATEST(1, ram_mb / 1024)"
"""A sandbox's memory as Daytona's DTO shows it (whole GiB, at least 1)."""

SORT_COLUMNS = {
    "id": "id",
    "name": "name",
    "state": "state",
    "snapshot": "template",
    "region": "created_at",  # every sandbox is in the one region: newest first within it
    "updatedAt": "updated_at",
    "createdAt": "created_at",
}
"""Daytona's sort fields for numbered pages and the columns they sort by."""

KEYSET_SORTS = {
    "name": "name",
    "cpu": "cpu",
    "memoryGib": MEMORY_GIB,
    "diskGib": "disk_gb",
    "lastActivityAt": "last_activity_at",
    "createdAt": "created_at",
}
"""SDK 0.226.1's sort fields (``SandboxListSortField``) for keyset pages."""


class SandboxQuery(msgspec.Struct, frozen=True, kw_only=True):
    """The filters, each optional: the id's or name's start (``prefix``) or any part of them,
    case-insensitive; labels the sandbox has (all
    of them), its language, states and templates (any of them), size ranges (memory in GiB
    as Daytona's DTO shows it, disk in GiB), last activity and creation between two instants,
    public or not, recoverable or not. Destroyed sandboxes only when ``states`` names them;
    an empty ``states`` matches nothing."""

    id: str | None = None
    name: str | None = None
    prefix: bool = False
    labels: dict[str, str] | None = None
    language: str | None = None
    states: list[str] | None = None
    templates: list[str] | None = None
    min_cpu: int | None = None
    max_cpu: int | None = None
    min_memory_gib: int | None = None
    max_memory_gib: int | None = None
    min_disk_gb: int | None = None
    max_disk_gb: int | None = None
    active_after: datetime | None = None
    active_before: datetime | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    public: bool | None = None
    recoverable: bool | None = None
    """In ``error`` (the only state ``recover`` takes), or not."""


def _where(org_id: str, q: SandboxQuery) -> tuple[str, list[Any]]:
    clauses = ["org_id = $1"]
    args: list[Any] = [org_id]
    if q.states is None:
        clauses.append("state <> 'destroyed'")  # destroyed ones only when asked for by state

    def add(sql: str, value: Any) -> None:
        args.append(value)
        clauses.append(sql.replace("?", f"${len(args)}"))

    match = "starts_with(lower({}), lower(?))" if q.prefix else "strpos(lower({}), lower(?)) > 0"
    if q.id:
        add(match.format("id"), q.id)
    if q.name:
        add(match.format("name"), q.name)
    if q.labels:
        add("labels @> ?::jsonb", q.labels)
    if q.language:
        add("language = ?", q.language)
    if q.states is not None:
        add("state = ANY(?::text[])", q.states)
    if q.templates:
        add("template = ANY(?::text[])", q.templates)
    if q.public is not None:
        add("public = ?", q.public)
    if q.recoverable is not None:
        add("(state = 'error') = ?", q.recoverable)
    for column, low, high in (
        ("cpu", q.min_cpu, q.max_cpu),
        (MEMORY_GIB, q.min_memory_gib, q.max_memory_gib),
        ("disk_gb", q.min_disk_gb, q.max_disk_gb),
        ("last_activity_at", q.active_after, q.active_before),
        ("created_at", q.created_after, q.created_before),
    ):
        if low is not None:
            add(f"{column} >= ?", low)
        if high is not None:
            add(f"{column} <= ?", high)
    return " AND ".join(clauses), args


async def page(
    db: asyncpg.Pool, org_id: str, q: SandboxQuery, *, sort: str, descending: bool, offset: int, limit: int
) -> tuple[list[SandboxRecord], int]:
    """One page of the org's sandboxes matching ``q`` and how many match in all."""
    where, args = _where(org_id, q)
    direction = "DESC" if descending else "ASC"
    order = f"{SORT_COLUMNS[sort]} {direction}, id {direction}"
    rows, total = await asyncio.gather(
        db.fetch(
            f"SELECT {COLUMNS} FROM sandboxes WHERE {where} ORDER BY {order}"
            f" OFFSET ${len(args) + 1} LIMIT ${len(args) + 2}",
            *args,
            offset,
            limit,
        ),
        db.fetchval(f"SELECT count(*) FROM sandboxes WHERE {where}", *args),
    )
    return [record(r) for r in rows], int(total)


async def after(
    db: asyncpg.Pool,
    org_id: str,
    q: SandboxQuery,
    *,
    sort: str,
    descending: bool,
    start: tuple[Any, str] | None,
    limit: int,
) -> list[SandboxRecord]:
    """Up to ``limit`` of the org's sandboxes matching ``q`` in ``sort`` order, beginning
    after ``start`` (the sort value and id of the last row of the previous page)."""
    where, args = _where(org_id, q)
    column = KEYSET_SORTS[sort]
    direction = "DESC" if descending else "ASC"
    if start is not None:
        args.extend(start)
        where += f" AND ({column}, id) {'<' if descending else '>'} (${len(args) - 1}, ${len(args)})"
    rows = await db.fetch(
        f"SELECT {COLUMNS} FROM sandboxes WHERE {where}"
        f" ORDER BY {column} {direction}, id {direction} LIMIT ${len(args) + 1}",
        *args,
        limit,
    )
    return [record(r) for r in rows]
