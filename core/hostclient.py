"""The core's client for hostd's internal API (``contracts.host``).

One keep-alive ``httpx.AsyncClient`` is shared by every call. Transport failures and hostd
error answers are translated here, once, into the core's errors; the request id of the call
being served travels along in ``x-request-id``.
"""

from __future__ import annotations

from typing import TypeVar, cast

import httpx
import msgspec
import structlog

from contracts import guest
from contracts.control import REQUEST_ID_HEADER
from contracts.host import DiskUsage, ExecRequest, ExecResult, HostErrorBody, SandboxInfo, SandboxSpec
from core.db.hosts import HostRecord
from core.errors import HostUnavailable, NotFound

T = TypeVar("T")

AGENT_CALL_WAIT_S = 30
"""How long hostd waits for the reply to an agent request that has no ``timeout_ms``."""
_GUEST_REPLY = cast("type[guest.GuestToHost]", guest.GuestToHost)
"""The union of the agent's replies, as the decoder's target type."""


class HostClient:
    def __init__(self, *, timeout_s: float) -> None:
        self._timeout = timeout_s
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=2.0),
            limits=httpx.Limits(max_keepalive_connections=64, max_connections=256),
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def create(self, host: HostRecord, spec: SandboxSpec) -> SandboxInfo:
        return await self._call(host, "POST", "/sandboxes", spec, SandboxInfo)

    async def start(self, host: HostRecord, spec: SandboxSpec) -> SandboxInfo:
        return await self._call(host, "POST", f"/sandboxes/{spec.id}/start", spec, SandboxInfo)

    async def destroy(self, host: HostRecord, sandbox_id: str) -> None:
        await self._call(host, "DELETE", f"/sandboxes/{sandbox_id}", None, None)

    async def exec(self, host: HostRecord, sandbox_id: str, req: ExecRequest) -> ExecResult:
        # The HTTP timeout must outlast the command's own timeout, which hostd enforces.
        timeout = req.timeout_ms / 1000 + 10
        return await self._call(
            host, "POST", f"/sandboxes/{sandbox_id}/exec", req, ExecResult, timeout_s=timeout
        )

    async def call(self, host: HostRecord, sandbox_id: str, msg: guest.HostToGuest) -> guest.GuestToHost:
        """Relay ``msg`` to the sandbox's agent through hostd; returns the agent's reply, which
        may be a ``guest.Error`` (the caller maps its code). ``msg.id`` is ignored by hostd."""
        timeout_ms = getattr(msg, "timeout_ms", None)
        timeout = (timeout_ms / 1000 if timeout_ms is not None else AGENT_CALL_WAIT_S) + 10
        return await self._call(
            host, "POST", f"/sandboxes/{sandbox_id}/agent", msg, _GUEST_REPLY, timeout_s=timeout
        )

    async def disk_usage(self, host: HostRecord, sandbox_id: str) -> DiskUsage:
        return await self._call(host, "GET", f"/sandboxes/{sandbox_id}/disk", None, DiskUsage)

    async def list(self, host: HostRecord) -> list[SandboxInfo]:
        return await self._call(host, "GET", "/sandboxes", None, list[SandboxInfo])

    async def _call(
        self,
        host: HostRecord,
        method: str,
        path: str,
        body: msgspec.Struct | None,
        answer: type[T] | None,
        *,
        timeout_s: float | None = None,
    ) -> T:
        headers = {"authorization": f"Bearer {host.api_token}", "content-type": "application/json"}
        request_id = structlog.contextvars.get_contextvars().get("request_id")
        if request_id:
            headers[REQUEST_ID_HEADER] = request_id
        try:
            resp = await self._http.request(
                method,
                host.api_url + path,
                content=msgspec.json.encode(body) if body is not None else None,
                headers=headers,
                timeout=timeout_s or self._timeout,
            )
        except httpx.HTTPError as exc:
            raise HostUnavailable(f"host {host.name} did not answer: {type(exc).__name__}") from exc
        if resp.status_code >= 400:
            try:
                err = msgspec.json.decode(resp.content, type=HostErrorBody)
                detail = f"{err.code}: {err.message}"
            except msgspec.DecodeError:
                detail = f"HTTP {resp.status_code}"
            if resp.status_code == 404 and path.startswith("/sandboxes/"):
                raise NotFound(f"sandbox is not on host {host.name} ({detail})")
            raise HostUnavailable(f"host {host.name} failed: {detail}")
        if answer is None:
            return None  # type: ignore[return-value]
        return msgspec.json.decode(resp.content, type=answer)
