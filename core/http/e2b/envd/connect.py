"""Connect-RPC with the JSON codec over HTTP/1.1, the server side, on raw ASGI: what envd's
clients (E2B's SDKs, through ``connectrpc``) speak to ``/<package>.<Service>/<Method>``.

The wire, as the Connect protocol defines it and the SDK uses it (JSON codec, no compression):

- unary: ``Content-Type: application/json``, the body one JSON message; success is 200 with
  one JSON message, failure a non-200 status with ``{"code": "<connect code>", "message"}``;
- streaming: ``Content-Type: application/connect+json``, each message an *envelope* (one flag
  byte, a 4-byte big-endian length, the JSON); the response is 200 and a stream of envelopes
  ending with one flagged ``END_STREAM`` whose JSON is ``{}`` or ``{"error": {code, message}}``.
  A server stream's request is one envelope; a client stream's (``StreamInput``) is many.
- ``Connect-Timeout-Ms``: the caller's deadline; past it the call ends ``deadline_exceeded``.

Messages follow protobuf's JSON mapping (lowerCamelCase, int64 as strings, bytes in base64,
enums by name); the structs of each service live with it (``filesystem.py``, ``process.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import msgspec
import structlog

from core.errors import CoreError, Unauthorized
from guard.reply import Receive, Send

log = structlog.get_logger()

UNARY_TYPE = b"application/json"
STREAM_TYPE = b"application/connect+json"
FLAG_END_STREAM = 0x02
FLAG_COMPRESSED = 0x01
MAX_MESSAGE = 16 * 1024 * 1024
"""Largest message (unary body or envelope) accepted; larger is ``resource_exhausted``."""
MAX_TIMEOUT_DIGITS = 10
"""``Connect-Timeout-Ms`` is at most 10 digits (the protocol's own limit)."""

_STATUS = {
    "canceled": 499,
    "unknown": 500,
    "invalid_argument": 400,
    "deadline_exceeded": 504,
    "not_found": 404,
    "already_exists": 409,
    "permission_denied": 403,
    "resource_exhausted": 429,
    "failed_precondition": 400,
    "aborted": 409,
    "out_of_range": 400,
    "unimplemented": 501,
    "internal": 500,
    "unavailable": 503,
    "data_loss": 500,
    "unauthenticated": 401,
}
"""The HTTP status of a unary error, per Connect code (the protocol's table)."""

_CORE_CODES = {
    400: "invalid_argument",
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    408: "deadline_exceeded",
    409: "already_exists",
    413: "resource_exhausted",
    502: "unavailable",
    503: "unavailable",
    507: "resource_exhausted",
}

T = TypeVar("T")


class RpcError(Exception):
    """A call's failure, with its Connect code (a key of ``_STATUS``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def from_core(exc: CoreError) -> RpcError:
    """The Connect error for a core error: not_found, already_exists (409: a path in the way, a
    state conflict), invalid_argument, permission_denied, deadline_exceeded, unavailable
    (host or agent down)."""
    return RpcError(_CORE_CODES.get(exc.status_code, "internal"), exc.message)


class _ErrorBody(msgspec.Struct, omit_defaults=True):
    code: str
    message: str = ""


class _EndStream(msgspec.Struct, omit_defaults=True):
    error: _ErrorBody | None = None


def envelope(payload: bytes, flags: int = 0) -> bytes:
    return struct.pack(">BI", flags, len(payload)) + payload


def end_stream(error: RpcError | None = None) -> bytes:
    """The stream's last envelope: ``{}``, or the error."""
    body = _EndStream(error=_ErrorBody(error.code, error.message) if error else None)
    return envelope(msgspec.json.encode(body), FLAG_END_STREAM)


def deadline_s(headers: dict[bytes, bytes]) -> float | None:
    """The call's deadline in seconds from now (``Connect-Timeout-Ms``), or None.

    Raises:
        RpcError: a malformed value (invalid_argument).
    """
    raw = headers.get(b"connect-timeout-ms")
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > MAX_TIMEOUT_DIGITS:
        raise RpcError("invalid_argument", "Connect-Timeout-Ms must be at most 10 digits")
    return int(raw) / 1000


def decode(payload: bytes, kind: type[T]) -> T:
    """A request message; anything that does not fit its type is invalid_argument."""
    try:
        return msgspec.json.decode(payload or b"{}", type=kind)
    except msgspec.DecodeError as exc:
        raise RpcError("invalid_argument", f"malformed {kind.__name__}: {exc}") from None


async def body_chunks(receive: Receive) -> AsyncIterator[bytes]:
    """The request body as it arrives; a client that leaves ends it with ``ConnectionError``."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("the client left")
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


async def read_unary(receive: Receive) -> bytes:
    """A unary request's whole body (at most ``MAX_MESSAGE``)."""
    data = bytearray()
    async for chunk in body_chunks(receive):
        data += chunk
        if len(data) > MAX_MESSAGE:
            raise RpcError("resource_exhausted", f"a message may be at most {MAX_MESSAGE} bytes")
    return bytes(data)


async def envelopes(receive: Receive) -> AsyncIterator[bytes]:
    """The payloads of a streaming request's envelopes, as each completes; a body that ends
    inside an envelope, a compressed envelope or one over ``MAX_MESSAGE`` is invalid_argument."""
    buffer = bytearray()
    async for chunk in body_chunks(receive):
        buffer += chunk
        while len(buffer) >= 5:
            flags, length = struct.unpack_from(">BI", buffer)
            if flags & FLAG_COMPRESSED:
                raise RpcError("invalid_argument", "compressed envelopes are not accepted (identity only)")
            if length > MAX_MESSAGE:
                raise RpcError("resource_exhausted", f"a message may be at most {MAX_MESSAGE} bytes")
            if len(buffer) < 5 + length:
                break
            payload = bytes(buffer[5 : 5 + length])
            del buffer[: 5 + length]
            if not flags & FLAG_END_STREAM:
                yield payload
    if buffer:
        raise RpcError("invalid_argument", f"malformed envelope: the body ends {len(buffer)} bytes into one")


async def unary_reply(send: Send, message: msgspec.Struct | None) -> None:
    body = msgspec.json.encode(message) if message is not None else b"{}"
    await _respond(send, 200, UNARY_TYPE, body)


async def unary_error(send: Send, error: RpcError) -> None:
    body = msgspec.json.encode(_ErrorBody(error.code, error.message))
    await _respond(send, _STATUS.get(error.code, 500), UNARY_TYPE, body)


async def _respond(send: Send, status: int, content_type: bytes, body: bytes) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def serve_unary(
    receive: Receive,
    send: Send,
    headers: dict[bytes, bytes],
    handler: Callable[[bytes], Awaitable[msgspec.Struct | None]],
) -> None:
    """One unary call: the handler gets the body, its answer or error is sent."""
    try:
        timeout = deadline_s(headers)
        async with asyncio.timeout(timeout):
            reply = await handler(await read_unary(receive))
    except TimeoutError:
        await unary_error(send, _deadline_passed())
    except RpcError as exc:
        await unary_error(send, exc)
    except CoreError as exc:
        await unary_error(send, from_core(exc))
    except Exception:  # a bug: the client still gets a Connect error
        log.exception("envd_call_failed")
        await unary_error(send, RpcError("internal", "the call failed; the core logged why"))
    else:
        await unary_reply(send, reply)


def single_envelope(body: bytes) -> bytes:
    """The one message of a server stream's request body (its whole body, already read)."""
    if len(body) < 5:
        raise RpcError("invalid_argument", "malformed envelope: a streaming request carries one message")
    flags, length = struct.unpack_from(">BI", body)
    if flags & FLAG_COMPRESSED:
        raise RpcError("invalid_argument", "compressed envelopes are not accepted (identity only)")
    if len(body) < 5 + length:
        raise RpcError(
            "invalid_argument", f"malformed envelope: {length} bytes announced, {len(body) - 5} sent"
        )
    return body[5 : 5 + length]


async def serve_stream(
    receive: Receive,
    send: Send,
    headers: dict[bytes, bytes],
    messages: AsyncIterator[Any],
    *,
    keepalive: Callable[[], msgspec.Struct] | None = None,
    on_deadline: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """A server stream (its request body already read): 200, an envelope per message of
    ``messages``, then the end envelope, with the error the iteration raised, or
    ``deadline_exceeded`` past ``Connect-Timeout-Ms`` (``on_deadline`` runs first).

    ``keepalive``: a message sent whenever nothing else was for ``Keepalive-Ping-Interval``
    seconds (default ``KEEPALIVE_S``), so proxies and the client's idle timers see traffic.
    A client that leaves ends the iteration (``messages`` is closed) without an answer."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", STREAM_TYPE)]})
    error: RpcError | None = None
    left = asyncio.ensure_future(_disconnect(receive))
    pending: asyncio.Future[Any] | None = None
    try:
        timeout = deadline_s(headers)
        interval = keepalive_s(headers)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    pending = asyncio.ensure_future(anext(messages))
                    while True:
                        done, _ = await asyncio.wait(
                            {pending, left}, timeout=interval, return_when=asyncio.FIRST_COMPLETED
                        )
                        if left in done:
                            return  # nobody to answer
                        if pending in done:
                            break
                        if keepalive is not None:
                            await _write(send, keepalive())
                    try:
                        message = pending.result()
                    except StopAsyncIteration:
                        break
                    await _write(send, message)
        except TimeoutError:
            if on_deadline is not None:
                await on_deadline()
            error = _deadline_passed()
    except RpcError as exc:
        error = exc
    except CoreError as exc:
        error = from_core(exc)
    except Exception:  # a bug: the client still gets a well-formed end of the stream
        log.exception("envd_stream_failed")
        error = RpcError("internal", "the stream failed; the core logged why")
    finally:
        for task in (pending, left):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        with contextlib.suppress(Exception):
            await messages.aclose()  # type: ignore[attr-defined]
    await send({"type": "http.response.body", "body": end_stream(error), "more_body": False})


async def serve_client_stream(send: Send, headers: dict[bytes, bytes], replies: AsyncIterator[Any]) -> None:
    """A client stream: ``replies`` reads the request's envelopes as they come and yields the
    one answer at their end; it is sent in an envelope, then the end of the stream (with the
    error, or ``deadline_exceeded`` past ``Connect-Timeout-Ms``)."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", STREAM_TYPE)]})
    error: RpcError | None = None
    try:
        async with asyncio.timeout(deadline_s(headers)):
            async for reply in replies:
                await _write(send, reply)
    except TimeoutError:
        error = _deadline_passed()
    except RpcError as exc:
        error = exc
    except CoreError as exc:
        error = from_core(exc)
    except ConnectionError:
        return  # the client left
    await send({"type": "http.response.body", "body": end_stream(error), "more_body": False})


async def _write(send: Send, message: Any) -> None:
    await send(
        {"type": "http.response.body", "body": envelope(msgspec.json.encode(message)), "more_body": True}
    )


async def _disconnect(receive: Receive) -> None:
    """Returns when the client has gone (its body was read before the stream began)."""
    while (await receive())["type"] != "http.disconnect":
        pass


KEEPALIVE_S = 50.0
"""Idle seconds between keepalive messages when the client names no interval."""


def keepalive_s(headers: dict[bytes, bytes]) -> float:
    """``Keepalive-Ping-Interval`` (seconds) as the client asks, else ``KEEPALIVE_S``."""
    raw = headers.get(b"keepalive-ping-interval", b"")
    return float(int(raw)) if raw.isdigit() and 0 < int(raw) <= 3600 else KEEPALIVE_S


def _deadline_passed() -> RpcError:
    return RpcError("deadline_exceeded", "the call's deadline (Connect-Timeout-Ms) passed")


def unauthenticated(exc: Unauthorized) -> RpcError:
    return RpcError("unauthenticated", exc.message)
