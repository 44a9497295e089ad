"""The Daytona API shape (``/sandbox``, ``/toolbox/{id}/…``, seed 004's additions): one module
per area, each a thin translation onto ``core/services/``; ``ROUTER`` carries them with the
shape's error handlers."""

from __future__ import annotations

from litestar import Router

from core.http.daytona.egress import DaytonaEgress
from core.http.daytona.errors import EXCEPTION_HANDLERS
from core.http.daytona.files import DaytonaFiles
from core.http.daytona.git import DaytonaGit
from core.http.daytona.lifecycle import DaytonaLifecycle
from core.http.daytona.previews import DaytonaPreview
from core.http.daytona.sandboxes import DaytonaSandboxes, DaytonaToolbox
from core.http.daytona.seed004 import DaytonaSeed004
from core.http.daytona.sessions import DaytonaSessions
from core.http.daytona.ssh import DaytonaSsh
from core.http.daytona.terminals import TERMINAL_ROUTES
from core.http.daytona.transfers import DaytonaTransfers

ROUTER = Router(
    path="/",
    route_handlers=[
        DaytonaLifecycle,
        DaytonaSandboxes,
        DaytonaSeed004,
        DaytonaToolbox,
        DaytonaSessions,
        DaytonaGit,
        DaytonaFiles,
        DaytonaTransfers,
        DaytonaPreview,
        DaytonaEgress,
        DaytonaSsh,
        *TERMINAL_ROUTES,
    ],
    exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
)
