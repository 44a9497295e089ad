"""``PUT /sandboxes/{id}/egress``: a sandbox's egress policy, applied at once (contracts/host.py).
The body ``null`` puts the sandbox back on the operator's default (``DNAH_EGRESS_DEFAULT``).

On a host without the egress service (``DNAH_SANDBOX_EGRESS=none``, where nothing leaves the
bridge whatever the policy, or the fake runtime) the policy is accepted and has nothing to
change; the sandbox must exist either way.
"""

from __future__ import annotations

import msgspec
from litestar import Request, put
from litestar.datastructures import State
from litestar.exceptions import ValidationException

from contracts.host import EgressPolicy, SandboxInfo
from hosts.commands import InspectSandbox
from hosts.controller import HostController
from hosts.egress.controller import EgressController


@put("/sandboxes/{sandbox_id:str}/egress", status_code=200)
async def set_egress(sandbox_id: str, request: Request, state: State) -> SandboxInfo:
    try:
        policy = msgspec.json.decode(await request.body(), type=EgressPolicy | None)
    except msgspec.DecodeError as exc:
        raise ValidationException(f"invalid EgressPolicy: {exc}") from None
    controller: HostController = state.controller
    info = await controller.handle(InspectSandbox(sandbox_id=sandbox_id))
    if isinstance(controller, EgressController):
        await controller.egress.set_policy(sandbox_id, policy)
    return info
