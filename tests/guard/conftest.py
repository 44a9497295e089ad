"""The guard in front of ``tests/guard/echo_app.py``, under Granian with exactly the flags
``dnah serve`` uses (``cli.serve.granian_argv``), with short limits so the slow cases are quick."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from cli.serve import granian_argv
from tests.gateway.servers import REPO
from tests.support import free_port

LIMITS = {
    "DNAH_HTTP_HEADER_TIMEOUT_S": "1.5",
    "DNAH_HTTP_HEADER_BUFFER_KB": "16",
    "DNAH_HTTP_BODY_TIMEOUT_S": "1.5",
    "DNAH_HTTP_BODY_MIN_RATE": "1000",
    "DNAH_HTTP_MAX_BODY_MB": "8",
    "DNAH_HTTP_JSON_MAX_MB": "1",
    "DNAH_HTTP_MAX_PER_CLIENT": "3",
}


@dataclass
class Edge:
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@pytest.fixture(scope="session")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DNAH_")} | LIMITS
    port = free_port()
    argv = [
        *granian_argv("gateway", host="127.0.0.1", port=port, env=env)[:-1],
        "tests.guard.echo_app:create_app",
    ]
    log = tmp_path_factory.mktemp("guard") / "granian.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=out, start_new_session=True)
    edge = Edge("127.0.0.1", port)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(edge.url + "/", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        yield edge
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(10)
