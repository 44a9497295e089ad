"""An HTTP/1.1 client for Cloud Hypervisor's REST API on its ``--api-socket`` Unix socket.

One method per endpoint the backend uses (``api`` has the bodies). Every answer other than
2xx becomes ``CloudHypervisorError`` carrying the VMM's own message: Cloud Hypervisor
answers errors with a JSON list of messages, outermost first (older releases sent a plain
string; both are read). A socket that cannot be reached is a ``RuntimeFailure`` naming it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TypeVar

import httpx
import msgspec

from hosts.errors import RuntimeFailure
from hosts.runtime.cloud_hypervisor import api

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 120.0
"""Per request. Generous: a snapshot writes all of guest memory before it answers."""


class CloudHypervisorError(RuntimeFailure):
    """The VMM refused a request; ``status`` is its HTTP status, the message its own."""

    def __init__(self, endpoint: str, status: int, message: str) -> None:
        super().__init__(f"cloud-hypervisor {endpoint}: {status} {message}".rstrip())
        self.endpoint = endpoint
        self.status = status
        self.vmm_message = message


class CloudHypervisorClient:
    """The API of one VMM process. Cheap to create; ``close()`` drops its connections."""

    def __init__(self, socket: Path, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.socket = socket
        self._http = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=str(socket)),
            base_url=f"http://localhost{api.API_ROOT}",
            timeout=timeout,
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> CloudHypervisorClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    # VMM -------------------------------------------------------------------------------------

    async def ping(self) -> api.VmmPingResponse:
        """``GET vmm.ping``: the VMM's version and pid."""
        return await self._get("vmm.ping", api.VmmPingResponse)

    async def shutdown_vmm(self) -> None:
        """``PUT vmm.shutdown``: delete the VM (if any) and end the VMM process. The VMM may
        close the connection as it exits, which counts as done."""
        try:
            await self._put("vmm.shutdown")
        except CloudHypervisorError:
            raise
        except RuntimeFailure:
            pass  # the connection ended with the process: what was asked for

    # VM --------------------------------------------------------------------------------------

    async def create(self, config: api.VmConfig) -> None:
        """``PUT vm.create``: record the VM's configuration (nothing runs yet)."""
        await self._put("vm.create", config)

    async def boot(self) -> None:
        """``PUT vm.boot``: start the created VM."""
        await self._put("vm.boot")

    async def pause(self) -> None:
        await self._put("vm.pause")

    async def resume(self) -> None:
        await self._put("vm.resume")

    async def snapshot(self, directory: Path) -> None:
        """``PUT vm.snapshot`` into ``directory`` (which must exist); the VM must be paused."""
        await self._put("vm.snapshot", api.VmSnapshotConfig(destination_url=api.url_of(str(directory))))

    async def restore(self, directory: Path, *, prefault: bool | None = None) -> None:
        """``PUT vm.restore`` from ``directory`` into this VMM, which must hold no VM yet.
        The VM comes back paused; ``resume`` runs it."""
        body = api.RestoreConfig(source_url=api.url_of(str(directory)), prefault=prefault)
        await self._put("vm.restore", body)

    async def resize(self, *, vcpus: int | None = None, ram_bytes: int | None = None) -> None:
        """``PUT vm.resize``: hotplug vCPUs and/or memory (up to what ``vm.create`` allowed)."""
        await self._put("vm.resize", api.VmResize(desired_vcpus=vcpus, desired_ram=ram_bytes))

    async def shutdown(self) -> None:
        """``PUT vm.shutdown``: stop the VM (the VMM keeps its configuration)."""
        await self._put("vm.shutdown")

    async def delete(self) -> None:
        """``PUT vm.delete``: shut the VM down if booted and forget it."""
        await self._put("vm.delete")

    async def info(self) -> api.VmInfo:
        return await self._get("vm.info", api.VmInfo)

    # transport -------------------------------------------------------------------------------

    async def _put(self, endpoint: str, body: msgspec.Struct | None = None) -> None:
        content = None if body is None else msgspec.json.encode(body)
        headers = {"Content-Type": "application/json"} if content is not None else {}
        await self._send("PUT", endpoint, content, headers)

    async def _get(self, endpoint: str, kind: type[T]) -> T:
        response = await self._send("GET", endpoint, None, {"Accept": "application/json"})
        try:
            return msgspec.json.decode(response.content, type=kind)
        except msgspec.DecodeError as exc:
            raise RuntimeFailure(f"cloud-hypervisor {endpoint}: unreadable answer: {exc}") from exc

    async def _send(
        self, method: str, endpoint: str, content: bytes | None, headers: dict[str, str]
    ) -> httpx.Response:
        try:
            response = await self._http.request(method, f"/{endpoint}", content=content, headers=headers)
        except httpx.HTTPError as exc:
            raise RuntimeFailure(
                f"cloud-hypervisor {endpoint}: API socket {self.socket}: {type(exc).__name__}: {exc}"
            ) from exc
        if response.is_success:
            return response
        raise CloudHypervisorError(endpoint, response.status_code, error_message(response.content))


def error_message(body: bytes) -> str:
    """The VMM's message from an error body: a JSON list of messages (joined, outermost
    first), a JSON string, or plain text."""
    try:
        decoded = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return body.decode(errors="replace").strip()
    if isinstance(decoded, list):
        return ": ".join(str(part) for part in decoded)
    return str(decoded)


async def wait_for_api(socket: Path, *, timeout: float) -> api.VmmPingResponse:  # noqa: ASYNC109 — spans retries
    """Ping ``socket`` until the VMM answers (it binds the socket a moment after exec).

    Raises:
        RuntimeFailure: nothing answered within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    async with CloudHypervisorClient(socket, timeout=min(timeout, 10.0)) as client:
        while True:
            try:
                return await client.ping()
            except CloudHypervisorError:
                raise
            except RuntimeFailure as exc:
                if time.monotonic() > deadline:
                    raise RuntimeFailure(f"cloud-hypervisor API at {socket} never answered: {exc}") from exc
            await asyncio.sleep(0.01)
