"""Real servers for the gateway suite: the gateway under Granian, exactly as ``dnah up`` runs
it, in front of ``tests/gateway/upstream.py`` (also under Granian) standing in for the core.

Each pytest-xdist worker starts its own pair on free ports. Tests that need a gateway
configured differently (short timeout, dead core, one to measure memory on) start their own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.gateway.servers import Server, StartGateway, gateway_env, start


@pytest.fixture(scope="session")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("upstream") / "upstream.log"
    server = start("tests.gateway.upstream:create_app", dict(os.environ), log)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gateway_server(upstream: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The shared gateway in front of ``upstream``. (Not ``gateway``: that name is the whole
    stack's, in tests/conftest.py.)"""
    log = tmp_path_factory.mktemp("gateway") / "gateway.log"
    server = start("gateway.app:create_app", gateway_env(upstream.url), log)
    yield server
    server.stop()


@pytest.fixture
def client(gateway_server: Server) -> Iterator[httpx.Client]:
    """A keep-alive client to the shared gateway."""
    with httpx.Client(base_url=gateway_server.url, timeout=30) as c:
        yield c


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[StartGateway]:
    """Start an extra gateway with its own settings (see ``StartGateway``)."""
    servers: list[Server] = []

    def _start(core_url: str, *, websockets: bool = False, **env: str) -> Server:
        log = tmp_path / f"gateway{len(servers)}.log"
        server = start("gateway.app:create_app", gateway_env(core_url, **env), log, websockets=websockets)
        servers.append(server)
        return server

    yield _start
    for server in servers:
        server.stop()
