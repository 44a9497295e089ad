"""Every route of the shipped price table (``pricing/default.toml``), called through the gateway
in bearer mode with real ids: a sandbox that exists, its sessions, ports, tokens, snapshots.

What it shows: no route we sell answers 404 (or 405) for a sandbox that exists, i.e. every
priced path reaches a handler. Each step says what it expects and, where that is not a 2xx,
why (``WALK``): a deliberately minimal body, a state the operation refuses, a WebSocket
asked without its upgrade. A rule with a ``**`` tail is walked with one real route per
method that has one. The walk fails listing every step that answered otherwise, so one run
says which routes are missing; and it fails when the table has a rule no step covers.

Steps run in order on an org of their own: ``{sid}`` is a started sandbox the toolbox steps
use, ``{life}`` one the lifecycle steps move through its states, and the sandboxes they fork
or clone are the ones the delete steps remove (a sandbox with live children cannot be
deleted).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from cli.stack import Stack
from pricing import default_table_path, load_table
from tests.gateway.payment_fixtures import PayGateway
from tests.support import mint_key

pytestmark = pytest.mark.stack

TABLE = load_table(default_table_path())
OK = frozenset({200})
PORT = 8080

Context = dict[str, str]


@dataclass(frozen=True)
class Step:
    rule: str
    """The price table rule walked: its methods (comma-separated, as written) and pattern."""
    method: str
    path: str
    """With ``{sid}``-style placeholders filled from the walk's context."""
    expect: frozenset[int] = OK
    why: str = ""
    """Why a status other than 2xx is expected (empty when only 2xx is)."""
    body: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    content: bytes | None = None
    files: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    admin: bool = False
    """Sent with the stack's admin key (the API-key routes); otherwise with the walk org's."""
    save: Callable[[Any, Context], None] | None = None
    """Puts ids from the answer into the context, for later steps."""
    headers: dict[str, str] = field(default_factory=dict)
    """Headers of the step's own (filled from the context): envd's ``X-Access-Token``."""
    connect: Any = None
    """A Connect stream's request: one message, or a list of them (a client stream), each sent
    as an envelope, with ``Content-Type: application/connect+json``."""
    first_only: bool = False
    """A stream that lasts as long as its process or watch: the step reads its first message
    (what ``save`` gets) and leaves, as a client that detaches would."""


def step(rule: str, method: str, path: str, *expect: int, **kw: Any) -> Step:
    return Step(rule, method, path, frozenset(expect) if expect else OK, **kw)


def envd_step(rule: str, method: str, path: str, *expect: int, **kw: Any) -> Step:
    """A step to envd, with the E2B sandbox's access token (``X-Access-Token``, as the SDK)."""
    return step(rule, method, path, *expect, headers={"x-access-token": "{envd}"}, **kw)


def _keep(**names: str) -> Callable[[Any, Context], None]:
    """Save fields of the answer: ``_keep(snap="id")`` puts answer["id"] into ctx["snap"]."""

    def save(answer: Any, ctx: Context) -> None:
        for name, key in names.items():
            ctx[name] = str(answer[key])

    return save


ENVD = "/envd/{id}"
"""E2B's envd, as the gateway rewrites the SDK's data-plane requests (``E2b-Sandbox-Id``)."""
TB = "/sandbox/{id}/toolbox"
"""Seed 004's spelling of the toolbox (the gateway rewrites it to the core's ``/toolbox/{id}``)."""
DISCOVERY_ROUTES: list[tuple[str, dict[str, Any]]] = [
    ("/openapi.json", {}),
    ("/__mpp/health", {}),
    ("/__mpp/config", {}),
    ("/llms.txt", {}),
    ("/__mpp/quote", {"method": "GET", "path": "/sandbox"}),
]
DISCOVERY = (
    "the payment gateway's discovery routes: served in the payment and both modes only (a bearer"
    " gateway sells nothing); walked on a payment gateway by test_discovery_routes_on_a_payment_gateway"
)

