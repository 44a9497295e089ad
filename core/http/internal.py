"""Routes hostd calls: registration and heartbeats (bootstrap-token protected).

The gateway never forwards ``/internal/*``; only hosts on the cluster network reach these.
"""

from __future__ import annotations

from litestar import Controller, Request, post
from litestar.di import Provide

from contracts.host import Heartbeat, HostRegistered, HostRegistration
from core.http.deps import provide_hosts
from core.services.hosts import HostService


def bearer_token(request: Request) -> str | None:
    value = request.headers.get("authorization", "")
    return value[7:].strip() if value.lower().startswith("bearer ") else None


class InternalHosts(Controller):
    path = "/internal/hosts"
    dependencies = {"hosts": Provide(provide_hosts, sync_to_thread=False)}

    @post("/register", status_code=200)
    async def register(self, data: HostRegistration, hosts: HostService) -> HostRegistered:
        return await hosts.register(data)

    @post("/{host_id:str}/heartbeat", status_code=204)
    async def heartbeat(self, request: Request, host_id: str, data: Heartbeat, hosts: HostService) -> None:
        await hosts.heartbeat(host_id, bearer_token(request), data)
