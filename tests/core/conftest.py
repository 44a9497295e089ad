"""Fixtures for the core's stack tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from cli.stack import Stack
from core.db.pool import create_pool


@pytest.fixture
async def stack_db(stack: Stack) -> AsyncIterator[asyncpg.Pool]:
    """A small pool on the stack's own database, for tests that set a row up (backdate a
    timer, leave an operation half-done) or read what the core wrote."""
    pool = await create_pool(stack.database_url, min_size=1, max_size=4)
    yield pool
    await pool.close()
