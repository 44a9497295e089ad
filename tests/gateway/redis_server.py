"""A private Redis for gateway tests that need one but not the whole stack (rate limits, a
payment-mode gateway in front of ``tests/gateway/upstream.py``): ``redis-server`` on a Unix
socket in a temporary directory, started the way ``make up`` starts its own (``cli.datastores``).

Import the fixture into the test module that uses it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cli.datastores import Redis


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = Redis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server.url
    server.stop()
