"""Dependency providers every shape shares: services live on ``app.state``. Each shape's
``auth.py`` says how its callers authenticate (``authenticate_bearer`` here is the bearer
key, or the gateway's edge token and payer, that the native and Daytona shapes take)."""

from __future__ import annotations

from litestar import Request
from litestar.datastructures import State

from contracts.control import PAYER_HEADER
from core.errors import Forbidden
from core.services.auth import AuthService, Principal
from core.services.egress import EgressService
from core.services.hosts import HostService
from core.services.lifecycle import LifecycleService
from core.services.preview import PreviewService
from core.services.sandboxes import SandboxService
from core.services.snapshots import SnapshotService
from core.services.ssh import SshService
from core.services.toolbox.code import CodeService
from core.services.toolbox.files import FileService
from core.services.toolbox.git import GitService
from core.services.toolbox.sessions import SessionService
from core.services.toolbox.terminals import TerminalService


async def authenticate_bearer(request: Request) -> Principal:
    """The caller of a request carrying ``Authorization: Bearer <key>`` (or the gateway's edge
    token and ``x-dnah-payer``)."""
    auth: AuthService = request.app.state.auth
    return await auth.authenticate(request.headers.get("authorization"), request.headers.get(PAYER_HEADER))


async def provide_admin(request: Request) -> Principal:
    principal = await authenticate_bearer(request)
    if not principal.is_admin:
        raise Forbidden("this route needs an admin key")
    return principal


def provide_sandboxes(state: State) -> SandboxService:
    return state.sandboxes


def provide_files(state: State) -> FileService:
    return state.files


def provide_git(state: State) -> GitService:
    return state.git


def provide_sessions(state: State) -> SessionService:
    return state.sessions


def provide_terminals(state: State) -> TerminalService:
    return state.terminals


def provide_code(state: State) -> CodeService:
    return state.code


def provide_lifecycle(state: State) -> LifecycleService:
    return state.lifecycle


def provide_snapshots(state: State) -> SnapshotService:
    return state.snapshots


def provide_hosts(state: State) -> HostService:
    return state.hosts


def provide_egress(state: State) -> EgressService:
    return state.egress


def provide_ssh(state: State) -> SshService:
    return state.ssh


def provide_auth(state: State) -> AuthService:
    return state.auth


def provide_preview(state: State) -> PreviewService:
    return state.preview


def public_base_url(request: Request, configured: str | None) -> str:
    """The URL clients reach us at: configured, else what the gateway says it is, else ours."""
    if configured:
        return configured
    host = request.headers.get("x-forwarded-host")
    if host:
        proto = request.headers.get("x-forwarded-proto", "http")
        return f"{proto}://{host}"
    return str(request.base_url).rstrip("/")
