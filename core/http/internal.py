"""Routes the cluster's own processes call: hostd's registration and heartbeats
(bootstrap-token protected) and the SSH gateway's login check (its own token).

The gateway never forwards ``/internal/*``; only processes on the cluster network reach these.
"""

from __future__ import annotations

from litestar import Controller, Request, post
from litestar.di import Provide

from contracts import ssh
from contracts.host import Heartbeat, HostRegistered, HostRegistration
from core.errors import Forbidden
from core.http.common.deps import provide_hosts, provide_ssh
from core.services.hosts import HostService
from core.services.ssh import SshService


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


@post(
    "/internal/ssh/auth",
    status_code=200,
    dependencies={"service": Provide(provide_ssh, sync_to_thread=False)},
)
async def ssh_auth(request: Request, data: ssh.SshAuthRequest, service: SshService) -> ssh.SshAuthResult:
    """The SSH gateway's login check; refused (403) unless it presents its own token."""
    if not service.gateway_allowed(bearer_token(request)):
        raise Forbidden("this route is the SSH gateway's")
    return await service.authenticate(data)
