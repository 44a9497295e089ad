"""The live price table: loaded at start-up, reloaded when the file changes (its mtime, size
and inode are polled every second) and on SIGHUP.

A request reads ``LivePrices.table`` once and keeps that object to the end, so a reload never
changes the price of a request in flight. A file that fails to parse keeps the previous table
in service and logs why (``file:line: message``).

Granian answers a SIGHUP sent to its main process by respawning the workers, and a fresh
worker has no "previous table": so every worker also keeps a copy of the last table it loaded
in Redis, keyed by the Granian main process. A respawned worker that finds the file broken
starts with that copy; a cold start (a new main process) with a broken file fails, naming
the problem.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import socket
from pathlib import Path

import structlog
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import RedisError

from pricing import PriceTable, PricingError, parse_table

log = structlog.get_logger()

POLL_INTERVAL_S = 1.0
SNAPSHOT_TTL_S = 30 * 24 * 3600


class LivePrices:
    """Enter it (from the app's lifespan) to start watching the file; leave it to stop."""

    def __init__(self, path: Path, redis_url: str | None = None, *, poll_s: float = POLL_INTERVAL_S) -> None:
        self.path = path
        self._poll_s = poll_s
        self._redis_url = redis_url
        self._snapshot_key = _snapshot_key(path)
        self._stamp: tuple[int, int, int] | None = None
        self._task: asyncio.Task[None] | None = None
        self._redis: AsyncRedis | None = None
        self.table = self._load_at_start()

    # start-up -------------------------------------------------------------------------------

    def _load_at_start(self) -> PriceTable:
        """The file's table; if the file is broken, the last table this Granian's workers
        served (a respawn), else the parse error."""
        self._stamp = _stamp(self.path)
        try:
            text = self.path.read_bytes().decode("utf-8-sig")
            table = parse_table(text, source=str(self.path))
        except (OSError, UnicodeDecodeError, PricingError) as exc:
            error = exc if isinstance(exc, PricingError) else PricingError(str(exc), source=str(self.path))
            text_kept = self._read_snapshot()
            if text_kept is None:
                raise error from None
            table = parse_table(text_kept, source=f"{self.path} (last good copy)")
            log.error("prices_reload_failed", file=str(self.path), error=str(error), kept="last good copy")
            return table
        self._write_snapshot_sync(text)
        log.info("prices_loaded", file=str(self.path), routes=len(table.routes()))
        return table

    def _read_snapshot(self) -> str | None:
        if self._redis_url is None:
            return None
        try:
            with Redis.from_url(self._redis_url, socket_timeout=2) as redis:
                raw = redis.get(self._snapshot_key)
        except RedisError:
            return None
        return raw.decode() if isinstance(raw, bytes) else None

    def _write_snapshot_sync(self, text: str) -> None:
        if self._redis_url is None:
            return
        try:
            with Redis.from_url(self._redis_url, socket_timeout=2) as redis:
                redis.set(self._snapshot_key, text.encode(), ex=SNAPSHOT_TTL_S)
        except RedisError as exc:
            log.warning("prices_snapshot_failed", error=str(exc))

    # while serving ---------------------------------------------------------------------------

    async def __aenter__(self) -> LivePrices:
        if self._redis_url is not None:
            self._redis = AsyncRedis.from_url(self._redis_url)
        self._task = asyncio.get_running_loop().create_task(self._watch())
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            # Only the main thread of a process may set signal handlers; a SIGHUP sent to
            # this worker (rather than to Granian's main process) reloads in place.
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_sighup)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._redis is not None:
            await self._redis.aclose()

    def _on_sighup(self) -> None:
        asyncio.get_running_loop().create_task(self.reload("sighup"))

    async def _watch(self) -> None:
        refreshed = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(self._poll_s)
            stamp = _stamp(self.path)
            if stamp != self._stamp:
                await self.reload("file changed")
            elif asyncio.get_running_loop().time() - refreshed > 3600 and self._redis is not None:
                refreshed = asyncio.get_running_loop().time()
                with contextlib.suppress(RedisError):
                    await self._redis.expire(self._snapshot_key, SNAPSHOT_TTL_S)

    async def reload(self, reason: str) -> bool:
        """Load the file again; keep the current table (and log why) if it is broken."""
        self._stamp = _stamp(self.path)
        try:
            text = await asyncio.to_thread(self.path.read_bytes)
            table = parse_table(text.decode("utf-8-sig"), source=str(self.path))
        except (OSError, UnicodeDecodeError, PricingError) as exc:
            log.error(
                "prices_reload_failed",
                file=str(self.path),
                reason=reason,
                error=str(exc),
                kept="previous table",
            )
            return False
        self.table = table
        log.info("prices_reloaded", file=str(self.path), reason=reason, routes=len(table.routes()))
        if self._redis is not None:
            try:
                await self._redis.set(self._snapshot_key, text, ex=SNAPSHOT_TTL_S)
            except RedisError as exc:
                log.warning("prices_snapshot_failed", error=str(exc))
        return True


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def _snapshot_key(path: Path) -> str:
    """One copy per machine, Granian main process and file: workers of one gateway share it,
    a restarted gateway (new main process) never sees its predecessor's."""
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    return f"dnah:gateway:prices:{socket.gethostname()}:{os.getppid()}:{digest}"