WALK: list[Step] = [
    # --- free endpoints ---
    *(
        step(f"GET {path}", "GET", path, 404, why=DISCOVERY, params=params)
        for path, params in DISCOVERY_ROUTES
    ),
    step("GET /health", "GET", "/health"),
    # --- lists ---
    step("GET /sandbox", "GET", "/sandbox"),
    step("GET /sandbox/paginated", "GET", "/sandbox/paginated", params={"page": 1, "limit": 10}),
    step("GET /v1/sandboxes", "GET", "/v1/sandboxes"),
    step("GET /sandbox/{id}", "GET", "/sandbox/{sid}"),
    step("GET /v1/sandboxes/{id}", "GET", "/v1/sandboxes/{sid}"),
    # --- configuration ---
    step("POST /sandbox/{id}/autostop/{minutes}", "POST", "/sandbox/{sid}/autostop/0"),
    step("POST /sandbox/{id}/autoarchive/{minutes}", "POST", "/sandbox/{sid}/autoarchive/60"),
    step("POST /sandbox/{id}/autodelete/{minutes}", "POST", "/sandbox/{sid}/autodelete/-1"),
    step("POST /sandbox/{id}/public/{bool}", "POST", "/sandbox/{sid}/public/true"),
    step("POST /sandbox/{id}/public/{bool}", "POST", "/sandbox/{sid}/public/false"),
    step("PUT /sandbox/{id}/labels", "PUT", "/sandbox/{sid}/labels", body={"labels": {"walk": "yes"}}),
    # --- URLs, ports, SSH ---
    step("GET /sandbox/{id}/toolbox-proxy-url", "GET", "/sandbox/{sid}/toolbox-proxy-url"),
    step("GET /sandbox/{id}/build-logs-url", "GET", "/sandbox/{sid}/build-logs-url"),
    step("GET /sandbox/{id}/ports/{port}/preview-url", "GET", f"/sandbox/{{sid}}/ports/{PORT}/preview-url"),
    step(
        "GET /sandbox/{id}/ports/{port}/signed-preview-url",
        "GET",
        f"/sandbox/{{sid}}/ports/{PORT}/signed-preview-url",
        params={"expiresInSeconds": 120},
        save=_keep(signed="token"),
    ),
    step(
        "POST /sandbox/{id}/ports/{port}/signed-preview-url/{token}/expire",
        "POST",
        f"/sandbox/{{sid}}/ports/{PORT}/signed-preview-url/{{signed}}/expire",
        200,
        201,
        204,
    ),
    step(
        "POST /sandbox/{id}/ssh-access",
        "POST",
        "/sandbox/{sid}/ssh-access",
        200,
        201,
        params={"expiresInMinutes": 5},
        save=_keep(ssh="token"),
    ),
    step(
        "GET /sandbox/ssh-access/validate", "GET", "/sandbox/ssh-access/validate", params={"token": "{ssh}"}
    ),
    step("DELETE /sandbox/{id}/ssh-access", "DELETE", "/sandbox/{sid}/ssh-access", 200, 204),
    # --- toolbox: processes and sessions ---
    step(
        f"POST {TB}/process/execute",
        "POST",
        "/sandbox/{sid}/toolbox/process/execute",
        body={"command": "true"},
    ),
    step(
        f"POST {TB}/process/sessions",
        "POST",
        "/sandbox/{sid}/toolbox/process/sessions",
        201,
        body={"sessionId": "walk"},
    ),
    step(f"GET {TB}/process/sessions", "GET", "/sandbox/{sid}/toolbox/process/sessions"),
    step(
        f"POST {TB}/process/sessions/{{sessionId}}/exec",
        "POST",
        "/sandbox/{sid}/toolbox/process/sessions/walk/exec",
        body={"command": "echo hi"},
    ),
    step(
        f"DELETE {TB}/process/sessions/{{sessionId}}",
        "DELETE",
        "/sandbox/{sid}/toolbox/process/sessions/walk",
        204,
    ),
    # --- toolbox: files ---
    step(
        f"POST {TB}/files/folder",
        "POST",
        "/sandbox/{sid}/toolbox/files/folder",
        201,
        params={"path": "walk", "mode": "755"},
    ),
    step(
        f"POST {TB}/files/upload",
        "POST",
        "/sandbox/{sid}/toolbox/files/upload",
        params={"path": "walk/a.txt"},
        files={"file": ("a.txt", b"hello walk\n")},
    ),
    step(
        f"POST {TB}/files/bulk-upload",
        "POST",
        "/sandbox/{sid}/toolbox/files/bulk-upload",
        data={"files[0].path": "walk/b.txt"},
        files={"files[0].file": ("b.txt", b"bee\n")},
    ),
    step(f"GET {TB}/files", "GET", "/sandbox/{sid}/toolbox/files", params={"path": "walk"}),
    step(
        f"GET {TB}/files/download",
        "GET",
        "/sandbox/{sid}/toolbox/files/download",
        params={"path": "walk/a.txt"},
    ),
    step(
        f"POST {TB}/files/bulk-download",
        "POST",
        "/sandbox/{sid}/toolbox/files/bulk-download",
        body={"paths": ["walk/a.txt", "walk/b.txt"]},
    ),
    step(f"GET {TB}/files/info", "GET", "/sandbox/{sid}/toolbox/files/info", params={"path": "walk/a.txt"}),
    step(
        f"GET {TB}/files/search",
        "GET",
        "/sandbox/{sid}/toolbox/files/search",
        params={"path": "walk", "pattern": "*.txt"},
    ),
    step(
        f"GET {TB}/files/find",
        "GET",
        "/sandbox/{sid}/toolbox/files/find",
        params={"path": "walk", "pattern": "bee"},
    ),
    step(
        f"POST {TB}/files/replace",
        "POST",
        "/sandbox/{sid}/toolbox/files/replace",
        body={"files": ["walk/b.txt"], "pattern": "bee", "newValue": "wasp"},
    ),
    step(
        f"POST {TB}/files/permissions",
        "POST",
        "/sandbox/{sid}/toolbox/files/permissions",
        params={"path": "walk/b.txt", "mode": "600"},
    ),
    step(
        f"POST {TB}/files/move",
        "POST",
        "/sandbox/{sid}/toolbox/files/move",
        params={"source": "walk/b.txt", "destination": "walk/c.txt"},
    ),
    step(f"DELETE {TB}/files", "DELETE", "/sandbox/{sid}/toolbox/files", 204, params={"path": "walk/c.txt"}),
    step(f"GET {TB}/project-dir", "GET", "/sandbox/{sid}/toolbox/project-dir"),
    step(f"GET {TB}/user-home-dir", "GET", "/sandbox/{sid}/toolbox/user-home-dir"),
    step(f"GET {TB}/work-dir", "GET", "/sandbox/{sid}/toolbox/work-dir"),
    # --- toolbox: git, on a repository cloned from one in the sandbox (no network) ---
    step(
        f"POST {TB}/git/clone",
        "POST",
        "/sandbox/{sid}/toolbox/git/clone",
        body={"url": "{home}/origin.git", "path": "{home}/repo"},
    ),
    step(
        f"POST {TB}/git/add",
        "POST",
        "/sandbox/{sid}/toolbox/git/add",
        body={"path": "{home}/repo", "files": ["."]},
    ),
    step(
        f"POST {TB}/git/commit",
        "POST",
        "/sandbox/{sid}/toolbox/git/commit",
        body={
            "path": "{home}/repo",
            "message": "walk",
            "author": "Walk",
            "email": "walk@example.com",
            "allow_empty": True,
        },
    ),
    step(f"POST {TB}/git/push", "POST", "/sandbox/{sid}/toolbox/git/push", body={"path": "{home}/repo"}),
    step(f"POST {TB}/git/pull", "POST", "/sandbox/{sid}/toolbox/git/pull", body={"path": "{home}/repo"}),
    step(
        f"GET {TB}/git/branches", "GET", "/sandbox/{sid}/toolbox/git/branches", params={"path": "{home}/repo"}
    ),
    step(
        f"POST {TB}/git/branches",
        "POST",
        "/sandbox/{sid}/toolbox/git/branches",
        body={"path": "{home}/repo", "name": "walk"},
    ),
    step(
        f"DELETE {TB}/git/branches",
        "DELETE",
        "/sandbox/{sid}/toolbox/git/branches",
        body={"path": "{home}/repo", "name": "walk"},
    ),
    step(
        f"GET {TB}/git/history", "GET", "/sandbox/{sid}/toolbox/git/history", params={"path": "{home}/repo"}
    ),
    # --- toolbox wildcards, both spellings: a real route for every method that has one ---
    step(
        f"GET,POST,PUT,DELETE {TB}/**",
        "GET",
        "/sandbox/{sid}/toolbox/git/status",
        params={"path": "{home}/repo"},
    ),
    step(
        f"GET,POST,PUT,DELETE {TB}/**",
        "POST",
        "/sandbox/{sid}/toolbox/process/code-run",
        body={"code": "print(1)", "language": "python"},
    ),
    step(
        f"GET,POST,PUT,DELETE {TB}/**",
        "POST",
        "/sandbox/{sid}/toolbox/process/session",
        201,
        body={"sessionId": "walk2"},
    ),
    step(f"GET,POST,PUT,DELETE {TB}/**", "DELETE", "/sandbox/{sid}/toolbox/process/session/walk2", 204),
    step(
        f"GET,POST,PUT,DELETE {TB}/**",
        "PUT",
        "/sandbox/{sid}/toolbox/files",
        404,
        405,
        why="no toolbox operation takes PUT (nor does Daytona's); the rule prices the method for any"
        " future one, and the gateway charges nothing for a route the core does not serve",
    ),
    step(
        "POST /toolbox/{id}/git/clone",
        "POST",
        "/toolbox/{sid}/git/clone",
        body={"url": "{home}/origin.git", "path": "{home}/repo2"},
    ),
    step(
        "GET,POST,PUT,DELETE /toolbox/{id}/**",
        "GET",
        "/toolbox/{sid}/files/info",
        params={"path": "walk/a.txt"},
    ),
    step(
        "GET,POST,PUT,DELETE /toolbox/{id}/**",
        "POST",
        "/toolbox/{sid}/process/execute",
        body={"command": "true"},
    ),
    step(
        "GET,POST,PUT,DELETE /toolbox/{id}/**",
        "DELETE",
        "/toolbox/{sid}/files",
        204,
        params={"path": "walk/a.txt"},
    ),
    step(
        "GET,POST,PUT,DELETE /toolbox/{id}/**",
        "PUT",
        "/toolbox/{sid}/files",
        404,
        405,
        why="as for the seed-004 spelling: no toolbox operation takes PUT",
    ),
    # --- WebSockets asked as plain GETs ---
    step(
        "GET /v1/sandboxes/{id}/terminal",
        "GET",
        "/v1/sandboxes/{sid}/terminal",
        426,
        why="a WebSocket: without the upgrade the core answers 426",
    ),
    step(
        "GET /toolbox/{id}/process/pty/create-connect",
        "GET",
        "/toolbox/{sid}/process/pty/create-connect",
        426,
        why="a WebSocket: 426 without the upgrade",
    ),
    step(
        "GET /toolbox/{id}/process/pty/{sessionId}/connect",
        "GET",
        "/toolbox/{sid}/process/pty/walk/connect",
        426,
        why="a WebSocket: 426 without the upgrade",
    ),
    step(
        "GET /sandbox/{id}/toolbox/process/pty/create-connect",
        "GET",
        "/sandbox/{sid}/toolbox/process/pty/create-connect",
        426,
        why="a WebSocket: 426 without the upgrade",
    ),
    step(
        "GET /sandbox/{id}/toolbox/process/pty/{sessionId}/connect",
        "GET",
        "/sandbox/{sid}/toolbox/process/pty/walk/connect",
        426,
        why="a WebSocket: 426 without the upgrade",
    ),
    # --- native per-sandbox routes ---
    step("POST /v1/sandboxes/{id}/exec", "POST", "/v1/sandboxes/{sid}/exec", body={"cmd": ["true"]}),
    step(
        "POST /v1/sandboxes/{id}/run-code", "POST", "/v1/sandboxes/{sid}/run-code", body={"code": "print(2)"}
    ),
    step(
        "POST /v1/sandboxes/{id}/git/clone",
        "POST",
        "/v1/sandboxes/{sid}/git/clone",
        body={"url": "{home}/origin.git", "path": "{home}/repo3"},
    ),
    step("* /v1/sandboxes/{id}/**", "GET", "/v1/sandboxes/{sid}/metrics"),
    step("* /v1/sandboxes/{id}/**", "POST", "/v1/sandboxes/{sid}/files/mkdir", params={"path": "walk2"}),
    step(
        "* /v1/sandboxes/{id}/**",
        "PUT",
        "/v1/sandboxes/{sid}/files",
        200,
        201,
        params={"path": "walk2/n.txt"},
        content=b"native bytes\n",
    ),
    step(
        "* /v1/sandboxes/{id}/**",
        "DELETE",
        "/v1/sandboxes/{sid}/files",
        200,
        204,
        params={"path": "walk2/n.txt"},
    ),
    # --- E2B's control plane, on {e2b}, made by its own create ---
    step(
        "POST /v2/sandboxes",
        "POST",
        "/v2/sandboxes",
        201,
        body={"templateID": "base", "metadata": {"walk": "e2b"}, "timeout": 900},
        save=_keep(e2b="sandboxID", envd="envdAccessToken"),
    ),
    step("GET /v2/sandboxes", "GET", "/v2/sandboxes", params={"metadata": "walk=e2b", "limit": 10}),
    step("GET /sandboxes", "GET", "/sandboxes"),
    step("GET /sandboxes/{id}", "GET", "/sandboxes/{e2b}"),
    step("GET /sandboxes/{id}/metrics", "GET", "/sandboxes/{e2b}/metrics"),
    step("GET /sandboxes/metrics", "GET", "/sandboxes/metrics", params={"sandbox_ids": "{e2b}"}),
    step("GET /sandboxes/{id}/logs", "GET", "/sandboxes/{e2b}/logs"),
    step("GET /v2/sandboxes/{id}/logs", "GET", "/v2/sandboxes/{e2b}/logs"),
    step("POST /sandboxes/{id}/timeout", "POST", "/sandboxes/{e2b}/timeout", 204, body={"timeout": 900}),
    step("POST /sandboxes/{id}/refreshes", "POST", "/sandboxes/{e2b}/refreshes", 204, body={"duration": 60}),
    step(
        "PUT /sandboxes/{id}/network",
        "PUT",
        "/sandboxes/{e2b}/network",
        204,
        body={"denyOut": ["203.0.113.0/24"]},
    ),
    # --- E2B's envd on {e2b}, with its access token, each call as the gateway prices it:
    # /envd/{id}/... ---
    envd_step("GET /envd/{id}/health", "GET", "/envd/{e2b}/health", 204),
    envd_step(
        "POST /envd/{id}/files",
        "POST",
        "/envd/{e2b}/files",
        params={"path": "walk-e2b/a.txt"},
        files={"file": ("a.txt", b"e2b walk\n")},
    ),
    envd_step("GET /envd/{id}/files", "GET", "/envd/{e2b}/files", params={"path": "walk-e2b/a.txt"}),
    envd_step(
        f"POST {ENVD}/filesystem.Filesystem/**",
        "POST",
        "/envd/{e2b}/filesystem.Filesystem/Stat",
        body={"path": "walk-e2b/a.txt"},
    ),
    envd_step(
        f"POST {ENVD}/filesystem.Filesystem/WatchDir",
        "POST",
        "/envd/{e2b}/filesystem.Filesystem/WatchDir",
        connect={"path": "walk-e2b"},
        first_only=True,
    ),
    envd_step(
        f"POST {ENVD}/process.Process/Start",
        "POST",
        "/envd/{e2b}/process.Process/Start",
        connect={"process": {"cmd": "/bin/cat"}, "stdin": True, "tag": "walk-cat"},
        first_only=True,
    ),
    envd_step(
        f"POST {ENVD}/process.Process/Start",
        "POST",
        "/envd/{e2b}/process.Process/Start",
        connect={
            "process": {"cmd": "/bin/bash"},
            "pty": {"size": {"cols": 80, "rows": 24}},
            "tag": "walk-pty",
        },
        first_only=True,
    ),
    envd_step(f"POST {ENVD}/process.Process/List", "POST", "/envd/{e2b}/process.Process/List", body={}),
    envd_step(
        f"POST {ENVD}/process.Process/SendInput",
        "POST",
        "/envd/{e2b}/process.Process/SendInput",
        body={"process": {"tag": "walk-cat"}, "input": {"stdin": "aGkK"}},
    ),
    envd_step(
        f"POST {ENVD}/process.Process/CloseStdin",
        "POST",
        "/envd/{e2b}/process.Process/CloseStdin",
        body={"process": {"tag": "walk-cat"}},
    ),
    envd_step(
        f"POST {ENVD}/process.Process/Update",
        "POST",
        "/envd/{e2b}/process.Process/Update",
        body={"process": {"tag": "walk-pty"}, "pty": {"size": {"cols": 100, "rows": 30}}},
    ),
    envd_step(
        f"POST {ENVD}/process.Process/Connect",
        "POST",
        "/envd/{e2b}/process.Process/Connect",
        connect={"process": {"tag": "walk-pty"}},
        first_only=True,
    ),
    envd_step(
        f"POST {ENVD}/process.Process/StreamInput",
        "POST",
        "/envd/{e2b}/process.Process/StreamInput",
        connect=[{"start": {"process": {"tag": "walk-pty"}}}, {"data": {"input": {"pty": "ZWNobyBoaQo="}}}],
    ),
    envd_step(
        f"POST {ENVD}/process.Process/SendSignal",
        "POST",
        "/envd/{e2b}/process.Process/SendSignal",
        body={"process": {"tag": "walk-pty"}, "signal": "SIGNAL_SIGKILL"},
    ),
    # --- E2B's control plane again: snapshots, forks, pause and the ways back, kill ---
    step(
        "POST /sandboxes/{id}/snapshots",
        "POST",
        "/sandboxes/{e2b}/snapshots",
        201,
        body={},
        save=_keep(e2bsnap="snapshotID"),
    ),
    step("GET /snapshots", "GET", "/snapshots", params={"sandboxID": "{e2b}"}),
    step(
        "POST /sandboxes/{id}/fork",
        "POST",
        "/sandboxes/{e2b}/fork",
        201,
        body={"timeout": 300},
        save=lambda answer, ctx: ctx.update(e2bfork=answer[0]["sandbox"]["sandboxID"]),
    ),
    step("DELETE /sandboxes/{id}", "DELETE", "/sandboxes/{e2bfork}", 204),
    step("POST /sandboxes/{id}/pause", "POST", "/sandboxes/{e2b}/pause", 204, body={}),
    step(
        "POST /v2/sandboxes/{id}/connect", "POST", "/v2/sandboxes/{e2b}/connect", 201, body={"timeout": 900}
    ),
    step("POST /sandboxes/{id}/pause", "POST", "/sandboxes/{e2b}/pause", 204, body={}),
    step("POST /sandboxes/{id}/connect", "POST", "/sandboxes/{e2b}/connect", 201, body={"timeout": 900}),
    step("POST /sandboxes/{id}/pause", "POST", "/sandboxes/{e2b}/pause", 204, body={}),
    step("POST /sandboxes/{id}/resume", "POST", "/sandboxes/{e2b}/resume", 201, body={"timeout": 900}),
    step("DELETE /sandboxes/{id}", "DELETE", "/sandboxes/{e2b}", 204),
    step("DELETE /templates/{id}", "DELETE", "/templates/{e2bsnap}", 204),
    # --- lifecycle, on {life} ---
    step("POST /sandbox/{id}/pause", "POST", "/sandbox/{life}/pause"),
    step("POST /v1/sandboxes/{id}/resume", "POST", "/v1/sandboxes/{life}/resume"),
    step("POST /v1/sandboxes/{id}/pause", "POST", "/v1/sandboxes/{life}/pause"),
    step("POST /sandbox/{id}/start", "POST", "/sandbox/{life}/start"),
    step("POST /sandbox/{id}/stop", "POST", "/sandbox/{life}/stop"),
    step("POST /v1/sandboxes/{id}/start", "POST", "/v1/sandboxes/{life}/start"),
    step("POST /v1/sandboxes/{id}/stop", "POST", "/v1/sandboxes/{life}/stop"),
    step("POST /sandbox/{id}/resize", "POST", "/sandbox/{life}/resize", body={"cpu": 1, "memory": 1}),
    step("POST /v1/sandboxes/{id}/resize", "POST", "/v1/sandboxes/{life}/resize", body={"ram_mb": 1024}),
    step("POST /sandbox/{id}/start", "POST", "/sandbox/{life}/start"),
    step(
        "POST /sandbox/{id}/recover",
        "POST",
        "/sandbox/{life}/recover",
        409,
        why="recover is for a sandbox in error; a started one is refused as such",
    ),
    step(
        "POST /v1/sandboxes/{id}/recover",
        "POST",
        "/v1/sandboxes/{life}/recover",
        409,
        why="recover is for a sandbox in error; a started one is refused as such",
    ),
    step("POST /sandbox/{id}/backup", "POST", "/sandbox/{life}/backup"),
    step(
        "POST /v1/sandboxes/{id}/snapshot",
        "POST",
        "/v1/sandboxes/{life}/snapshot",
        201,
        save=_keep(snap="id"),
    ),
    step(
        "POST /v1/sandboxes/{id}/restore",
        "POST",
        "/v1/sandboxes/{life}/restore",
        body={"snapshot_id": "{snap}"},
    ),
    step(
        "POST /v1/sandboxes/{id}/clone",
        "POST",
        "/v1/sandboxes/{life}/clone",
        201,
        body={"snapshot_id": "{snap}"},
        save=_keep(clone="id"),
    ),
    step("POST /v1/sandboxes/{id}/fork", "POST", "/v1/sandboxes/{life}/fork", 201, save=_keep(fork1="id")),
    step("POST /sandbox/{id}/fork", "POST", "/sandbox/{life}/fork", save=_keep(fork2="id")),
    step("POST /sandbox/{id}/stop", "POST", "/sandbox/{life}/stop"),
    step("POST /sandbox/{id}/archive", "POST", "/sandbox/{life}/archive"),
    step("POST /sandbox/{id}/start", "POST", "/sandbox/{life}/start"),
    step("POST /v1/sandboxes/{id}/stop", "POST", "/v1/sandboxes/{life}/stop"),
    step("POST /v1/sandboxes/{id}/archive", "POST", "/v1/sandboxes/{life}/archive"),
    step("DELETE /sandbox/{id}", "DELETE", "/sandbox/{fork2}"),
    step("DELETE /v1/sandboxes/{id}", "DELETE", "/v1/sandboxes/{clone}", 200, 204),
    step("DELETE /v1/sandboxes/{id}", "DELETE", "/v1/sandboxes/{fork1}", 200, 204),
    # --- creation ---
    step("POST /sandbox", "POST", "/sandbox", body={"labels": {"walk": "created"}}, save=_keep(made1="id")),
    step("POST /v1/sandboxes", "POST", "/v1/sandboxes", 201, body={}, save=_keep(made2="id")),
    step("DELETE /sandbox/{id}", "DELETE", "/sandbox/{made1}"),
    step("DELETE /v1/sandboxes/{id}", "DELETE", "/v1/sandboxes/{made2}", 200, 204),
    # --- account management (bearer only) ---
    step(
        "POST /v1/api-keys",
        "POST",
        "/v1/api-keys",
        201,
        body={"name": "walk"},
        admin=True,
        save=_keep(key_id="id"),
    ),
    step("DELETE /v1/api-keys/{id}", "DELETE", "/v1/api-keys/{key_id}", 200, 204, admin=True),
    step(
        "* /v1/webhooks",
        "POST",
        "/v1/webhooks",
        201,
        body={"url": "http://127.0.0.1:9/walk", "events": ["sandbox.state_updated"]},
        save=_keep(hook="id"),
    ),
    step("* /v1/webhooks", "GET", "/v1/webhooks"),
    step("* /v1/webhooks/**", "GET", "/v1/webhooks/{hook}/deliveries"),
    step("* /v1/webhooks/**", "DELETE", "/v1/webhooks/{hook}", 200, 204),
]


