"""Preview routing: traffic for a server inside a sandbox goes to the core's ``/preview`` mount,
never priced and never paid, limited per sandbox.

Two spellings reach a sandbox's port (docs/network.md, "The gateway's preview routing"):

- by host, when ``DNAH_PREVIEW_DOMAIN`` is set: ``Host: {port}-{id}.{domain}``, any path →
  the core's ``/preview/{id}/{port}{path}`` with ``x-dnah-preview-prefix: ""`` (the sandbox's
  server sees its own paths);
- by path: ``/preview/{id}/{port}/{rest}`` → the core as is, with
  ``x-dnah-preview-prefix: /preview/{id}/{port}`` (the core needs it for cookie paths and
  redirects).

E2B's SDKs name the sandbox and port in ``E2b-Sandbox-Id``/``E2b-Sandbox-Port`` headers or in
the same ``{port}-{id}`` host (``gateway.e2b``): envd's port (49983) is API traffic, rewritten to
the core's ``/envd/{id}{path}`` and passed to the API app (priced like any route); any other
port is preview traffic as above, with an empty prefix.

``api.{domain}`` is API traffic, as the domain itself is (E2B's SDKs call the control plane
there when configured with the domain alone).

A Host inside the preview domain whose label is not ``{port}-{id}`` or ``api``, or a ``/preview`` path
that is not ``/preview/{id}/{port}[/…]``, is a 400: such a request is never passed on as API
traffic. Client-sent ``x-dnah-*`` headers (and ``x-forwarded-prefix``) are dropped first, except
``x-dnah-preview-token``, a credential the core accepts. Who may see the sandbox is the core's
decision; the gateway only routes.

The router sits just inside the guard: it also refuses smuggling-prone requests for every
route (``gateway.framing``) before anything is routed.
"""

from __future__ import annotations

import re
import time
from urllib.parse import unquote_to_bytes

import msgspec

from gateway import e2b
from gateway.forward import (
    Forwarder,
    Receive,
    Scope,
    Send,
    bind_client_request_id,
    has_dot_segment,
    log_request,
    prepare,
)
from gateway.framing import deny, host_of, refusal
from gateway.ratelimit import RateLimiter, noting, refused, with_headers
from gateway.wsforward import forward_websocket
from guard import ASGIApp

PREFIX_HEADER = b"x-dnah-preview-prefix"
TOKEN_HEADER = b"x-dnah-preview-token"
API_LABEL = b"api"
"""``api.{domain}`` is the API itself: where E2B's SDKs send control-plane calls when only
``E2B_DOMAIN`` is set (``https://api.{domain}``). No ``{port}-{id}`` label can be it."""
_LABEL = re.compile(rb"([0-9]{1,5})-([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)")
_PATH = re.compile(rb"/preview/([A-Za-z0-9](?:[A-Za-z0-9_-]{0,127}))/([0-9]{1,5})(/.*)?", re.DOTALL)


class Target(msgspec.Struct, frozen=True):
    """Where a preview request goes: the sandbox, its port, the core's path, the prefix."""

    sandbox_id: str
    port: int
    path: bytes
    prefix: bytes


class Envd(msgspec.Struct, frozen=True):
    """An E2B envd request (``gateway.e2b``): API traffic to the core's ``path``."""

    sandbox_id: str
    path: bytes


class Malformed(msgspec.Struct, frozen=True):
    code: str
    message: str


def split_domain(domain: str | None) -> tuple[bytes, bytes | None] | None:
    """``preview.localhost:3000`` → (``preview.localhost``, ``3000``)."""
    if domain is None:
        return None
    name, _, port = domain.encode().partition(b":")
    return name, port or None


