"""Pacing and bounding a request body as the app reads it.

Granian times a request's head, never its body: a client that announces ``Content-Length:
10 GB`` and sends a kilobyte would hold its connection (and the app's task) forever.
``PacedBody`` wraps ``receive`` and, on the app's behalf, refuses a body that

- arrives too slowly: each ``body_timeout_s`` the app spends waiting must bring
  ``body_timeout_s * body_min_rate`` bytes (at least one) — a minimum rate, not a deadline,
  so an honest upload streams at any speed above it for as long as it takes. Only time spent
  waiting inside ``receive`` counts: an app that stops reading (the next hop is slow) is not
  the client's fault (408);
- grows past ``max_body_bytes`` (413);
- ends before its end: Granian reports a malformed chunked body (a bad size line, a missing
  CRLF, a chunk longer than declared) or a truncated one as ``http.disconnect`` in the middle
  of the body (400; if the client really left, nobody reads it).

A refusal answers the client through ``Reply`` (if the app has not answered yet) and hands
the app ``http.disconnect``, which every app already treats as "stop".
"""

from __future__ import annotations

import asyncio
import time

from guard.config import GuardConfig
from guard.reply import Message, Receive, Reply

DISCONNECT: Message = {"type": "http.disconnect"}


def declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The request's ``Content-Length`` (Granian has already refused a malformed one)."""
    for name, value in headers:
        if name.lower() == b"content-length":
            return int(value) if value.strip().isdigit() else None
    return None


class PacedBody:
    """``receive`` for the app: the body under the guard's limits, then the client's
    eventual disconnect."""

    __slots__ = ("_config", "_ended", "_receive", "_reply", "_total", "_waited", "_window_bytes")

    def __init__(self, receive: Receive, reply: Reply, config: GuardConfig) -> None:
        self._receive = receive
        self._reply = reply
        self._config = config
        self._ended = False
        self._total = 0
        self._waited = 0.0
        """Seconds spent waiting for the client in the current pacing window."""
        self._window_bytes = 0

    @property
    def _window_quota(self) -> float:
        return max(1.0, self._config.body_timeout_s * self._config.body_min_rate)

    async def __call__(self) -> Message:
        if self._reply.refused is not None:
            return DISCONNECT
        if self._ended:
            return await self._receive()  # the body is over: this waits for a disconnect
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._config.body_timeout_s - self._waited):
                message = await self._receive()
        except TimeoutError:
            rate = f"{self._config.body_min_rate} bytes/s" if self._config.body_min_rate else "any data"
            await self._reply.refuse(
                408, "request_timeout", f"the request body arrived too slowly (the minimum is {rate})"
            )
            return DISCONNECT
        if message["type"] == "http.disconnect":
            self._ended = True
            await self._reply.refuse(400, "bad_request", "malformed or incomplete request body")
            return message
        size = len(message.get("body", b""))
        self._total += size
        if self._total > self._config.max_body_bytes:
            await too_large(self._reply, self._config.max_body_bytes)
            return DISCONNECT
        self._pace(time.monotonic() - started, size)
        if not message.get("more_body", False):
            self._ended = True
        return message

    def _pace(self, waited: float, size: int) -> None:
        self._waited += waited
        self._window_bytes += size
        if self._window_bytes >= self._window_quota:
            self._waited, self._window_bytes = 0.0, 0


async def too_large(reply: Reply, limit: int) -> None:
    await reply.refuse(413, "payload_too_large", f"the request body is larger than {_size(limit)}")


def _size(limit: int) -> str:
    mib = 1024 * 1024
    return f"{limit // mib} MiB" if limit % mib == 0 else f"{limit} bytes"
