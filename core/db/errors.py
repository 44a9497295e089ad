"""The one place asyncpg's exceptions are translated into the core's own."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

from core.errors import Conflict


@contextmanager
def translate(conflict_message: str = "conflicts with an existing object") -> Iterator[None]:
    """Turn a unique-constraint violation into ``Conflict``; let everything else through."""
    try:
        yield
    except asyncpg.UniqueViolationError as exc:
        raise Conflict(conflict_message) from exc
