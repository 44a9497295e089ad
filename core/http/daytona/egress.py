"""Egress policies, Daytona's shape: ``POST /sandbox/{id}/network-settings``
(``core/services/egress.py`` does the work)."""

from __future__ import annotations

from litestar import Request, post
from litestar.di import Provide

from contracts.egress_api import DaytonaNetworkSettings
from contracts.public import DaytonaSandbox
from core.errors import BadRequest
from core.http.common.deps import provide_egress
from core.http.common.inputs import DaytonaController
from core.http.daytona.auth import provide_principal
from core.http.daytona.sandboxes import to_daytona, toolbox_base
from core.services.auth import Principal
from core.services.egress import EgressService, daytona_policy


class DaytonaEgress(DaytonaController):
    path = "/sandbox/{ref:str}/network-settings"
    dependencies = {
        "principal": Provide(provide_principal),
        "egress": Provide(provide_egress, sync_to_thread=False),
    }

    @post("/", status_code=200)
    async def update(
        self,
        request: Request,
        ref: str,
        principal: Principal,
        egress: EgressService,
        data: DaytonaNetworkSettings | None = None,
    ) -> DaytonaSandbox:
        """``sandbox.update_network_settings``: at least one field, as the SDK itself insists."""
        data = data or DaytonaNetworkSettings()
        if (
            data.network_block_all is None
            and data.network_allow_list is None
            and data.domain_allow_list is None
        ):
            raise BadRequest("give networkBlockAll, networkAllowList or domainAllowList")
        policy = daytona_policy(
            block_all=data.network_block_all,
            allow_list=data.network_allow_list,
            domain_list=data.domain_allow_list,
            update=True,
        )
        return to_daytona(await egress.set(principal.org_id, ref, policy), toolbox_base(request))