def envelope(message: Any) -> bytes:
    """A Connect envelope: flags 0, the length, the JSON."""
    data = json.dumps(message).encode()
    return b"\x00" + len(data).to_bytes(4, "big") + data


def first_message(resp: httpx.Response) -> Any:
    """The first message of a Connect stream (an end message's JSON if that comes first)."""
    data = b""
    for chunk in resp.iter_raw():
        data += chunk
        if len(data) >= 5 and len(data) >= 5 + int.from_bytes(data[1:5], "big"):
            break
    return json.loads(data[5 : 5 + int.from_bytes(data[1:5], "big")]) if len(data) >= 5 else None


def _send(client: httpx.Client, s: Step, ctx: Context) -> tuple[httpx.Response, Any]:
    """Send a step's request: the answer, and what ``save`` reads from it."""
    headers = _fill(s.headers, ctx)
    content = s.content
    if s.connect is not None:
        messages = s.connect if isinstance(s.connect, list) else [s.connect]
        content = b"".join(envelope(_fill(m, ctx)) for m in messages)
        headers["content-type"] = "application/connect+json"
    request = client.build_request(
        s.method,
        _fill(s.path, ctx),
        params=_fill(s.params, ctx) or None,
        json=_fill(s.body, ctx) if s.body is not None and s.files is None else None,
        content=content,
        files=s.files,
        data=s.data,
        headers=headers or None,
    )
    resp = client.send(request, stream=True)
    try:
        if s.first_only:
            return resp, first_message(resp)
        resp.read()
    finally:
        resp.close()
    return resp, resp.json() if s.save is not None and resp.content else None


