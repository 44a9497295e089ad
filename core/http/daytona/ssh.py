"""SSH access, Daytona's shape (docs/ssh.md): the SDK's ``ssh-access`` trio."""

from __future__ import annotations

from litestar import Request, delete, get, post
from litestar.di import Provide
from litestar.params import Parameter

from contracts import ssh
from contracts.public import DaytonaSandbox
from core.http.common.deps import provide_sandboxes, provide_ssh
from core.http.common.inputs import DaytonaController
from core.http.common.ssh import public_host
from core.http.daytona.auth import provide_principal
from core.http.daytona.sandboxes import to_daytona, toolbox_base
from core.services.auth import Principal
from core.services.sandboxes import SandboxService
from core.services.ssh import SshService, iso

_DEPENDENCIES = {
    "principal": Provide(provide_principal),
    "sandboxes": Provide(provide_sandboxes, sync_to_thread=False),
    "service": Provide(provide_ssh, sync_to_thread=False),
}


class DaytonaSsh(DaytonaController):
    path = "/sandbox"
    dependencies = _DEPENDENCIES

    @post("/{ref:str}/ssh-access", status_code=200)
    async def create(
        self,
        request: Request,
        ref: str,
        principal: Principal,
        service: SshService,
        expires_in_minutes: int = Parameter(query="expiresInMinutes", default=ssh.DEFAULT_EXPIRES_MINUTES),
    ) -> ssh.DaytonaSshAccess:
        access_id, sandbox_id, token, created, expires = await service.create_access(
            principal.org_id, ref, expires_in_minutes
        )
        host, port = service.endpoint(public_host(request))
        return ssh.DaytonaSshAccess(
            id=access_id,
            sandbox_id=sandbox_id,
            token=token,
            expires_at=iso(expires),
            created_at=iso(created),
            updated_at=iso(created),
            ssh_command=service.command(token, host, port),
        )

    @delete("/{ref:str}/ssh-access", status_code=200)
    async def revoke(
        self,
        request: Request,
        ref: str,
        principal: Principal,
        service: SshService,
        sandboxes: SandboxService,
        token: str | None = None,
    ) -> DaytonaSandbox:
        await service.revoke(principal.org_id, ref, token)
        return to_daytona(await sandboxes.get(principal.org_id, ref), toolbox_base(request))

    @get("/ssh-access/validate")
    async def validate(
        self, token: str, principal: Principal, service: SshService
    ) -> ssh.DaytonaSshValidation:
        sandbox_id = await service.sandbox_of_token(token, principal.org_id)
        return ssh.DaytonaSshValidation(valid=sandbox_id is not None, sandbox_id=sandbox_id or "")
