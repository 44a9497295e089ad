"""Small helpers the suites share (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import IO, TypeVar

import httpx

_T = TypeVar("_T")

POLL_S = 0.05


def wait_for(condition: Callable[[], _T], *, what: str, timeout_s: float = 30.0) -> _T:
    """Call ``condition`` until it returns something truthy and return that; fail the test,
    naming ``what`` and the last value, when ``timeout_s`` passes first. Tests wait for what
    they need instead of sleeping and hoping it happened; the deadline is generous because a
    busy machine is slow, never because the test measures time."""
    deadline = time.monotonic() + timeout_s
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout_s:.0f} s for {what}; last saw {result!r}")
        time.sleep(POLL_S)
    return result


async def await_for(condition: Callable[[], Awaitable[_T]], *, what: str, timeout_s: float = 30.0) -> _T:
    """``wait_for`` for a coroutine condition, polled without blocking the event loop."""
    deadline = time.monotonic() + timeout_s
    while not (result := await condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout_s:.0f} s for {what}; last saw {result!r}")
        await asyncio.sleep(POLL_S)
    return result


def worker_index() -> int:
    """0, 1, … for pytest-xdist workers (0 without xdist): used to keep names apart."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(worker.removeprefix("gw") or 0)


def mint_key(admin: httpx.Client, name: str = "test") -> str:
    """A fresh API key in a fresh org, minted with an admin client."""
    resp = admin.post("/v1/api-keys", json={"name": name})
    assert resp.status_code == 201, resp.text
    return resp.json()["key"]


PORTS = range(20000, 32768)
"""Where test servers listen: below Linux's ephemeral range (32768-60999), so no outgoing
connection can take a port between the moment it is chosen and the server's bind. (A port
the kernel picked was once reused that way: a test's core failed to bind, and its requests
reached another session's core, which answered 401.)"""

_held_ports: list[IO[str]] = []
"""An flock per port handed out, held for this process's life: no other test process (an
xdist worker, a helper's session) is given the same port."""


def free_port() -> int:
    """A TCP port nothing listens on and no other test process on this machine was given."""
    for _ in range(1000):
        port = random.choice(PORTS)
        lock = open(Path("/run/lock") / f"dnah-port-{port}.lock", "w")  # noqa: SIM115 - held for the process
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port))
        except OSError:  # BlockingIOError: another process holds it; else something listens
            lock.close()
            continue
        _held_ports.append(lock)
        return port
    raise RuntimeError("no free test port in 1,000 tries")


@contextlib.contextmanager
def exclusive_index(kind: str, limit: int = 200) -> Iterator[int]:
    """A small number no other test session on this machine holds for ``kind`` (an flock per
    number in /run/lock), starting from this xdist worker's index. Kernel names (bridges,
    cgroups, subnets) are derived from it, so two sessions running at once never tear down
    each other's bridge."""
    start = worker_index()
    for offset in range(limit):
        index = (start + offset) % limit
        lock = open(Path("/run/lock") / f"dnah-{kind}-{index}.lock", "w")  # noqa: SIM115 - held while in use
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        with lock:
            yield index
        return
    raise RuntimeError(f"all {limit} {kind} indexes are held by other test sessions")
