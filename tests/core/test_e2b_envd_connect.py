"""The Connect codec of the envd adapter (``core/http/e2b/envd/connect.py``) on its own, over
plain ASGI callables: envelopes split anyhow across body chunks, malformed ones, deadlines,
keepalives, the end-of-stream envelope and unary errors with the protocol's statuses."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from core.errors import Conflict, NotFound
from core.http.e2b.envd import connect


def body(*chunks: bytes, disconnect: asyncio.Event | None = None) -> Any:
    """An ASGI ``receive`` giving ``chunks``, then (after ``disconnect`` is set) the client's leaving."""
    queue = list(chunks)

    async def receive() -> dict[str, Any]:
        if queue:
            chunk = queue.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(queue)}
        if disconnect is not None:
            await disconnect.wait()
        else:
            await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    return receive


class Sent:
    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.body = b""
        self.ended = False

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = dict(message["headers"])
        else:
            self.body += message.get("body", b"")
            self.ended = not message.get("more_body", False)

    def envelopes(self) -> list[tuple[int, Any]]:
        out, data = [], self.body
        while data:
            flags, length = struct.unpack_from(">BI", data)
            out.append((flags, json.loads(data[5 : 5 + length])))
            data = data[5 + length :]
        return out


class Msg(msgspec.Struct):
    n: int


async def collect(chunks: list[bytes]) -> list[bytes]:
    return [payload async for payload in connect.envelopes(body(*chunks))]


async def test_envelopes_split_across_chunks_in_any_way() -> None:
    stream = b"".join(connect.envelope(json.dumps({"n": n}).encode()) for n in range(3))
    for cut in range(1, len(stream)):
        payloads = await collect([stream[:cut], stream[cut:]])
        assert [json.loads(p) for p in payloads] == [{"n": 0}, {"n": 1}, {"n": 2}]
    bytewise = await collect([stream[i : i + 1] for i in range(len(stream))])
    assert len(bytewise) == 3


async def test_malformed_envelopes_are_invalid_argument() -> None:
    whole = connect.envelope(b'{"n": 1}')
    with pytest.raises(connect.RpcError) as cut:
        await collect([whole[:-2]])
    assert cut.value.code == "invalid_argument" and "envelope" in cut.value.message
    with pytest.raises(connect.RpcError) as compressed:
        await collect([b"\x01" + whole[1:]])
    assert compressed.value.code == "invalid_argument"
    with pytest.raises(connect.RpcError) as huge:
        await collect([struct.pack(">BI", 0, connect.MAX_MESSAGE + 1)])
    assert huge.value.code == "resource_exhausted"
    with pytest.raises(connect.RpcError):
        connect.single_envelope(b"\x00\x00")


async def test_unary_errors_carry_the_protocols_status() -> None:
    cases = [
        (NotFound("gone"), 404, "not_found"),
        (Conflict("exists"), 409, "already_exists"),
        (connect.RpcError("invalid_argument", "bad"), 400, "invalid_argument"),
    ]
    for error, status, code in cases:

        async def fail(_: bytes, error: Exception = error) -> Msg:
            raise error

        sent = Sent()
        await connect.serve_unary(body(b"{}"), sent, {}, fail)
        assert (sent.status, json.loads(sent.body)["code"]) == (status, code)
        assert sent.headers[b"content-type"] == b"application/json"


async def test_unary_deadline() -> None:
    async def slow(_: bytes) -> Msg:
        await asyncio.sleep(3600)
        return Msg(1)

    sent = Sent()
    await connect.serve_unary(body(b"{}"), sent, {b"connect-timeout-ms": b"10"}, slow)
    assert sent.status == 504 and json.loads(sent.body)["code"] == "deadline_exceeded"
    bad = Sent()
    await connect.serve_unary(body(b"{}"), bad, {b"connect-timeout-ms": b"12345678901"}, slow)
    assert json.loads(bad.body)["code"] == "invalid_argument"


async def test_stream_messages_keepalives_and_end() -> None:
    gate = asyncio.Event()

    async def messages() -> AsyncIterator[Msg]:
        yield Msg(1)
        await gate.wait()
        yield Msg(2)

    sent = Sent()
    headers = {b"keepalive-ping-interval": b"1"}
    task = asyncio.create_task(
        connect.serve_stream(body(), sent, headers, messages(), keepalive=lambda: Msg(0))
    )
    while Msg(0) not in [Msg(**m) for _, m in sent.envelopes() if "n" in m]:
        await asyncio.sleep(0.05)
    gate.set()
    await task
    got = sent.envelopes()
    assert sent.status == 200 and sent.headers[b"content-type"] == connect.STREAM_TYPE
    assert got[0] == (0, {"n": 1}) and (0, {"n": 0}) in got and got[-2] == (0, {"n": 2})
    assert got[-1] == (2, {}) and sent.ended


async def test_stream_error_and_deadline_end_the_stream() -> None:
    async def failing() -> AsyncIterator[Msg]:
        yield Msg(1)
        raise NotFound("no such process")

    sent = Sent()
    await connect.serve_stream(body(), sent, {}, failing())
    assert sent.envelopes() == [
        (0, {"n": 1}),
        (2, {"error": {"code": "not_found", "message": "no such process"}}),
    ]

    closed = asyncio.Event()

    async def endless() -> AsyncIterator[Msg]:
        try:
            while True:
                await asyncio.sleep(3600)
                yield Msg(0)
        finally:
            closed.set()

    sent = Sent()
    await connect.serve_stream(body(), sent, {b"connect-timeout-ms": b"50"}, endless())
    assert sent.envelopes()[-1][1]["error"]["code"] == "deadline_exceeded"
    assert closed.is_set()


async def test_a_client_that_leaves_closes_the_stream_without_an_answer() -> None:
    left, closed = asyncio.Event(), asyncio.Event()

    async def endless() -> AsyncIterator[Msg]:
        try:
            yield Msg(1)
            await asyncio.sleep(3600)
            yield Msg(2)
        finally:
            closed.set()

    sent = Sent()
    task = asyncio.create_task(connect.serve_stream(body(disconnect=left), sent, {}, endless()))
    while not sent.body:
        await asyncio.sleep(0.01)
    left.set()
    await task
    assert closed.is_set() and not sent.ended
