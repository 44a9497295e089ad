"""SSH access, native shape (docs/ssh.md): ``/v1/sandboxes/{id}/ssh-access`` tokens and ``ssh-keys``."""

from __future__ import annotations

from litestar import Request, delete, get, post
from litestar.di import Provide

from contracts import ssh
from core.http.common.deps import provide_sandboxes, provide_ssh
from core.http.common.inputs import NativeController
from core.http.common.ssh import public_host, ssh_keys
from core.http.native.auth import provide_principal
from core.services.auth import Principal
from core.services.ssh import SshService, iso

_DEPENDENCIES = {
    "principal": Provide(provide_principal),
    "sandboxes": Provide(provide_sandboxes, sync_to_thread=False),
    "service": Provide(provide_ssh, sync_to_thread=False),
}


class NativeSsh(NativeController):
    path = "/v1/sandboxes/{sandbox_id:str}"
    dependencies = _DEPENDENCIES

    @post("/ssh-access", status_code=201)
    async def create(
        self,
        request: Request,
        sandbox_id: str,
        principal: Principal,
        service: SshService,
        data: ssh.SshAccessCreate | None = None,
    ) -> ssh.SshAccess:
        minutes = (data or ssh.SshAccessCreate()).expires_in_minutes
        access_id, rec_id, token, created, expires = await service.create_access(
            principal.org_id, sandbox_id, minutes
        )
        host, port = service.endpoint(public_host(request))
        return ssh.SshAccess(
            id=access_id,
            sandbox_id=rec_id,
            token=token,
            expires_at=iso(expires),
            created_at=iso(created),
            ssh_command=service.command(token, host, port),
            host=host,
            port=port,
        )

    @delete("/ssh-access", status_code=204)
    async def revoke(
        self, sandbox_id: str, principal: Principal, service: SshService, token: str | None = None
    ) -> None:
        await service.revoke(principal.org_id, sandbox_id, token)

    @post("/ssh-keys", status_code=200)
    async def set_keys(
        self,
        request: Request,
        sandbox_id: str,
        data: ssh.SshKeysUpdate,
        principal: Principal,
        service: SshService,
    ) -> ssh.SshKeys:
        rec_id, keys = await service.set_keys(principal.org_id, sandbox_id, data.keys)
        return ssh_keys(request, service, rec_id, keys)

    @get("/ssh-keys")
    async def list_keys(
        self, request: Request, sandbox_id: str, principal: Principal, service: SshService
    ) -> ssh.SshKeys:
        rec_id, keys = await service.list_keys(principal.org_id, sandbox_id)
        return ssh_keys(request, service, rec_id, keys)
