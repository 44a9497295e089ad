"""E2B's snapshot and fork routes onto ours (``SnapshotService``): ``create_snapshot`` is
``POST /sandboxes/{id}/snapshots``, ``list_snapshots`` ``GET /snapshots``, ``delete_snapshot``
``DELETE /templates/{id}`` (E2B's snapshots are templates: a snapshot's id is what
``Sandbox.create(template=…)`` takes), and ``Sandbox.fork`` ``POST /sandboxes/{id}/fork``."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, Response, delete, get, post
from litestar.params import Parameter

from contracts.e2b_api import E2bError, E2bForkRequest, E2bForkResult, E2bSnapshotInfo, E2bSnapshotRequest
from core.db.snapshots import SnapshotRecord
from core.errors import BadRequest
from core.http.common.inputs import well_formed
from core.http.e2b.sandboxes import DEPENDENCIES, MAX_PAGE, NEXT_TOKEN_HEADER, preview_domain, to_sandbox
from core.services.auth import Principal
from core.services.e2b import Created, E2bService


def to_info(snap: SnapshotRecord) -> E2bSnapshotInfo:
    return E2bSnapshotInfo(snapshot_id=snap.id, names=[snap.id])


class E2bSnapshots(Controller):
    path = "/"
    dependencies = DEPENDENCIES
    guards = [well_formed]

    @post("/sandboxes/{sandbox_id:str}/snapshots", status_code=201)
    async def create_snapshot(
        self, sandbox_id: str, principal: Principal, e2b: E2bService, data: E2bSnapshotRequest | None = None
    ) -> E2bSnapshotInfo:
        """A snapshot of the sandbox now (it keeps running). Names are not kept: ``name`` is
        refused, the id is the name."""
        if data is not None and data.name:
            raise BadRequest("snapshot names are not kept here; use the snapshotID it answers")
        return to_info(await e2b.snapshot(principal.org_id, sandbox_id))

    @get("/snapshots")
    async def list_snapshots(
        self,
        principal: Principal,
        e2b: E2bService,
        sandbox_id: Annotated[str | None, Parameter(query="sandboxID")] = None,
        name: str | None = None,
        next_token: Annotated[str | None, Parameter(query="nextToken")] = None,
        limit: Annotated[int, Parameter(ge=1, le=MAX_PAGE)] = 100,
    ) -> Response[list[E2bSnapshotInfo]]:
        """The org's snapshots, newest first; ``name`` matches a snapshot's id."""
        page, token = await e2b.snapshots(
            principal.org_id, sandbox_ref=sandbox_id, name=name, next_token=next_token, limit=limit
        )
        return Response([to_info(s) for s in page], headers={NEXT_TOKEN_HEADER: token} if token else {})

    @delete("/templates/{template_id:str}", status_code=204)
    async def delete_snapshot(self, template_id: str, principal: Principal, e2b: E2bService) -> None:
        """A snapshot (404 for anything else: templates are the operator's)."""
        await e2b.delete_snapshot(principal.org_id, template_id)

    @post("/sandboxes/{sandbox_id:str}/fork", status_code=201)
    async def fork(
        self,
        request: Request,
        sandbox_id: str,
        principal: Principal,
        e2b: E2bService,
        data: E2bForkRequest | None = None,
    ) -> list[E2bForkResult]:
        data = data or E2bForkRequest()
        results = await e2b.fork(principal.org_id, sandbox_id, timeout_s=data.timeout, count=data.count)
        domain = preview_domain(request)
        return [
            E2bForkResult(sandbox=to_sandbox(r, domain))
            if isinstance(r, Created)
            else E2bForkResult(error=E2bError(code=r.status_code, message=r.message))
            for r in results
        ]
