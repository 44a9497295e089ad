"""JSON bodies are read whole and checked before the app sees a byte of them.

msgspec, which decodes every JSON body of every process, raises ``RecursionError`` on
deeply nested input and ``UnicodeDecodeError`` on invalid UTF-8 — neither is a
``DecodeError``, so both used to become 500s. Here a body is refused (400) when it is not
UTF-8 or nests arrays and objects deeper than ``json_max_depth``, and (413) when it is larger
than ``json_max_bytes``; anything else — including JSON that does not parse — goes on, as one
replayed message, to the handler, whose own decoder says what is wrong with it.

Which bodies are checked is the process's call (``is_json``): every body declared JSON, and on
routes that decode JSON whatever the declared type (Litestar does), every body.
"""

from __future__ import annotations

import re
from itertools import accumulate

from guard.body import PacedBody, too_large
from guard.config import GuardConfig
from guard.reply import Message, Receive, Reply

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
"""A JSON string (escapes included): brackets inside one are not structure."""
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = [0] * 256
for _open in b"[{":
    _STEP[_open] = 1
for _close in b"]}":
    _STEP[_close] = -1


def is_json_type(content_type: bytes) -> bool:
    """``application/json`` and ``application/<anything>+json``, parameters ignored; not
    ``application/connect+json``, a stream of binary-framed messages (Connect-RPC's envelopes)."""
    media = content_type.split(b";", 1)[0].strip().lower()
    if media == b"application/connect+json":
        return False
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


def nesting_depth(body: bytes) -> int:
    """How deep arrays and objects nest in ``body`` (exact for valid JSON; for invalid JSON an
    estimate, which only decides between two 400s). Runs at C speed: strings are cut out by
    a regular expression, everything but brackets deleted, and the depth is a running sum."""
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


async def checked_body(
    body: PacedBody, length: int | None, reply: Reply, config: GuardConfig
) -> Receive | None:
    """Read the whole body through ``body`` and check it; the ``receive`` that replays it to
    the app, or None when the request was refused (the client has its answer)."""
    if length is not None and length > config.json_max_bytes:
        await too_large(reply, config.json_max_bytes)
        return None
    data = bytearray()
    while True:
        message = await body()
        if message["type"] == "http.disconnect":
            return None  # PacedBody has refused it (or the client left)
        data += message.get("body", b"")
        if len(data) > config.json_max_bytes:
            await too_large(reply, config.json_max_bytes)
            return None
        if not message.get("more_body", False):
            break
    problem = _problem(bytes(data), config.json_max_depth)
    if problem is not None:
        await reply.refuse(400, "bad_request", problem)
        return None
    return _replay(bytes(data), body)


def _problem(data: bytes, max_depth: int) -> str | None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"the JSON body is not valid UTF-8 (at byte {exc.start})"
    if nesting_depth(data) > max_depth:
        return f"the JSON body nests deeper than {max_depth} levels"
    return None


def _replay(data: bytes, rest: Receive) -> Receive:
    pending: Message | None = {"type": "http.request", "body": data, "more_body": False}

    async def receive() -> Message:
        nonlocal pending
        if pending is not None:
            message, pending = pending, None
            return message
        return await rest()  # after the body: the client's disconnect

    return receive
