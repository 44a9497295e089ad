"""The one answer a request gets: the app's, or the guard's refusal, never both.

The guard may refuse a request after the app has started on it (a body that stalls or turns
out malformed midway). ``Reply`` wraps ``send``: the guard answers only if the app has not
started its response, and once the guard has answered, whatever the app sends is dropped.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import structlog

Message = MutableMapping[str, Any]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]
"""Any ASGI app (Litestar's own types are narrower than these mappings)."""

Render = Callable[[int, str, str], bytes]
"""``render(status, code, message)``: the process's own JSON error body."""

log = structlog.get_logger("guard")


class Reply:
    """``send`` for the app, and ``refuse`` for the guard, over one client connection."""

    __slots__ = ("_render", "_scope", "_send", "refused", "started")

    def __init__(self, scope: Scope, send: Send, render: Render) -> None:
        self._scope = scope
        self._send = send
        self._render = render
        self.started = False
        """A response (the app's or the guard's) has begun."""
        self.refused: int | None = None
        """The status the guard answered with, if it did."""

    async def send(self, message: Message) -> None:
        if self.refused is not None:
            return  # the client already has the guard's answer
        if message["type"] in ("http.response.start", "websocket.accept", "websocket.http.response.start"):
            self.started = True
        await self._send(message)

    async def refuse(
        self, status: int, code: str, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()
    ) -> None:
        """Answer with the process's error body (and close the connection), unless the app has
        already started answering: then the app's answer stands and only the log says why."""
        client = self._scope.get("client")
        # Each process writes one line per request under its ``request_id`` (the gateway's
        # says 499 for a client that left mid-body); this one says what the guard meant, so
        # it carries the id under another name.
        request_id = structlog.contextvars.get_contextvars().get("request_id")
        with structlog.contextvars.bound_contextvars(request_id=None):
            log.warning(
                "guard_refused",
                refusal=status,
                code=code,
                reason=message,
                for_request=request_id,
                path=self._scope.get("path"),
                client=client[0] if client else None,
                answered=not self.started,
            )
        if self.started:
            return
        self.started = True
        self.refused = status
        body = self._render(status, code, message)
        head = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            *headers,
        ]
        if self._scope["type"] == "websocket":
            if "websocket.http.response" not in self._scope.get("extensions", {}):
                await self._send({"type": "websocket.close", "code": 1013, "reason": ""})
                return
            await self._send({"type": "websocket.http.response.start", "status": status, "headers": head})
            await self._send({"type": "websocket.http.response.body", "body": body})
            return
        await self._send({"type": "http.response.start", "status": status, "headers": head})
        await self._send({"type": "http.response.body", "body": body, "more_body": False})