def _fill(value: Any, ctx: Context) -> Any:
    if isinstance(value, str):
        for name, real in ctx.items():
            value = value.replace("{" + name + "}", real)
        return value
    if isinstance(value, dict):
        return {k: _fill(v, ctx) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, ctx) for v in value]
    return value


def _rule_name(methods: tuple[str, ...], pattern: str) -> str:
    return f"{','.join(methods)} {pattern}"


def test_every_rule_of_the_table_is_walked() -> None:
    rules = {_rule_name(r.methods, r.pattern) for r in TABLE.routes()}
    walked = {s.rule for s in WALK}
    assert rules - walked == set(), "rules no step walks"
    assert walked - rules == set(), "steps naming a rule the table does not have"
    for s in WALK:
        assert s.expect <= {200, 201, 202, 204} or s.why, f"{s.method} {s.path}: say why it is not a 2xx"


def test_no_priced_route_is_missing_for_a_sandbox_that_exists(stack: Stack, gateway: httpx.Client) -> None:
    key = mint_key(gateway, "price-walk")
    base = stack.config.gateway_url
    with httpx.Client(base_url=base, headers={"authorization": f"Bearer {key}"}, timeout=120) as org:
        sid = _made(org.post("/sandbox", json={"labels": {"walk": "toolbox"}}))
        life = _made(org.post("/sandbox", json={"labels": {"walk": "lifecycle"}}))
        home = org.get(f"/toolbox/{sid}/user-home-dir").json()["dir"]
        setup = org.post(
            f"/toolbox/{sid}/process/execute",
            json={"command": f"git init -q --bare {home}/origin.git"},
        )
        assert setup.status_code == 200 and setup.json()["exitCode"] == 0, setup.text
        ctx: Context = {"sid": sid, "life": life, "home": home}
        failures: list[str] = []
        for s in WALK:
            client = gateway if s.admin else org
            resp, answer = _send(client, s, ctx)
            if resp.status_code not in s.expect:
                text = resp.text[:160] if not s.first_only else repr(answer)[:160]
                failures.append(
                    f"{s.method} {s.path} -> {resp.status_code} (expected {sorted(s.expect)}): {text}"
                )
            elif s.save is not None and answer is not None:
                s.save(answer, ctx)
        for leftover in (sid, life):
            org.delete(f"/sandbox/{leftover}")
    assert not failures, "\n" + "\n".join(failures)


def _made(resp: httpx.Response) -> str:
    assert resp.status_code == 200, resp.text
    return str(resp.json()["id"])


def test_discovery_routes_on_a_payment_gateway(pay_gateway: PayGateway) -> None:
    """The free rules a bearer gateway does not serve, on the payment gateway that does."""
    with httpx.Client(base_url=pay_gateway.url, timeout=60) as anyone:
        for path, params in DISCOVERY_ROUTES:
            resp = anyone.get(path, params=params)
            assert resp.status_code == 200, (path, resp.status_code, resp.text[:200])
