"""One real devnet per pytest worker; tests keep out of each other's way by using fresh
accounts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.devnet.support import Devnet, start_devnet


@pytest.fixture(scope="session")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    node = start_devnet(tmp_path_factory.mktemp("devnet") / "devnet.log")
    try:
        yield node
    finally:
        node.stop()
