"""The E2B API shape: the control plane (``sandboxes.py``, ``snapshots.py``: ``/v2/sandboxes``,
``/sandboxes/{id}/…``, ``/snapshots``, ``/templates/{id}``) as Litestar routes on one Router
with E2B's error body, and envd's data plane (``envd/``, raw ASGI, mounted by the app)."""

from __future__ import annotations

from litestar import Router
from litestar.types import ControllerRouterHandler

from core.http.e2b.errors import EXCEPTION_HANDLERS
from core.http.e2b.sandboxes import E2bSandboxes, E2bSandboxesV2
from core.http.e2b.snapshots import E2bSnapshots

ROUTER = Router(
    path="/",
    route_handlers=[E2bSandboxesV2, E2bSandboxes, E2bSnapshots],
    exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
)

E2B_ROUTES: list[ControllerRouterHandler] = [ROUTER]
"""What the app mounts for E2B's control plane."""
