"""Secrets over HTTP: native ``/v1/secrets`` (``core/services/secrets.py`` does the work).
Values go in and never come out: no answer here has a field for one."""

from __future__ import annotations

from litestar import delete, get, post, put
from litestar.datastructures import State
from litestar.di import Provide

from contracts.egress_api import CreateSecret, ReplaceSecret, SecretInfo, SecretList
from core.db.secrets import SecretRecord
from core.http.common.formats import iso
from core.http.common.inputs import NativeController
from core.http.native.auth import provide_principal
from core.services.auth import Principal
from core.services.secrets import SecretService


def provide_secrets(state: State) -> SecretService:
    return state.secrets


def to_info(rec: SecretRecord) -> SecretInfo:
    return SecretInfo(
        name=rec.name, hosts=rec.hosts, created_at=iso(rec.created_at), updated_at=iso(rec.updated_at)
    )


class NativeSecrets(NativeController):
    path = "/v1/secrets"
    dependencies = {
        "principal": Provide(provide_principal),
        "secrets": Provide(provide_secrets, sync_to_thread=False),
    }

    @post("/", status_code=201)
    async def create(self, data: CreateSecret, principal: Principal, secrets: SecretService) -> SecretInfo:
        """A new secret of the caller's org; a name it already uses is a 409."""
        rec = await secrets.create(principal.org_id, name=data.name, value=data.value, hosts=data.hosts)
        return to_info(rec)

    @get("/")
    async def list_secrets(self, principal: Principal, secrets: SecretService) -> SecretList:
        return SecretList(items=[to_info(r) for r in await secrets.list(principal.org_id)])

    @put("/{name:str}", status_code=200)
    async def replace(
        self, name: str, data: ReplaceSecret, principal: Principal, secrets: SecretService
    ) -> SecretInfo:
        """A new value and hosts; sandboxes given the secret take them at their next start."""
        rec = await secrets.replace(principal.org_id, name=name, value=data.value, hosts=data.hosts)
        return to_info(rec)

    @delete("/{name:str}", status_code=204)
    async def remove(self, name: str, principal: Principal, secrets: SecretService) -> None:
        await secrets.delete(principal.org_id, name)
