"""The E2B SDKs' ``E2B_SANDBOX_URL`` mode at the core: a request carrying ``E2b-Sandbox-Id``
(and ``E2b-Sandbox-Port``, envd's 49983 when absent) is for that sandbox's port, whatever its
path, so ``/health`` with the header is envd's and without it the core's.

A raw ASGI rewrite of the scope, mounted outermost (before the guard, which chooses how to
check a body by its path): the path becomes ``contracts.e2b.data_plane_path`` (``/envd/{id}…``
or ``/preview/{id}/{port}…``) and the E2B headers are dropped, so nothing downstream rewrites
twice. A preview request is marked as one whose URL starts at the root (as a host-based
preview URL is). Malformed headers are a 400 ``{"code": 400, "message"}``. The gateway does
the same rewrite before forwarding (and drops the headers), so behind it this is idle.
"""

from __future__ import annotations

import msgspec

from contracts.e2b import SANDBOX_ID_HEADER, SANDBOX_PORT_HEADER, NotDataPlane, data_plane_path, from_headers
from guard.reply import ASGIApp, Receive, Scope, Send

_ID = SANDBOX_ID_HEADER.encode()
_PORT = SANDBOX_PORT_HEADER.encode()
_PREVIEW_PREFIX = b"x-dnah-preview-prefix"


def with_e2b_headers(app: ASGIApp) -> ASGIApp:
    """``app`` with E2B's header-routed requests rewritten onto the core's own paths."""

    async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            sandbox_id = port = None
            for name, value in scope["headers"]:
                if name == _ID:
                    sandbox_id = value.decode("latin-1")
                elif name == _PORT:
                    port = value.decode("latin-1")
            if sandbox_id is not None:
                try:
                    scope = _rewritten(scope, sandbox_id, port)
                except NotDataPlane as exc:
                    await _bad_request(scope, send, str(exc))
                    return
        await app(scope, receive, send)

    return dispatch


def _rewritten(scope: Scope, sandbox_id: str, port: str | None) -> Scope:
    target = from_headers(sandbox_id, port)
    assert target is not None  # the id header is there
    raw = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
    raw_path = data_plane_path(target[0], target[1], raw if raw.startswith("/") else "/" + raw)
    path = data_plane_path(target[0], target[1], scope["path"])
    headers = [(n, v) for n, v in scope["headers"] if n not in (_ID, _PORT, _PREVIEW_PREFIX)]
    if not path.startswith("/envd/"):
        headers.append((_PREVIEW_PREFIX, b""))
    return {**scope, "path": path, "raw_path": raw_path.encode("latin-1"), "headers": headers}


async def _bad_request(scope: Scope, send: Send, message: str) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 4400, "reason": message[:120]})
        return
    body = msgspec.json.encode({"code": 400, "message": message})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 400, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
