"""Small helpers the suites share (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import socket

import httpx


def worker_index() -> int:
    """0, 1, … for pytest-xdist workers (0 without xdist): used to keep names apart."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(worker.removeprefix("gw") or 0)


def mint_key(admin: httpx.Client, name: str = "test") -> str:
    """A fresh API key in a fresh org, minted with an admin client."""
    resp = admin.post("/v1/api-keys", json={"name": name})
    assert resp.status_code == 201, resp.text
    return resp.json()["key"]


def free_port() -> int:
    """A TCP port nothing listens on right now (the kernel picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
