"""Keeps this host known to the core: register, then heartbeat, and register again if forgotten.

hostd may start before the core (``make up`` starts them together) and outlive core restarts,
so nothing here gives up: registration is retried with capped exponential backoff until the
core answers, and a heartbeat the core rejects as unknown (404: its database lost the host) or
unauthenticated (401: it now has another bootstrap token) sends the loop back to
registration, which then either succeeds or keeps failing loudly. Every registration carries
the full inventory, so after a re-registration the core reconciles against the host's truth.
Other heartbeat failures (core down, 5xx) are logged and the next beat is simply tried.

Both calls carry the bootstrap token as a bearer token (registration also has it in its body),
and a fresh ``x-request-id`` that is bound to the log lines about that call.

The loop runs as one background task for the life of the process; cancelling it stops it
between or during calls without leaving anything behind.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import httpx
import msgspec
import structlog

from contracts.host import HEARTBEAT_PATH, REGISTER_PATH, Heartbeat, HostRegistered, HostRegistration
from contracts.observability import REQUEST_ID_HEADER, new_request_id
from hosts.config import HostdConfig
from hosts.runtime.base import SandboxRuntime

BACKOFF_INITIAL_S = 0.2
BACKOFF_MAX_S = 5.0
REQUEST_TIMEOUT_S = 10.0

log = structlog.get_logger("hosts.registration")


class Registrar:
    """Registers hostd with the core and heartbeats until cancelled.

    Args:
        config: hostd's settings (core URL, tokens, capacity, the API URL to advertise).
        runtime: the source of the sandbox inventory sent with every call.
        templates: returns the names of the templates this host can create sandboxes from.
    """

    def __init__(
        self,
        config: HostdConfig,
        runtime: SandboxRuntime,
        templates: Callable[[], list[str]],
    ) -> None:
        self._config = config
        self._runtime = runtime
        self._templates = templates

    async def run(self) -> None:
        """Register and heartbeat forever; returns only by cancellation."""
        async with httpx.AsyncClient(
            base_url=self._config.core_url,
            timeout=REQUEST_TIMEOUT_S,
            headers={
                "authorization": f"Bearer {self._config.bootstrap_token}",
                "content-type": "application/json",
            },
        ) as client:
            while True:
                registered = await self._register(client)
                interval = registered.heartbeat_interval_s
                if interval <= 0:
                    interval = self._config.heartbeat_s
                await self._heartbeat_until_forgotten(client, registered.host_id, interval)

    async def _register(self, client: httpx.AsyncClient) -> HostRegistered:
        """Register, retrying with capped exponential backoff until the core accepts."""
        delay = BACKOFF_INITIAL_S
        attempt = 1
        while (registered := await self._try_register(client, attempt)) is None:
            # Jitter keeps a fleet of hosts restarted together from hitting the core in lockstep.
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, BACKOFF_MAX_S)
            attempt += 1
        return registered

    async def _try_register(self, client: httpx.AsyncClient, attempt: int) -> HostRegistered | None:
        body = HostRegistration(
            bootstrap_token=self._config.bootstrap_token,
            name=self._config.host_name,
            api_url=self._config.api_url,
            api_token=self._config.api_token,
            runtime=self._runtime.kind,
            capabilities=self._runtime.capabilities,
            cpu=self._config.cpu,
            ram_mb=self._config.ram_mb,
            disk_gb=self._config.disk_gb,
            templates=self._templates(),
            sandboxes=self._runtime.list(),
        )
        request_id = new_request_id()
        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                response = await _post(client, REGISTER_PATH, body, request_id)
            except httpx.TransportError as exc:
                log.info("core not reachable, will retry", error=repr(exc), attempt=attempt)
                return None
            if not response.is_success:
                # 401/403 mean a wrong DNAH_BOOTSTRAP_TOKEN: an operator must act, so say it loudly.
                level = log.error if response.status_code in (401, 403) else log.warning
                level("core refused registration", status=response.status_code, body=response.text[:500])
                return None
            try:
                registered = msgspec.json.decode(response.content, type=HostRegistered)
            except msgspec.DecodeError as exc:
                log.error("core sent an unreadable registration answer", error=str(exc))
                return None
            log.info(
                "registered with core",
                host_id=registered.host_id,
                sandboxes=len(body.sandboxes),
                heartbeat_interval_s=registered.heartbeat_interval_s,
            )
            return registered

    async def _heartbeat_until_forgotten(
        self, client: httpx.AsyncClient, host_id: str, interval: float
    ) -> None:
        path = HEARTBEAT_PATH.format(host_id=host_id)
        while True:
            await asyncio.sleep(interval)
            request_id = new_request_id()
            with structlog.contextvars.bound_contextvars(request_id=request_id):
                try:
                    response = await _post(
                        client, path, Heartbeat(sandboxes=self._runtime.list()), request_id
                    )
                except httpx.TransportError as exc:
                    log.warning("heartbeat failed", error=repr(exc))
                    continue
                if response.status_code in (401, 404):
                    log.warning("core refused the heartbeat, registering again", status=response.status_code)
                    return
                if not response.is_success:
                    log.warning("heartbeat refused", status=response.status_code, body=response.text[:500])


async def _post(
    client: httpx.AsyncClient, path: str, body: msgspec.Struct, request_id: str
) -> httpx.Response:
    return await client.post(path, content=msgspec.json.encode(body), headers={REQUEST_ID_HEADER: request_id})
