"""E2B's data plane as it reaches us: which sandbox and port a request is for, and where it goes.

The E2B SDKs send every envd and code-interpreter request either to one URL
(``E2B_SANDBOX_URL``) naming the sandbox and port in headers (``E2b-Sandbox-Id``,
``E2b-Sandbox-Port``), or to the host ``{port}-{sandboxID}.{domain}``. Both the gateway and the
core turn such a request into one of our own paths, so routing, pricing and authorization see
one spelling: envd's port goes to the core's envd adapter (``/envd/{id}{path}``), any other port
to the preview proxy (``/preview/{id}/{port}{path}``), like any preview URL.
"""

from __future__ import annotations

import re

ENVD_PORT = 49983
"""The port E2B's in-sandbox daemon (envd) listens on; the SDK names it in every data-plane call."""
CODE_INTERPRETER_PORT = 49999
"""The port of the code interpreter's server in the ``code-interpreter-v1`` template."""

SANDBOX_ID_HEADER = "e2b-sandbox-id"
SANDBOX_PORT_HEADER = "e2b-sandbox-port"
ACCESS_TOKEN_HEADER = "x-access-token"  # noqa: S105 - a header name
"""Carries the sandbox's ``envdAccessToken`` on every data-plane call."""
TRAFFIC_TOKEN_HEADER = "e2b-traffic-access-token"  # noqa: S105 - a header name
"""Carries the sandbox's ``trafficAccessToken`` to its other ports when it is not public."""
API_KEY_HEADER = "x-api-key"
"""The control plane's credential (our API key)."""

ENVD_VERSION = "0.5.7"
"""The envd version the control plane reports (``envdVersion``); the SDK gates features on it
(``e2b/envd/versions.py``), so it is the highest whose features the core serves: stdin and
``close_stdin``, no default user, octet-stream and gzip uploads (0.5.7), recursive watches.
Not 0.6.2 or later: file metadata (``X-Metadata-*``, kept as extended attributes) and
watch events carrying entries are not served."""

ENVD_PREFIX = "/envd"
"""The core's envd adapter is mounted at ``/envd/{sandbox_id}``."""

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_LABEL = re.compile(r"([0-9]{1,5})-([a-z0-9](?:[a-z0-9-]{0,126}[a-z0-9])?)")


PROCESS_SERVICE = "process.Process"
FILESYSTEM_SERVICE = "filesystem.Filesystem"
ENVD_UNARY_RPCS = (
    f"{PROCESS_SERVICE}/List",
    f"{PROCESS_SERVICE}/SendSignal",
    f"{PROCESS_SERVICE}/SendInput",
    f"{PROCESS_SERVICE}/CloseStdin",
    f"{PROCESS_SERVICE}/Update",
    f"{FILESYSTEM_SERVICE}/Stat",
    f"{FILESYSTEM_SERVICE}/ListDir",
    f"{FILESYSTEM_SERVICE}/MakeDir",
    f"{FILESYSTEM_SERVICE}/Move",
    f"{FILESYSTEM_SERVICE}/Remove",
    f"{FILESYSTEM_SERVICE}/CreateWatcher",
    f"{FILESYSTEM_SERVICE}/GetWatcherEvents",
    f"{FILESYSTEM_SERVICE}/RemoveWatcher",
)
"""envd's request/response Connect calls the core serves (``POST /envd/{id}/<rpc>``)."""
ENVD_STREAM_RPCS = (
    f"{PROCESS_SERVICE}/Start",
    f"{PROCESS_SERVICE}/Connect",
    f"{PROCESS_SERVICE}/StreamInput",
    f"{FILESYSTEM_SERVICE}/WatchDir",
)
"""envd's streaming Connect calls (server streams, and ``StreamInput``'s client stream)."""
ENVD_ROUTES: tuple[tuple[str, str], ...] = (
    ("GET", ENVD_PREFIX + "/{sandbox_id}/health"),
    ("GET", ENVD_PREFIX + "/{sandbox_id}/files"),
    ("POST", ENVD_PREFIX + "/{sandbox_id}/files"),
    *(("POST", f"{ENVD_PREFIX}/{{sandbox_id}}/{rpc}") for rpc in ENVD_UNARY_RPCS + ENVD_STREAM_RPCS),
)
"""Every envd route the core serves, as (method, path template): the envd adapter is raw ASGI,
so these are not in ``contracts/core_routes.py``; the gateway's payment gate adds them."""


class NotDataPlane(ValueError):
    """The request names a sandbox or port in a form we cannot route (a clear 400)."""


def data_plane_path(sandbox_id: str, port: int, path: str) -> str:
    """Our path for a data-plane request to ``port`` of ``sandbox_id`` (``path`` starts with /)."""
    if port == ENVD_PORT:
        return f"{ENVD_PREFIX}/{sandbox_id}{path}"
    return f"/preview/{sandbox_id}/{port}{path}"


def from_headers(sandbox_id: str | None, port: str | None) -> tuple[str, int] | None:
    """The sandbox and port the E2B headers name, or None when the request carries no
    ``E2b-Sandbox-Id`` (it is not a data-plane request). No port header means envd's.

    Raises:
        NotDataPlane: a malformed id or port.
    """
    if sandbox_id is None:
        return None
    if not _ID.fullmatch(sandbox_id):
        raise NotDataPlane("E2b-Sandbox-Id is not a sandbox id")
    return sandbox_id, _port(port if port is not None else str(ENVD_PORT))


def from_host(host: str, domain: str) -> tuple[str, int] | None:
    """The sandbox and port of a ``{port}-{id}.{domain}`` host (any ``:port`` suffix ignored),
    or None when the host is not under ``domain``.

    Raises:
        NotDataPlane: under ``domain`` but not ``{port}-{id}``.
    """
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.lower().rstrip(".")
    suffix = "." + domain.lower().strip(".")
    if not name.endswith(suffix):
        return None
    match = _LABEL.fullmatch(name[: -len(suffix)])
    if match is None:
        raise NotDataPlane(f"a host under {domain} must be {{port}}-{{sandbox id}}.{domain}")
    return match.group(2), _port(match.group(1))


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise NotDataPlane("the sandbox port must be a number from 1 to 65535")
    return int(text)