def route(scope: Scope, domain: tuple[bytes, bytes | None] | None) -> Target | Envd | Malformed | None:
    """The preview or envd target of a request, why it is a malformed one, or None (API)."""
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
    by_host = _by_host(scope, domain)
    if isinstance(by_host, Malformed):
        return by_host
    named = e2b.agree(by_host, e2b.named_by_headers(scope["headers"]))
    if isinstance(named, e2b.Conflict):
        return Malformed(named.code, named.message)
    if named is not None:
        sandbox_id, port = named
        path = e2b.core_path(sandbox_id, port, raw_path)
        return Envd(sandbox_id, path) if e2b.is_envd(port) else Target(sandbox_id, port, path, b"")
    # The decoded path decides whether it is preview traffic (the core routes on it too).
    decoded = unquote_to_bytes(raw_path)
    if decoded != b"/preview" and not decoded.startswith(b"/preview/"):
        return None
    match = _PATH.fullmatch(raw_path)
    if match is None or not 1 <= int(match[2]) <= 65535:
        return Malformed("invalid_preview_path", "a preview path is /preview/{sandbox id}/{port}/...")
    prefix = b"/preview/" + match[1] + b"/" + match[2]
    return Target(match[1].decode(), int(match[2]), raw_path, prefix)


def _by_host(scope: Scope, domain: tuple[bytes, bytes | None] | None) -> tuple[str, int] | Malformed | None:
    """The sandbox and port a ``{port}-{id}.{domain}`` Host names (None: not such a host)."""
    host = host_of(scope)
    if domain is None or host is None:
        return None
    name, _, host_port = host.partition(b":")
    suffix, wanted_port = domain
    if not name.endswith(b"." + suffix) or (wanted_port is not None and host_port != wanted_port):
        return None
    label = name[: -len(suffix) - 1]
    if label == API_LABEL:
        return None
    match = _LABEL.fullmatch(label)
    if match is None or not 1 <= int(match[1]) <= 65535:
        return Malformed("invalid_preview_host", "a preview host is {port}-{sandbox id}.{domain}")
    return match[2].decode(), int(match[1])


def preview_router(
    app: ASGIApp, forwarder: Forwarder, core_url: str, limiter: RateLimiter, domain: str | None
) -> ASGIApp:
    """``app`` (the API) behind the framing checks and the preview routes."""
    suffix = split_domain(domain)

    async def routing(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await app(scope, receive, send)
            return
        problem = refusal(scope)
        if problem is not None:
            await _refuse(scope, receive, send, *problem)
            return
        target = route(scope, suffix)
        if isinstance(target, (Target, Envd)) and has_dot_segment(target.path):
            # httpx would resolve them before sending: /preview/x/1/../../v1/… is the API
            target = Malformed("invalid_path", "path has . or .. segments")
        if target is None:
            await app(scope, receive, send)
        elif isinstance(target, Malformed):
            await _refuse(scope, receive, send, 400, target.code, target.message)
        elif isinstance(target, Envd):
            await app(e2b.rewrite(scope, target.path), receive, send)
        else:
            await _preview(scope, receive, send, target, forwarder, core_url, limiter)

    return routing


async def _preview(
    scope: Scope,
    receive: Receive,
    send: Send,
    target: Target,
    forwarder: Forwarder,
    core_url: str,
    limiter: RateLimiter,
) -> None:
    headers = [
        (name, value)
        for name, value in scope["headers"]
        if name not in e2b.DROPPED and (not name.startswith(b"x-dnah-") or name == TOKEN_HEADER)
    ]
    headers.append((PREFIX_HEADER, target.prefix))
    mapped = {
        **scope,
        "raw_path": target.path,
        "path": unquote_to_bytes(target.path).decode("utf-8", "replace"),
    }
    mapped["headers"] = headers
    with noting() as noted:
        decision = await limiter.for_sandbox(target.sandbox_id)
        if decision is not None and not decision.allowed:
            await refused(scope, receive, send, decision)
            return
        send = with_headers(send, noted)
        if scope["type"] == "websocket":
            await forward_websocket(mapped, receive, send, core_url, None)
            return
        started = time.perf_counter()
        upstream = prepare(mapped, core_url)
        outcome = await forwarder.forward(upstream, receive, send)
        log_request(upstream.method, target.path.decode("latin-1"), outcome.status, started, outcome.error)


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, code: str, message: str) -> None:
    started = time.perf_counter()
    raw_id = next((value for name, value in scope["headers"] if name == b"x-request-id"), None)
    request_id = bind_client_request_id(raw_id)
    await deny(scope, receive, send, status, code, message, request_id)
    method = scope.get("method", "WS") if scope["type"] == "http" else "WS"
    log_request(method, (scope.get("raw_path") or b"").decode("latin-1"), status, started, code)
