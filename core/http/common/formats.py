"""Time stamps as both shapes spell them."""

from __future__ import annotations

from datetime import UTC, datetime


def iso(ts: datetime) -> str:
    """ISO 8601 in the core's time zone, ``Z`` for UTC."""
    return ts.astimezone().isoformat().replace("+00:00", "Z")


def mtime(ns: int) -> datetime:
    """A file's modification time (nanoseconds since the epoch, as the agent reports it) in
    UTC, to the microsecond."""
    return datetime.fromtimestamp(ns // 1_000_000_000, UTC).replace(microsecond=(ns // 1000) % 1_000_000)
