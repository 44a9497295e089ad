"""The native API shape (seed 000's ``/v1``): one module per area, each a thin translation
onto ``core/services/``; ``ROUTER`` carries them with the shape's error handlers."""

from __future__ import annotations

from litestar import Router

from core.http.native.egress import NativeEgress
from core.http.native.errors import EXCEPTION_HANDLERS
from core.http.native.files import NativeFiles
from core.http.native.git import NativeGit
from core.http.native.lifecycle import NativeLifecycle, NativeSnapshots
from core.http.native.previews import NativePreview
from core.http.native.sandboxes import ApiKeys, NativeSandboxes
from core.http.native.secrets import NativeSecrets
from core.http.native.sessions import NativeSessions
from core.http.native.ssh import NativeSsh
from core.http.native.terminals import TERMINAL_ROUTES
from core.http.native.webhooks import NativeWebhooks

ROUTER = Router(
    path="/",
    route_handlers=[
        NativeSandboxes,
        NativeLifecycle,
        NativeSnapshots,
        ApiKeys,
        NativeSessions,
        NativeGit,
        NativeFiles,
        NativeWebhooks,
        NativePreview,
        NativeEgress,
        NativeSecrets,
        NativeSsh,
        *TERMINAL_ROUTES,
    ],
    exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
)
