"""E2B's data plane (envd) for every sandbox: ``/envd/{sandbox_id}/…``, a raw ASGI app beside
Litestar (``core/http/app.py`` sends the prefix here; ``dispatch.py`` rewrites the SDK's
``E2b-Sandbox-Id`` requests onto it).

Raw ASGI because nothing here fits a request/response handler: Connect's server streams run
for as long as a process does, ``StreamInput`` is a client stream, and file bodies are passed
on chunk by chunk in both directions.

Each request: the sandbox and its token are checked first (``X-Access-Token`` must be the
sandbox's ``envd_token`` when it has one: 401 otherwise; ``Authorization`` is ignored, as the
gateway may have put its own there), then the sandbox must be started (a paused one with
``wake_on_traffic``, E2B's ``autoResume``, is resumed first; otherwise E2B's proxy answer: 502
or ``unavailable``, "… was not found", which the SDK reads as the sandbox not running).
Errors are ``{"code": <status>, "message"}`` on the REST routes (``/health``, ``/files``) and
Connect errors on the RPCs (``connect.py``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import structlog

from contracts.e2b import ACCESS_TOKEN_HEADER, ENVD_PREFIX
from core.db.sandboxes import SandboxRecord
from core.errors import Conflict, CoreError, Unauthorized
from core.http.e2b.envd import connect, files
from core.http.e2b.envd.context import Envd, rest_error
from core.http.e2b.envd.filesystem import FILESYSTEM_RPCS
from core.http.e2b.envd.process import PROCESS_RPCS
from guard.reply import Receive, Scope, Send

log = structlog.get_logger()

WAKE_WAIT_S = 120.0
"""How long a request waits for a sandbox another request is resuming."""
WAKE_POLL_S = 0.1

_PREFIX = ENVD_PREFIX + "/"
_TOKEN = ACCESS_TOKEN_HEADER.encode()
_RPCS = {**FILESYSTEM_RPCS, **PROCESS_RPCS}


class EnvdApp:
    """The ASGI app for ``/envd/…``; ``state`` gives the core's services (``app.state``)."""

    def __init__(self, state: Callable[[], Any]) -> None:
        self._state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await _refuse_socket(send)
            return
        sandbox_id, _, rest = scope["path"][len(_PREFIX) :].partition("/")
        path = "/" + rest
        headers = {name: value for name, value in scope["headers"]}
        method = scope["method"]
        rpc = _RPCS.get(rest) if method == "POST" else None
        rest_route = path in ("/health", "/files")
        if rpc is None and not rest_route:
            await rest_error(send, 404, f"no envd route {method} {path}")
            return
        envd = Envd(self._state(), headers)
        try:
            envd.sandbox = await _admit(envd, sandbox_id)
        except CoreError as exc:
            status, message = _refusal(exc, sandbox_id)
            if rpc is not None:
                code = "unauthenticated" if status == 401 else "unavailable"
                await _rpc_refusal(receive, send, headers, connect.RpcError(code, message))
            else:
                await rest_error(send, status, message)
            return
        if rpc is not None:
            await rpc(envd, scope, receive, send)
        elif path == "/health":
            await _health(send, method)
        else:
            await files.serve(envd, scope, receive, send)


async def _admit(envd: Envd, sandbox_id: str) -> SandboxRecord:
    token = envd.headers.get(_TOKEN)
    rec: SandboxRecord = await envd.state.sandboxes.by_envd_token(
        sandbox_id, token.decode("latin-1") if token is not None else None
    )
    if rec.state in ("paused", "resuming") and rec.wake_on_traffic:
        rec = await _wake(envd, rec)
    if rec.state != "started":
        raise _NotStarted(rec.state)
    return rec


class _NotStarted(CoreError):
    def __init__(self, state: str) -> None:
        super().__init__(f"it is {state}")


async def _wake(envd: Envd, rec: SandboxRecord) -> SandboxRecord:
    """E2B's ``autoResume`` (our ``wake_on_traffic``): envd traffic resumes a paused sandbox.
    When another request is already resuming it, wait for that (up to ``WAKE_WAIT_S``)."""
    log.info("envd_wake", sandbox_id=rec.id)
    try:
        resumed: SandboxRecord = await envd.state.lifecycle.resume(rec.org_id, rec.id)
        return resumed
    except Conflict:
        pass
    deadline = time.monotonic() + WAKE_WAIT_S
    while rec.state == "resuming" and time.monotonic() < deadline:
        await asyncio.sleep(WAKE_POLL_S)
        rec = await envd.state.sandboxes.get(rec.org_id, rec.id)
    return rec


def _refusal(exc: CoreError, sandbox_id: str) -> tuple[int, str]:
    """401 for a wrong token; anything else about the sandbox itself (unknown, not started)
    is the 502 E2B's proxy answers, whose "was not found" the SDK reads as not running."""
    if isinstance(exc, Unauthorized):
        return 401, exc.message
    detail = f": {exc.message}" if isinstance(exc, _NotStarted) else ""
    return 502, f"The sandbox {sandbox_id} was not found{detail}"


async def _rpc_refusal(
    receive: Receive, send: Send, headers: dict[bytes, bytes], error: connect.RpcError
) -> None:
    content_type = headers.get(b"content-type", b"").split(b";", 1)[0].strip()
    if content_type == connect.STREAM_TYPE:
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", content_type)]}
        )
        await send({"type": "http.response.body", "body": connect.end_stream(error), "more_body": False})
    else:
        await connect.unary_error(send, error)


async def _health(send: Send, method: str) -> None:
    if method != "GET":
        await rest_error(send, 405, "GET /health only")
        return
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _refuse_socket(send: Send) -> None:
    await send({"type": "websocket.close", "code": 4404, "reason": "envd serves no WebSockets"})
