"""Daytona's sandbox listings, one filter set for both (the handlers are in ``sandboxes.py`` and
``seed004.py``; this module knows no DTO):

- ``GET /sandbox``: what SDK 0.226.1's ``Daytona.list`` iterates — keyset pages (``limit``,
  ``cursor`` → ``{items, nextCursor}``) sorted by ``sort`` (``name``, ``cpu``, ``memoryGib``,
  ``diskGib``, ``lastActivityAt``, ``createdAt``) and ``order``, newest first by default;
- ``GET /sandbox/paginated``: seed 004's (and older Daytona clients') ``PaginatedSandboxes``,
  ``page`` from 1, ``limit``, ``total``, ``totalPages``, sorted by ``id``, ``name``, ``state``,
  ``snapshot``, ``region``, ``updatedAt`` or ``createdAt``.

Filters: ``id`` and ``name`` match, case-insensitive, the start (``GET /sandbox``, as SDK
0.226.1 says) or any part (``/paginated``, as Daytona's older query did); ``labels`` is a
JSON object the sandbox's labels must contain (the SDK's language label, which the handler
names, matches the sandbox's language); ``states`` (Daytona's words; ours and ``running``
too), ``snapshots`` (templates) and ``regions`` / ``regionIds`` repeat or take commas;
``minCpu``…``maxDiskGiB`` are ranges in CPUs and GiB; ``lastEventAfter/Before`` and
``createdAtAfter/Before`` bound last activity and creation; ``isPublic``, ``isRecoverable``
(in ``error``). Every sandbox is in our one region (``local``, the DTO's ``target``) and has
no GPU, so ``regions`` without it and ``minGpu`` over 0 match nothing. Accepted and without
effect: ``includeErroredDeleted``, ``includeWarm`` (warm-pool sandboxes belong to no org),
``sandboxClasses``, ``maxGpu``, ``autoDestroyAtAfter/Before`` (nothing here is destroyed at
a set time).
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated, Any

import asyncpg
import msgspec
from litestar.params import Parameter

from contracts.fields import INT32_MAX, LabelMap
from core.db import paginated
from core.db.paginated import SandboxQuery
from core.db.sandboxes import SandboxRecord
from core.errors import BadRequest
from core.states import ALL_STATES, STATE_ALIASES

REGION = "local"
"""Our one region (the DTO's ``target``)."""
MAX_PAGE_SIZE = 1000

_DAYTONA_STATES = {"restoring": ["restoring", "unarchiving"]}
"""Daytona's state words that stand for more than one of ours (see ``daytona._STATE``)."""
_DAYTONA_ONLY = frozenset(
    {
        "build_failed",
        "pending_build",
        "building_snapshot",
        "unknown",
        "pulling_snapshot",
        "resizing",
        "snapshotting",
        "forking",
    }
)
"""Daytona states none of our sandboxes is ever in: valid filters that match nothing."""
_label_filter = msgspec.json.Decoder(LabelMap)
_cursor = msgspec.json.Decoder(tuple[str, str, str | int, str])

_INSTANTS = frozenset({"lastActivityAt", "createdAt"})
_COUNTS = frozenset({"cpu", "memoryGib", "diskGib"})
"""Keyset sorts whose cursor value is an ISO instant, and those whose is an integer."""


def _split(values: list[str] | None) -> list[str] | None:
    """A repeated parameter whose values may also be comma-separated lists."""
    if values is None:
        return None
    return [v.strip() for value in values for v in value.split(",") if v.strip()] or None


def _states(values: list[str] | None) -> list[str] | None:
    words = _split(values)
    if words is None:
        return None
    ours: list[str] = []
    for word in words:
        word = STATE_ALIASES.get(word, word)
        if word in _DAYTONA_STATES:
            ours.extend(_DAYTONA_STATES[word])
        elif word in ALL_STATES:
            ours.append(word)
        elif word not in _DAYTONA_ONLY:
            raise BadRequest(f"unknown state {word!r}")
    return ours


class Filters(msgspec.Struct, frozen=True, kw_only=True):
    """The query parameters both listings share, as received."""

    id: str | None = None
    name: str | None = None
    labels: str | None = None
    states: list[str] | None = None
    snapshots: list[str] | None = None
    regions: list[str] | None = None
    min_cpu: int | None = None
    max_cpu: int | None = None
    min_memory: int | None = None
    max_memory: int | None = None
    min_disk: int | None = None
    max_disk: int | None = None
    min_gpu: int | None = None
    active_after: datetime | None = None
    active_before: datetime | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    public: bool | None = None
    recoverable: bool | None = None

    def query(self, language_label: str, *, prefix: bool) -> SandboxQuery:
        label_filter: dict[str, str] = {}
        if self.labels:
            try:
                label_filter = _label_filter.decode(self.labels)
            except msgspec.DecodeError as exc:
                raise BadRequest(f"labels must be a JSON object of strings: {exc}") from None
        language = label_filter.pop(language_label, None)  # not a stored label: the language
        states = _states(self.states)
        regions = _split(self.regions)
        if (regions and REGION not in regions) or (self.min_gpu or 0) > 0:
            states = []  # no sandbox is in another region or has a GPU
        return SandboxQuery(
            id=self.id,
            name=self.name,
            prefix=prefix,
            labels=label_filter or None,
            language=language,
            states=states,
            templates=_split(self.snapshots),
            min_cpu=self.min_cpu,
            max_cpu=self.max_cpu,
            min_memory_gib=self.min_memory,
            max_memory_gib=self.max_memory,
            min_disk_gb=self.min_disk,
            max_disk_gb=self.max_disk,
            active_after=self.active_after,
            active_before=self.active_before,
            created_after=self.created_after,
            created_before=self.created_before,
            public=self.public,
            recoverable=self.recoverable,
        )


def _order(order: str) -> bool:
    """Whether ``order`` is descending."""
    if order not in ("asc", "desc"):
        raise BadRequest("order must be asc or desc")
    return order == "desc"


def _sort_value(rec: SandboxRecord, sort: str) -> str | int:
    values: dict[str, str | int] = {
        "name": rec.name,
        "cpu": rec.cpu,
        "memoryGib": max(1, rec.ram_mb // 1024),
        "diskGib": rec.disk_gb,
        "lastActivityAt": rec.last_activity_at.isoformat(),
        "createdAt": rec.created_at.isoformat(),
    }
    return values[sort]


def encode_cursor(rec: SandboxRecord, sort: str, order: str) -> str:
    """Where the page after ``rec`` starts, for this sort and order only."""
    raw = msgspec.json.encode((sort, order, _sort_value(rec, sort), rec.id))
    return base64.urlsafe_b64encode(raw).decode()


def decode_cursor(cursor: str, sort: str, order: str) -> tuple[Any, str]:
    try:
        made_for, made_order, raw, sandbox_id = _cursor.decode(base64.urlsafe_b64decode(cursor.encode()))
        value: Any = datetime.fromisoformat(str(raw)) if sort in _INSTANTS else raw
    except (ValueError, msgspec.DecodeError):  # binascii.Error is a ValueError
        raise BadRequest("invalid cursor") from None
    if (made_for, made_order) != (sort, order):
        raise BadRequest(f"the cursor is of a list sorted by {made_for} {made_order}")
    if isinstance(raw, int) != (sort in _COUNTS) or "\x00" in f"{raw}{sandbox_id}":
        raise BadRequest("invalid cursor")  # never one we made (Postgres cannot take a NUL)
    return value, sandbox_id


async def provide_filters(
    id: str | None = None,
    name: str | None = None,
    labels: str | None = None,
    states: list[str] | None = None,
    snapshots: list[str] | None = None,
    regions: list[str] | None = None,
    region_ids: Annotated[list[str] | None, Parameter(query="regionIds")] = None,
    min_cpu: Annotated[int | None, Parameter(query="minCpu", ge=1, le=INT32_MAX)] = None,
    max_cpu: Annotated[int | None, Parameter(query="maxCpu", ge=1, le=INT32_MAX)] = None,
    min_memory: Annotated[int | None, Parameter(query="minMemoryGiB", ge=1, le=INT32_MAX)] = None,
    max_memory: Annotated[int | None, Parameter(query="maxMemoryGiB", ge=1, le=INT32_MAX)] = None,
    min_disk: Annotated[int | None, Parameter(query="minDiskGiB", ge=1, le=INT32_MAX)] = None,
    max_disk: Annotated[int | None, Parameter(query="maxDiskGiB", ge=1, le=INT32_MAX)] = None,
    min_gpu: Annotated[int | None, Parameter(query="minGpu", ge=0, le=INT32_MAX)] = None,
    max_gpu: Annotated[int | None, Parameter(query="maxGpu", ge=0, le=INT32_MAX)] = None,
    last_event_after: Annotated[datetime | None, Parameter(query="lastEventAfter")] = None,
    last_event_before: Annotated[datetime | None, Parameter(query="lastEventBefore")] = None,
    created_at_after: Annotated[datetime | None, Parameter(query="createdAtAfter")] = None,
    created_at_before: Annotated[datetime | None, Parameter(query="createdAtBefore")] = None,
    is_public: Annotated[bool | None, Parameter(query="isPublic")] = None,
    is_recoverable: Annotated[bool | None, Parameter(query="isRecoverable")] = None,
    include_errored_deleted: Annotated[bool | None, Parameter(query="includeErroredDeleted")] = None,
    include_warm: Annotated[bool | None, Parameter(query="includeWarm")] = None,
    sandbox_classes: Annotated[list[str] | None, Parameter(query="sandboxClasses")] = None,
    auto_destroy_at_after: Annotated[datetime | None, Parameter(query="autoDestroyAtAfter")] = None,
    auto_destroy_at_before: Annotated[datetime | None, Parameter(query="autoDestroyAtBefore")] = None,
) -> Filters:
    """Declared so that they are parsed and checked (and documented); the last six change
    nothing (see the module's docstring)."""
    del max_gpu, include_errored_deleted, include_warm, sandbox_classes
    del auto_destroy_at_after, auto_destroy_at_before
    return Filters(
        id=id,
        name=name,
        labels=labels,
        states=states,
        snapshots=snapshots,
        regions=(regions or []) + (region_ids or []) or None,
        min_cpu=min_cpu,
        max_cpu=max_cpu,
        min_memory=min_memory,
        max_memory=max_memory,
        min_disk=min_disk,
        max_disk=max_disk,
        min_gpu=min_gpu,
        active_after=last_event_after,
        active_before=last_event_before,
        created_after=created_at_after,
        created_before=created_at_before,
        public=is_public,
        recoverable=is_recoverable,
    )


async def keyset(
    db: asyncpg.Pool,
    org_id: str,
    filters: Filters,
    *,
    language_label: str,
    limit: int,
    cursor: str | None,
    sort: str,
    order: str,
) -> tuple[list[SandboxRecord], str | None]:
    """A keyset page (``GET /sandbox``) and the cursor of the next one (None after the last)."""
    if sort not in paginated.KEYSET_SORTS:
        raise BadRequest(f"sort must be one of {', '.join(paginated.KEYSET_SORTS)}")
    records = await paginated.after(
        db,
        org_id,
        filters.query(language_label, prefix=True),
        sort=sort,
        descending=_order(order),
        start=decode_cursor(cursor, sort, order) if cursor else None,
        limit=limit,
    )
    return records, encode_cursor(records[-1], sort, order) if len(records) == limit else None


async def numbered(
    db: asyncpg.Pool,
    org_id: str,
    filters: Filters,
    *,
    language_label: str,
    page: int,
    limit: int,
    sort: str,
    order: str,
) -> tuple[list[SandboxRecord], int]:
    """Page ``page`` (from 1) of ``GET /sandbox/paginated`` and how many match in all."""
    if sort not in paginated.SORT_COLUMNS:
        raise BadRequest(f"sort must be one of {', '.join(paginated.SORT_COLUMNS)}")
    return await paginated.page(
        db,
        org_id,
        filters.query(language_label, prefix=False),
        sort=sort,
        descending=_order(order),
        offset=(page - 1) * limit,
        limit=limit,
    )
