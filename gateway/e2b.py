"""E2B's data plane at the edge: which sandbox and port a request names, and its path at the core.

The E2B SDKs send every envd and code-interpreter call either to one URL naming the sandbox in
headers (``E2b-Sandbox-Id``, ``E2b-Sandbox-Port``: the SDK's ``E2B_SANDBOX_URL`` mode) or to
the host ``{port}-{id}.{domain}`` (the same hosts as preview URLs). ``contracts.e2b`` says where
each goes; this module reads the headers off an ASGI scope, compares them with what the host
names, and builds the request the rest of the gateway then routes, prices and forwards:

- envd's port (49983) becomes the core's ``/envd/{id}{path}``: API traffic, priced in the
  payment modes like any other route (``pricing/default.toml``);
- any other port becomes ``/preview/{id}/{port}{path}``: preview traffic (``gateway.preview``),
  never priced; the code interpreter (49999) is reached this way, authorized by the sandbox's
  tokens, as every preview is.

A request naming a sandbox both ways must name the same sandbox and port: ``Host:
3000-a.{domain}`` with ``E2b-Sandbox-Id: b`` is refused (400), never routed by either. The E2B
headers are dropped once read, so the core (which routes on them too) sees the rewritten path
only once; ``X-Access-Token`` and ``E2B-Traffic-Access-Token`` pass on untouched, they are the
core's to check.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

import msgspec

from contracts import e2b
from gateway.forward import Headers, Scope

_ID = e2b.SANDBOX_ID_HEADER.encode()
_PORT = e2b.SANDBOX_PORT_HEADER.encode()
DROPPED = frozenset({_ID, _PORT, b"x-forwarded-prefix"})
"""Headers a data-plane request loses on its way to the core (with every ``x-dnah-*`` one,
which only the gateway sets)."""


class Conflict(msgspec.Struct, frozen=True):
    """Why the E2B headers cannot be routed (a 400 naming ``code``)."""

    code: str
    message: str


def named_by_headers(headers: Headers) -> tuple[str, int] | Conflict | None:
    """The sandbox and port the E2B headers name, None when there is no ``E2b-Sandbox-Id``."""
    ids = [value for name, value in headers if name == _ID]
    ports = [value for name, value in headers if name == _PORT]
    if len(ids) > 1 or len(ports) > 1:
        return Conflict("invalid_e2b_headers", "E2b-Sandbox-Id and E2b-Sandbox-Port may each be sent once")
    if not ids:
        return None
    try:
        named = e2b.from_headers(ids[0].decode("latin-1"), ports[0].decode("latin-1") if ports else None)
    except e2b.NotDataPlane as exc:
        return Conflict("invalid_e2b_headers", str(exc))
    assert named is not None
    return named


def agree(
    by_host: tuple[str, int] | None, by_headers: tuple[str, int] | Conflict | None
) -> tuple[str, int] | Conflict | None:
    """The one target both spellings name; a Conflict when they name different ones."""
    if isinstance(by_headers, Conflict):
        return by_headers
    if by_host is not None and by_headers is not None and by_host != by_headers:
        return Conflict(
            "e2b_routing_conflict",
            "the Host and the E2b-Sandbox-Id/E2b-Sandbox-Port headers name different sandboxes or ports",
        )
    return by_headers or by_host


def is_envd(port: int) -> bool:
    return port == e2b.ENVD_PORT


def rewrite(scope: Scope, path: bytes) -> Scope:
    """``scope`` with the core's ``path`` (raw, still encoded) and without the headers only the
    gateway may set or that would route the request a second time at the core."""
    headers = [
        (name, value)
        for name, value in scope["headers"]
        if name not in DROPPED and not name.startswith(b"x-dnah-")
    ]
    return {
        **scope,
        "raw_path": path,
        "path": unquote_to_bytes(path).decode("utf-8", "replace"),
        "headers": headers,
    }


def core_path(sandbox_id: str, port: int, raw_path: bytes) -> bytes:
    """``contracts.e2b.data_plane_path`` on the raw (encoded) path."""
    return e2b.data_plane_path(sandbox_id, port, raw_path.decode("latin-1")).encode("latin-1")


def envd_sandbox(raw_path: bytes) -> str | None:
    """The sandbox of a request to the core's envd adapter (``/envd/{id}/…``), else None.
    Read as the core's router reads it: decoded, empty segments dropped."""
    segments = [seg for seg in unquote_to_bytes(raw_path.split(b"?", 1)[0]).split(b"/") if seg]
    if len(segments) < 2 or segments[0] != e2b.ENVD_PREFIX.strip("/").encode():
        return None
    return segments[1].decode("utf-8", "replace")
