"""The core's client for hostd's internal API (``contracts.host``).

One keep-alive ``httpx.AsyncClient`` is shared by every call. Transport failures and hostd
error answers are translated here, once, into the core's errors; the request id of the call
being served travels along in ``x-request-id``.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import TypeVar, cast
from urllib.parse import quote

import httpx
import msgspec
import structlog

from contracts import guest
from contracts.control import REQUEST_ID_HEADER
from contracts.host import (
    AGENT_REFUSED,
    CloneRequest,
    DiskUsage,
    EgressPolicy,
    ExecRequest,
    ExecResult,
    FileWritten,
    HostErrorBody,
    ResizeRequest,
    RestoreRequest,
    SandboxInfo,
    SandboxSpec,
    SnapshotRequest,
    SnapshotTaken,
)
from contracts.snapshots import SignedSnapshot
from core.db.hosts import HostRecord
from core.errors import HostUnavailable, NotFound, SnapshotRejected

T = TypeVar("T")

LONG_OP_S = 600
"""How long operations that copy a whole disk (archive, snapshot, restore) may take."""
VM_RUNTIMES = frozenset({"qemu", "cloud-hypervisor"})
"""Host runtimes (``HostRecord.runtime``, declared at registration) whose sandboxes are
microVMs: creating or starting one boots a kernel, stopping one shuts it down."""
AGENT_CALL_WAIT_S = 30
"""How long hostd waits for the reply to an agent request that has no ``timeout_ms``."""
_GUEST_REPLY = cast("type[guest.GuestToHost]", guest.GuestToHost)
"""The union of the agent's replies, as the decoder's target type."""


class HostFile:
    """A file being downloaded from a sandbox: its size, then its bytes as they arrive.

    Iterate it once, then ``aclose`` it (also after an early stop): it holds a connection to
    hostd, which holds a stream to the agent, until then.
    """

    def __init__(self, response: httpx.Response, size: int) -> None:
        self._response = response
        self.size = size

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._response.aiter_raw()

    async def aclose(self) -> None:
        await self._response.aclose()


class HostClient:
    """``timeout_s`` bounds a call without a limit of its own; ``vm_timeout_s`` (default: the
    same) bounds the calls that change whether a sandbox runs on a VM host (``_change``)."""

    def __init__(self, *, timeout_s: float, vm_timeout_s: float | None = None) -> None:
        self._timeout = timeout_s
        self._vm_timeout = vm_timeout_s or timeout_s
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=2.0),
            limits=httpx.Limits(max_keepalive_connections=64, max_connections=256),
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def create(self, host: HostRecord, spec: SandboxSpec) -> SandboxInfo:
        return await self._change(host, "/sandboxes", spec)

    async def start(self, host: HostRecord, spec: SandboxSpec) -> SandboxInfo:
        return await self._change(host, f"/sandboxes/{spec.id}/start", spec)

    async def stop(self, host: HostRecord, sandbox_id: str) -> SandboxInfo:
        return await self._change(host, f"/sandboxes/{sandbox_id}/stop", None)

    async def pause(self, host: HostRecord, sandbox_id: str) -> SandboxInfo:
        return await self._change(host, f"/sandboxes/{sandbox_id}/pause", None)

    async def resume(self, host: HostRecord, sandbox_id: str) -> SandboxInfo:
        return await self._change(host, f"/sandboxes/{sandbox_id}/resume", None)

    async def archive(self, host: HostRecord, sandbox_id: str) -> SandboxInfo:
        # writing the whole disk to the archive store takes as long as it takes
        return await self._call(
            host, "POST", f"/sandboxes/{sandbox_id}/archive", None, SandboxInfo, timeout_s=LONG_OP_S
        )

    async def unarchive(self, host: HostRecord, sandbox_id: str) -> SandboxInfo:
        return await self._call(
            host, "POST", f"/sandboxes/{sandbox_id}/unarchive", None, SandboxInfo, timeout_s=LONG_OP_S
        )

    async def resize(
        self, host: HostRecord, sandbox_id: str, *, cpu: int, ram_mb: int, disk_gb: int
    ) -> SandboxInfo:
        body = ResizeRequest(cpu=cpu, ram_mb=ram_mb, disk_gb=disk_gb)
        return await self._change(host, f"/sandboxes/{sandbox_id}/resize", body)

    async def snapshot(self, host: HostRecord, sandbox_id: str, snapshot_id: str) -> SnapshotTaken:
        body = SnapshotRequest(snapshot_id=snapshot_id)
        return await self._call(
            host, "POST", f"/sandboxes/{sandbox_id}/snapshots", body, SnapshotTaken, timeout_s=LONG_OP_S
        )

    async def seal(self, host: HostRecord, signed: SignedSnapshot) -> None:
        await self._call(host, "PUT", f"/snapshots/{signed.claim.snapshot_id}/signature", signed, None)

    async def delete_snapshot(self, host: HostRecord, snapshot_id: str) -> None:
        await self._call(host, "DELETE", f"/snapshots/{snapshot_id}", None, None)

    async def restore(
        self, host: HostRecord, sandbox_id: str, snapshot_id: str, verify_keys: dict[str, str]
    ) -> SandboxInfo:
        body = RestoreRequest(snapshot_id=snapshot_id, verify_keys=verify_keys)
        return await self._call(
            host, "POST", f"/sandboxes/{sandbox_id}/restore", body, SandboxInfo, timeout_s=LONG_OP_S
        )

    async def clone(
        self, host: HostRecord, snapshot_id: str, spec: SandboxSpec, verify_keys: dict[str, str]
    ) -> SandboxInfo:
        body = CloneRequest(spec=spec, verify_keys=verify_keys)
        return await self._call(
            host, "POST", f"/snapshots/{snapshot_id}/clone", body, SandboxInfo, timeout_s=LONG_OP_S
        )

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

    async def write_file(
        self, host: HostRecord, sandbox_id: str, path: str, mode: str | None, content: AsyncIterable[bytes]
    ) -> FileWritten | guest.Error:
        """Stream ``content`` into the file ``path`` of the sandbox; all or nothing (hostd and
        the agent discard a partial upload). An exception raised by ``content`` (the client's
        upload failing, or going over the limit) propagates as it is, and aborts the upload.
        The agent's refusal comes back as its ``guest.Error``."""
        params = {"path": path} if mode is None else {"path": path, "mode": mode}
        try:
            resp = await self._http.put(
                f"{host.api_url}/sandboxes/{sandbox_id}/files",
                params=params,
                content=content,
                headers=self._headers(host, "application/octet-stream"),
            )
        except httpx.HTTPError as exc:
            raise _no_answer(host, exc) from exc
        if resp.status_code == AGENT_REFUSED:
            return msgspec.json.decode(resp.content, type=guest.Error)
        self._raise_for_status(host, resp)
        return msgspec.json.decode(resp.content, type=FileWritten)

    async def read_file(self, host: HostRecord, sandbox_id: str, path: str) -> HostFile | guest.Error:
        """Open the file ``path`` of the sandbox for download (see ``HostFile``), or the
        agent's refusal."""
        request = self._http.build_request(
            "GET",
            f"{host.api_url}/sandboxes/{sandbox_id}/files",
            params={"path": path},
            headers=self._headers(host, None),
        )
        try:
            resp = await self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise _no_answer(host, exc) from exc
        if resp.status_code != 200:
            try:
                await resp.aread()
            except httpx.HTTPError as exc:
                raise HostUnavailable(f"host {host.name} failed: {type(exc).__name__}") from exc
            finally:
                await resp.aclose()
            if resp.status_code == AGENT_REFUSED:
                return msgspec.json.decode(resp.content, type=guest.Error)
            self._raise_for_status(host, resp)
        try:
            size = int(resp.headers["content-length"])
        except (KeyError, ValueError):
            await resp.aclose()
            raise HostUnavailable(f"host {host.name} sent a file without a valid length") from None
        return HostFile(resp, size)

    async def disk_usage(self, host: HostRecord, sandbox_id: str) -> DiskUsage:
        return await self._call(host, "GET", f"/sandboxes/{sandbox_id}/disk", None, DiskUsage)

    async def set_egress(self, host: HostRecord, sandbox_id: str, policy: EgressPolicy | None) -> SandboxInfo:
        """Apply ``policy`` to the sandbox at once; the host keeps it for the sandbox's next
        start. None (JSON ``null``) is the operator's default."""
        try:
            resp = await self._http.put(
                f"{host.api_url}/sandboxes/{sandbox_id}/egress",
                content=msgspec.json.encode(policy),
                headers=self._headers(host, "application/json"),
            )
        except httpx.HTTPError as exc:
            raise _no_answer(host, exc) from exc
        self._raise_for_status(host, resp)
        return msgspec.json.decode(resp.content, type=SandboxInfo)

    async def template_build_log(self, host: HostRecord, template: str) -> str:
        """The build log of ``template`` on the host (``hosts/build_logs.py``); ``NotFound``
        when the host has no ready template of that name."""
        try:
            resp = await self._http.get(
                f"{host.api_url}/templates/{quote(template, safe='')}/build-log",
                headers=self._headers(host, None),
            )
        except httpx.HTTPError as exc:
            raise _no_answer(host, exc) from exc
        if resp.status_code == 404:
            raise NotFound(f"host {host.name} has no build of template {template!r}")
        self._raise_for_status(host, resp)
        return resp.text

    async def list(self, host: HostRecord) -> list[SandboxInfo]:
        return await self._call(host, "GET", "/sandboxes", None, list[SandboxInfo])

    async def inspect(self, host: HostRecord, sandbox_id: str) -> SandboxInfo:
        """The sandbox's state once no operation on it is in flight on the host (it may wait
        that operation out: a disk copy gets ``LONG_OP_S``); ``NotFound`` when absent."""
        return await self._call(
            host, "GET", f"/sandboxes/{sandbox_id}", None, SandboxInfo, timeout_s=LONG_OP_S
        )

    async def _change(self, host: HostRecord, path: str, body: msgspec.Struct | None) -> SandboxInfo:
        """A call that changes whether a sandbox runs (create, start, stop, pause, resume,
        resize). On a VM host that boots, shuts down or reshapes a VM, seconds to tens of
        seconds under TCG and load: it gets ``vm_timeout_s``; a container's gets ``timeout_s``."""
        timeout = self._vm_timeout if host.runtime in VM_RUNTIMES else self._timeout
        return await self._call(host, "POST", path, body, SandboxInfo, timeout_s=timeout)

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
        try:
            resp = await self._http.request(
                method,
                host.api_url + path,
                content=msgspec.json.encode(body) if body is not None else None,
                headers=self._headers(host, "application/json"),
                timeout=timeout_s or self._timeout,
            )
        except httpx.HTTPError as exc:
            raise _no_answer(host, exc) from exc
        self._raise_for_status(host, resp)
        if answer is None:
            return None  # type: ignore[return-value]
        return msgspec.json.decode(resp.content, type=answer)

    @staticmethod
    def _headers(host: HostRecord, content_type: str | None) -> dict[str, str]:
        headers = {"authorization": f"Bearer {host.api_token}"}
        if content_type:
            headers["content-type"] = content_type
        request_id = structlog.contextvars.get_contextvars().get("request_id")
        if request_id:
            headers[REQUEST_ID_HEADER] = request_id
        return headers

    @staticmethod
    def _raise_for_status(host: HostRecord, resp: httpx.Response) -> None:
        """Translate a hostd error answer (its body read) into the core's error."""
        if resp.status_code < 400:
            return
        try:
            err = msgspec.json.decode(resp.content, type=HostErrorBody)
            detail = f"{err.code}: {err.message}"
        except msgspec.DecodeError:
            detail = f"HTTP {resp.status_code}"
        else:
            if err.code == "snapshot_rejected":
                raise SnapshotRejected(err.message)
        if resp.status_code == 404 and resp.request.url.path.startswith("/sandboxes/"):
            raise NotFound(f"sandbox is not on host {host.name} ({detail})")
        raise HostUnavailable(f"host {host.name} failed: {detail}", answered=resp.status_code < 500)


def _no_answer(host: HostRecord, exc: httpx.HTTPError) -> HostUnavailable:
    """hostd did not answer. Without a connection (hostd restarting) nothing was sent: the host
    did not do it, as surely as if it had refused, so the row may go back where it was."""
    connected = not isinstance(exc, httpx.ConnectError)
    return HostUnavailable(f"host {host.name} did not answer: {type(exc).__name__}", answered=not connected)
