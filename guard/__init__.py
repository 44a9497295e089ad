"""The ASGI guard every server process mounts outermost.

``guard(app, config, render, byte_streams=...)`` wraps a process's ASGI app so that what a
client sends is bounded before any handler runs, in one place per process:

- ``clients``: requests and WebSockets in flight per client address (429 over the cap);
- ``body``: the body's pace (408), size (413) and integrity (400 for a malformed or cut-off
  chunked body);
- ``json_body``: JSON bodies whole, valid UTF-8, not nested too deep (400), not too large
  (413).

Granian enforces the rest (head size and time, idle keep-alive; see ``cli/serve.py``). Every
refusal is the process's own error body (``render``) and closes the connection. Imported by
gateway, core and hosts; imports none of them (tests/test_layout.py).
"""

from __future__ import annotations

from collections.abc import Callable

from guard.body import PacedBody, declared_length, too_large
from guard.clients import RETRY_AFTER_S, ClientLimiter
from guard.config import ConfigError, GuardConfig, load_guard_config
from guard.json_body import checked_body, is_json_type
from guard.reply import ASGIApp, Receive, Render, Reply, Scope, Send

__all__ = ["ASGIApp", "ConfigError", "GuardConfig", "Render", "every_route", "guard", "load_guard_config"]

ByteStreams = Callable[[str, str], bool]
"""``byte_streams(method, path)``: the route takes a byte stream (an upload) rather than JSON.
Its body is passed on chunk by chunk, checked as JSON only when declared JSON; the body of any
other route is checked as JSON whatever its content type, since Litestar decodes a handler's
``data`` as JSON without looking at the type."""


def every_route(method: str, path: str) -> bool:
    """For a process that does not decode bodies itself (the gateway): all are streams."""
    return True


def guard(app: ASGIApp, config: GuardConfig, render: Render, *, byte_streams: ByteStreams) -> ASGIApp:
    """``app`` behind the guard's limits."""
    limiter = ClientLimiter(config.max_per_client)

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await app(scope, receive, send)  # lifespan
            return
        reply = Reply(scope, send, render)
        client = scope.get("client")
        with limiter.admit(client[0] if client else "") as admitted:
            if not admitted:
                retry = ((b"retry-after", str(RETRY_AFTER_S).encode()),)
                await reply.refuse(
                    429, "too_many_requests", "too many requests in flight from this address", retry
                )
            elif scope["type"] == "websocket":
                await app(scope, receive, reply.send)
            else:
                await _http(app, scope, receive, reply, config, byte_streams)

    return guarded


async def _http(
    app: ASGIApp, scope: Scope, receive: Receive, reply: Reply, config: GuardConfig, byte_streams: ByteStreams
) -> None:
    headers = scope["headers"]
    length = declared_length(headers)
    if length is not None and length > config.max_body_bytes:
        await too_large(reply, config.max_body_bytes)
        return
    paced = PacedBody(receive, reply, config)
    body: Receive = paced
    if length != 0 and _checks_json(scope, byte_streams):
        checked = await checked_body(paced, length, reply, config)
        if checked is None:
            return
        body = checked
    await app(scope, body, reply.send)


def _checks_json(scope: Scope, byte_streams: ByteStreams) -> bool:
    content_type = next((value for name, value in scope["headers"] if name.lower() == b"content-type"), b"")
    return is_json_type(content_type) or not byte_streams(scope["method"], scope["path"])
