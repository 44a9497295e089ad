"""hostd's lifecycle routes beyond create/start/stop/destroy: inspect, pause, resume, resize,
snapshots (take, seal, delete, restore, clone) and archives (see ``contracts/host.py``).

Like ``hosts/app.py`` this module only translates HTTP into ``hosts.commands`` and back;
states, ordering and verification live in ``HostController``. Kept apart from ``app.py`` so
each module stays small; ``app.py`` registers these handlers.
"""

from __future__ import annotations

from typing import TypeVar

import msgspec
from litestar import Request, delete, get, post, put
from litestar.datastructures import State
from litestar.exceptions import ValidationException

from contracts.host import (
    CloneRequest,
    ResizeRequest,
    RestoreRequest,
    SandboxInfo,
    SnapshotRequest,
    SnapshotTaken,
)
from contracts.snapshots import SignedSnapshot
from hosts.commands import (
    ArchiveSandbox,
    CloneSnapshot,
    DeleteSnapshot,
    InspectSandbox,
    PauseSandbox,
    ResizeSandbox,
    RestoreSnapshot,
    ResumeSandbox,
    SealSnapshot,
    TakeSnapshot,
    UnarchiveSandbox,
)
from hosts.controller import HostController

_S = TypeVar("_S", bound=msgspec.Struct)


@get("/sandboxes/{sandbox_id:str}")
async def inspect_sandbox(sandbox_id: str, state: State) -> SandboxInfo:
    return await _controller(state).handle(InspectSandbox(sandbox_id=sandbox_id))


@post("/sandboxes/{sandbox_id:str}/pause", status_code=200)
async def pause_sandbox(sandbox_id: str, state: State) -> SandboxInfo:
    return await _controller(state).handle(PauseSandbox(sandbox_id=sandbox_id))


@post("/sandboxes/{sandbox_id:str}/resume", status_code=200)
async def resume_sandbox(sandbox_id: str, state: State) -> SandboxInfo:
    return await _controller(state).handle(ResumeSandbox(sandbox_id=sandbox_id))


@post("/sandboxes/{sandbox_id:str}/resize", status_code=200)
async def resize_sandbox(sandbox_id: str, request: Request, state: State) -> SandboxInfo:
    body = await _decode(request, ResizeRequest)
    cmd = ResizeSandbox(sandbox_id=sandbox_id, cpu=body.cpu, ram_mb=body.ram_mb, disk_gb=body.disk_gb)
    return await _controller(state).handle(cmd)


@post("/sandboxes/{sandbox_id:str}/snapshots", status_code=200)
async def take_snapshot(sandbox_id: str, request: Request, state: State) -> SnapshotTaken:
    body = await _decode(request, SnapshotRequest)
    return await _controller(state).handle(TakeSnapshot(sandbox_id=sandbox_id, snapshot_id=body.snapshot_id))


@put("/snapshots/{snapshot_id:str}/signature", status_code=204)
async def seal_snapshot(snapshot_id: str, request: Request, state: State) -> None:
    signed = await _decode(request, SignedSnapshot)
    await _controller(state).handle(SealSnapshot(snapshot_id=snapshot_id, signed=signed))


@delete("/snapshots/{snapshot_id:str}")
async def delete_snapshot(snapshot_id: str, state: State) -> None:
    await _controller(state).handle(DeleteSnapshot(snapshot_id=snapshot_id))


@post("/sandboxes/{sandbox_id:str}/restore", status_code=200)
async def restore_snapshot(sandbox_id: str, request: Request, state: State) -> SandboxInfo:
    body = await _decode(request, RestoreRequest)
    cmd = RestoreSnapshot(sandbox_id=sandbox_id, snapshot_id=body.snapshot_id, verify_keys=body.verify_keys)
    return await _controller(state).handle(cmd)


@post("/snapshots/{snapshot_id:str}/clone", status_code=200)
async def clone_snapshot(snapshot_id: str, request: Request, state: State) -> SandboxInfo:
    body = await _decode(request, CloneRequest)
    cmd = CloneSnapshot(snapshot_id=snapshot_id, spec=body.spec, verify_keys=body.verify_keys)
    return await _controller(state).handle(cmd)


@post("/sandboxes/{sandbox_id:str}/archive", status_code=200)
async def archive_sandbox(sandbox_id: str, state: State) -> SandboxInfo:
    return await _controller(state).handle(ArchiveSandbox(sandbox_id=sandbox_id))


@post("/sandboxes/{sandbox_id:str}/unarchive", status_code=200)
async def unarchive_sandbox(sandbox_id: str, state: State) -> SandboxInfo:
    return await _controller(state).handle(UnarchiveSandbox(sandbox_id=sandbox_id))


ROUTES = [
    inspect_sandbox,
    pause_sandbox,
    resume_sandbox,
    resize_sandbox,
    take_snapshot,
    seal_snapshot,
    delete_snapshot,
    restore_snapshot,
    clone_snapshot,
    archive_sandbox,
    unarchive_sandbox,
]


def _controller(state: State) -> HostController:
    controller: HostController = state.controller
    return controller


async def _decode(request: Request, type_: type[_S]) -> _S:
    """Decode the body strictly with the contract Struct (unknown fields are rejected)."""
    try:
        return msgspec.json.decode(await request.body(), type=type_)
    except msgspec.DecodeError as exc:
        raise ValidationException(f"invalid {type_.__name__}: {exc}") from None
