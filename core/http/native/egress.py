"""Egress policies, native shape: ``/v1/sandboxes/{id}/egress-policy`` (``core/services/egress.py``
does the work)."""

from __future__ import annotations

from litestar import get, post
from litestar.di import Provide

from contracts.egress_api import EgressRules, SandboxEgress
from core.db.sandboxes import SandboxRecord
from core.http.common.deps import provide_egress
from core.http.common.inputs import NativeController
from core.http.native.auth import provide_principal
from core.services.auth import Principal
from core.services.egress import LIVE, EgressService, policy_of


def to_view(rec: SandboxRecord) -> SandboxEgress:
    policy = policy_of(rec)
    if policy is None:
        return SandboxEgress(mode="default", cidrs=[], domains=[], live=rec.state in LIVE)
    return SandboxEgress(mode=policy.mode, cidrs=policy.cidrs, domains=policy.domains, live=rec.state in LIVE)


class NativeEgress(NativeController):
    path = "/v1/sandboxes/{sandbox_id:str}/egress-policy"
    dependencies = {
        "principal": Provide(provide_principal),
        "egress": Provide(provide_egress, sync_to_thread=False),
    }

    @get("/")
    async def read(self, sandbox_id: str, principal: Principal, egress: EgressService) -> SandboxEgress:
        return to_view(await egress.get(principal.org_id, sandbox_id))

    @post("/", status_code=200)
    async def replace(
        self, sandbox_id: str, data: EgressRules, principal: Principal, egress: EgressService
    ) -> SandboxEgress:
        """Replace the policy: applied at once to a started or paused sandbox, kept for the next
        start of a stopped one."""
        return to_view(await egress.set(principal.org_id, sandbox_id, data.policy()))
