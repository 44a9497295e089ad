"""Dependency providers: services live on ``app.state``; the principal comes from the key."""

from __future__ import annotations

from litestar import Request
from litestar.datastructures import State

from contracts.control import PAYER_HEADER
from core.errors import Forbidden
from core.services.auth import AuthService, Principal
from core.services.hosts import HostService
from core.services.lifecycle import LifecycleService
from core.services.sandboxes import SandboxService
from core.services.snapshots import SnapshotService


async def provide_principal(request: Request) -> Principal:
    auth: AuthService = request.app.state.auth
    return await auth.authenticate(request.headers.get("authorization"), request.headers.get(PAYER_HEADER))


async def provide_admin(request: Request) -> Principal:
    principal = await provide_principal(request)
    if not principal.is_admin:
        raise Forbidden("this route needs an admin key")
    return principal


def provide_sandboxes(state: State) -> SandboxService:
    return state.sandboxes


def provide_lifecycle(state: State) -> LifecycleService:
    return state.lifecycle


def provide_snapshots(state: State) -> SnapshotService:
    return state.snapshots


def provide_hosts(state: State) -> HostService:
    return state.hosts


def provide_auth(state: State) -> AuthService:
    return state.auth


def public_base_url(request: Request, configured: str | None) -> str:
    """The URL clients reach us at: configured, else what the gateway says it is, else ours."""
    if configured:
        return configured
    host = request.headers.get("x-forwarded-host")
    if host:
        proto = request.headers.get("x-forwarded-proto", "http")
        return f"{proto}://{host}"
    return str(request.base_url).rstrip("/")
