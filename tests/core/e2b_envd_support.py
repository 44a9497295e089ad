"""Plain-HTTP helpers for the envd tests: requests in E2B's exact wire shapes (what its SDK
sends through ``E2B_SANDBOX_URL``: the sandbox in ``E2b-Sandbox-Id``/``-Port`` headers, Connect
calls in the JSON codec, envelopes for streams)."""

from __future__ import annotations

import json
import secrets
import struct
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx

from contracts.e2b import ENVD_PORT

STREAM = "application/connect+json"


def envd_client(base_url: str, sandbox_id: str, token: str | None = None) -> httpx.Client:
    headers = {"E2b-Sandbox-Id": sandbox_id, "E2b-Sandbox-Port": str(ENVD_PORT)}
    if token is not None:
        headers["X-Access-Token"] = token
    return httpx.Client(base_url=base_url, headers=headers, timeout=60)


async def give_token(db: asyncpg.Pool, sandbox_id: str) -> str:
    """Give a sandbox made through the native API the envd token an E2B create (or connect)
    would have: envd refuses a sandbox without one."""
    token = secrets.token_urlsafe(32)
    await db.execute("UPDATE sandboxes SET envd_token = $1 WHERE id = $2", token, sandbox_id)
    return token


def envelope(message: Any, flags: int = 0) -> bytes:
    payload = json.dumps(message).encode()
    return struct.pack(">BI", flags, len(payload)) + payload


def parse_envelopes(data: bytes) -> list[tuple[int, Any]]:
    """(flags, message) of each envelope; the body must end exactly at the last one."""
    out: list[tuple[int, Any]] = []
    while data:
        flags, length = struct.unpack_from(">BI", data)
        assert len(data) >= 5 + length, f"truncated envelope: {data!r:.200}"
        out.append((flags, json.loads(data[5 : 5 + length])))
        data = data[5 + length :]
    return out


def unary(client: httpx.Client, rpc: str, message: Any, **headers: str) -> httpx.Response:
    return client.post(
        f"/{rpc}",
        content=json.dumps(message).encode(),
        headers={"Content-Type": "application/json", "Connect-Protocol-Version": "1", **headers},
    )


def stream_request(client: httpx.Client, rpc: str, message: Any, **headers: str) -> httpx.Request:
    return client.build_request(
        "POST",
        f"/{rpc}",
        content=envelope(message),
        headers={"Content-Type": STREAM, "Connect-Protocol-Version": "1", **headers},
    )


def read_stream(resp: httpx.Response) -> Iterator[tuple[int, Any]]:
    """The envelopes of a streamed response as they arrive."""
    assert resp.status_code == 200, resp.read()
    assert resp.headers["content-type"] == STREAM
    buffer = b""
    for chunk in resp.iter_bytes():
        buffer += chunk
        while len(buffer) >= 5:
            flags, length = struct.unpack_from(">BI", buffer)
            if len(buffer) < 5 + length:
                break
            yield flags, json.loads(buffer[5 : 5 + length])
            buffer = buffer[5 + length :]
    assert buffer == b"", f"the stream ended inside an envelope: {buffer!r:.100}"


def call_stream(client: httpx.Client, rpc: str, message: Any, **headers: str) -> list[tuple[int, Any]]:
    with client.stream(
        "POST",
        f"/{rpc}",
        content=envelope(message),
        headers={"Content-Type": STREAM, "Connect-Protocol-Version": "1", **headers},
    ) as resp:
        return list(read_stream(resp))
