"""A small raw ASGI app behind the guard, for tests/guard: it reads the whole body and answers
``{"bytes": n}``; on ``/json`` it decodes the body with msgspec as the real handlers do (a
``DecodeError`` is its own 400, anything else would be a 500). ``/stream/...`` is a byte
stream route. Served by Granian with ``cli.serve``'s flags (see conftest)."""

from __future__ import annotations

import os
from typing import Any

import msgspec

from guard import ASGIApp, guard, load_guard_config


def create_app() -> ASGIApp:
    config = load_guard_config(os.environ, "gateway")
    return guard(_echo, config, _render, byte_streams=lambda _method, path: path.startswith("/stream"))


def _render(status: int, code: str, message: str) -> bytes:
    return msgspec.json.encode({"statusCode": status, "message": message, "code": code})


async def _echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while (await receive())["type"] != "websocket.disconnect":
            pass
        return
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    status, answer = 200, {"bytes": len(body)}
    if scope["path"] == "/json":
        try:
            msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            status, answer = 400, {"statusCode": 400, "message": str(exc), "code": "handler"}
    data = msgspec.json.encode(answer)
    await send(
        {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": data})
