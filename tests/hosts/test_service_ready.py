"""hosts/service_ready.py: the ports a template's services declare, and the wait for them."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from pathlib import Path

import pytest

from hosts.runtime.base import PortEndpoint
from hosts.service_ready import ready_ports, wait_ready
from hosts.templates import TemplateStore

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="building templates needs root")

SERVICES = {
    "services": [
        {"name": "a", "argv": ["x"], "ready_port": 49999},
        {"name": "b", "argv": ["y"]},
        {"name": "c", "argv": ["z"], "ready_port": "80"},
    ]
}


def _store(tmp_path: Path, services: object | None) -> TemplateStore:
    tmp_path.mkdir(exist_ok=True)
    script = tmp_path / "build.sh"
    lines = ["#!/bin/sh", "set -eu", 'mkdir -p "$1/etc/dnah"']
    if services is not None:
        lines.append(f"cat > \"$1/etc/dnah/services.json\" <<'JSON'\n{json.dumps(services)}\nJSON")
    script.write_text("\n".join(lines) + "\n")
    store = TemplateStore(tmp_path / "cache", script)
    store.ensure("tiny")
    return store


def test_the_declared_ready_ports_of_a_built_template(tmp_path: Path) -> None:
    assert ready_ports(_store(tmp_path, SERVICES), "tiny") == (49999,)  # a string is no port
    assert ready_ports(_store(tmp_path / "none", None), "tiny") == ()
    assert ready_ports(_store(tmp_path / "bad", "not an object"), "tiny") == ()
    assert ready_ports(_store(tmp_path / "unbuilt", SERVICES), "other") == ()


async def test_the_wait_ends_when_the_port_listens() -> None:
    """The listener is bound, but accepts only once listen() is called: until then a connect
    is refused, as a service that has not started yet refuses it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    endpoint = PortEndpoint(netns=None, address="127.0.0.1")
    try:
        waiting = asyncio.create_task(wait_ready("sb", endpoint, (port,)))
        await asyncio.sleep(0.2)
        assert not waiting.done()  # refused so far: still waiting
        sock.listen()
        assert await asyncio.wait_for(waiting, timeout=30) is True
    finally:
        sock.close()
