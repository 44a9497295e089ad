"""Small helpers the suites share (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

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


def free_port() -> int:
    """A TCP port nothing listens on right now (the kernel picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
