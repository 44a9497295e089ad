"""Requests the gateway refuses before routing them anywhere: targets and framing that the
gateway, a proxy in front of it and the core could each read differently (request smuggling),
and the edge's one way of answering a refusal, for HTTP and WebSocket requests alike.

What Granian 2.8.7 (the server, HTTP/1.1) already does, measured with raw sockets, and what
is left to ``refusal``:

- ``Content-Length`` together with ``Transfer-Encoding``: Granian reads the body as chunked
  and drops ``Content-Length`` before the app sees the request, so the body the gateway relays
  is the one it framed, and the next hop gets a fresh framing (``gateway.forward``). Two
  ``Content-Length`` or two ``Transfer-Encoding`` fields: Granian answers 400 itself. Both
  fields reaching the app anyway (another server) is refused here.
- a transfer coding other than ``chunked`` (``gzip, chunked``): Granian undoes only the
  chunking and passes the rest on; the next hop would get gzip bytes it was never told about.
  Refused here.
- an absolute-form target (``GET http://other.example/x``): Granian keeps the path and drops
  the authority, which the app never sees, so it cannot be compared with ``Host``; every
  routing decision (preview or API) is made on ``Host`` alone.
- more than one ``Host`` field, or a ``Host`` that is not an authority (``a@b``, ``a/b``):
  passed on by Granian, refused here (RFC 9112 §3.2: 400).
- a target that is not a path (``OPTIONS *``, anything not starting with ``/``): refused here.
"""

from __future__ import annotations

import re

import msgspec

from contracts.public import ErrorBody
from gateway.forward import Headers, Receive, Scope, Send

_AUTHORITY = re.compile(rb"(?:[A-Za-z0-9._~!$&'()*+,;=%-]*|\[[0-9A-Fa-f:.]+\])(?::[0-9]*)?")
_ERROR = msgspec.json.Encoder()


def refusal(scope: Scope) -> tuple[int, str, str] | None:
    """Why this request may go nowhere (status, code, message), or None."""
    target: bytes = scope.get("raw_path") or scope["path"].encode()
    if not target.startswith(b"/"):
        return 400, "invalid_target", "the request target must be a path starting with /"
    hosts = [value for name, value in scope["headers"] if name == b"host"]
    if len(hosts) > 1:
        return 400, "invalid_host", "more than one Host header"
    if hosts and not _AUTHORITY.fullmatch(hosts[0]):
        return 400, "invalid_host", "the Host header is not a host[:port]"
    codings = [value for name, value in scope["headers"] if name == b"transfer-encoding"]
    if codings:
        if any(name == b"content-length" for name, _ in scope["headers"]):
            return 400, "invalid_framing", "Content-Length together with Transfer-Encoding"
        if [c.strip().lower() for c in b",".join(codings).split(b",")] != [b"chunked"]:
            return 400, "invalid_framing", "the only transfer coding accepted is chunked"
    return None


def host_of(scope: Scope) -> bytes | None:
    """The request's one ``Host`` value, lower case (``refusal`` has refused several)."""
    for name, value in scope["headers"]:
        if name == b"host":
            return value.lower()
    return None


async def deny(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    code: str,
    message: str,
    request_id: str,
    headers: Headers | None = None,
) -> None:
    """Answer with the public error body: as the HTTP response, or as the answer to a
    WebSocket upgrade (a close before accepting where the server cannot send one)."""
    if scope["type"] == "http":
        await send_http_error(send, status, code, message, request_id, headers)
        return
    if (await receive())["type"] != "websocket.connect":
        return
    if "websocket.http.response" not in (scope.get("extensions") or {}):
        await send({"type": "websocket.close", "code": 1013 if status == 429 else 1008})
        return
    body, all_headers = _error(status, code, message, request_id, headers)
    await send({"type": "websocket.http.response.start", "status": status, "headers": all_headers})
    await send({"type": "websocket.http.response.body", "body": body, "more_body": False})


async def send_http_error(
    send: Send, status: int, code: str, message: str, request_id: str, headers: Headers | None = None
) -> None:
    """``forward.send_error`` with headers of its own (``Retry-After``, ``RateLimit-*``)."""
    body, all_headers = _error(status, code, message, request_id, headers)
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _error(
    status: int, code: str, message: str, request_id: str, headers: Headers | None
) -> tuple[bytes, Headers]:
    body = _ERROR.encode(ErrorBody(status_code=status, message=message, code=code))
    all_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id.encode()),
        *(headers or []),
    ]
    return body, all_headers
