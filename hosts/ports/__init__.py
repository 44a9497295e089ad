"""hostd's routes into the ports of a sandbox (docs/network.md, "Reaching ports inside a sandbox").

- ``ANY /sandboxes/{id}/ports/{port}/http/{rest}``: an HTTP reverse proxy (``http.py``);
- ``WS /sandboxes/{id}/ports/{port}/http/{rest}``: a WebSocket proxy (``sockets.py``);
- ``WS /sandboxes/{id}/ports/{port}/tunnel``: a raw TCP byte pipe (``sockets.py``).

Raw ASGI in front of Litestar (whose routing has no "any method, any path below" handler
with path parameters): ``PortRoutes`` takes these paths and passes every other request on.
The same bearer-token check as every hostd route wraps them (``wrap``). Where a connection
goes is the runtime's ``PortEndpoint`` (``LocatePort``); ``netns.py`` opens it inside the
sandbox's netns. Errors: a port outside 1-65535 or not a number 400, an unknown sandbox
404, one not running 409 (``HostErrorBody``, or on a WebSocket a close with 4000 + that
status).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from guard.reply import ASGIApp, Receive, Scope, Send
from hosts.commands import LocatePort
from hosts.controller import HostController
from hosts.errors import HostError
from hosts.ports import http, sockets

_ROUTE = re.compile(rb"/sandboxes/([^/]*)/ports/([^/]*)/(?:(tunnel)|http(/.*)?)", re.DOTALL)


def is_port_route(path: str) -> bool:
    """Whether ``path`` (decoded, as the ASGI scope has it) is one of these routes, whose
    request bodies are byte streams for the sandbox's server."""
    return path.startswith("/sandboxes/") and _ROUTE.fullmatch(path.encode("utf-8", "replace")) is not None


def parse_port(raw: bytes) -> int | None:
    """The port named by ``raw``, or None unless it is 1-65535 in decimal digits."""
    if not raw.isdigit() or len(raw) > 5:
        return None
    port = int(raw)
    return port if 1 <= port <= 65535 else None


class PortRoutes:
    """ASGI: the port routes, wrapped by ``wrap`` (hostd's auth and logging); anything else
    goes to ``fallback``. ``controller`` returns hostd's controller (set at startup)."""

    def __init__(
        self, fallback: ASGIApp, controller: Callable[[], HostController], wrap: Callable[[ASGIApp], ASGIApp]
    ) -> None:
        self._fallback = fallback
        self._controller = controller
        self._routes = wrap(self._serve)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and _ROUTE.fullmatch(_raw_path(scope)):
            await self._routes(scope, receive, send)
        else:
            await self._fallback(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = _ROUTE.fullmatch(_raw_path(scope))
        assert match is not None
        raw_id, raw_port, is_tunnel, rest = match.groups()
        websocket = scope["type"] == "websocket"
        port = parse_port(raw_port)
        if port is None:
            message = f"port {raw_port.decode('latin-1')!r} is not a number from 1 to 65535"
            await _refuse(receive, send, websocket, 400, "bad_request", message)
            return
        if is_tunnel and not websocket:
            await _refuse(receive, send, False, 400, "bad_request", "the tunnel is a WebSocket route")
            return
        try:
            endpoint = await self._controller().handle(LocatePort(sandbox_id=raw_id.decode("latin-1")))
        except HostError as exc:
            await _refuse(receive, send, websocket, exc.status_code, exc.code, str(exc) or exc.code)
            return
        if is_tunnel:
            await sockets.tunnel(receive, send, endpoint, port)
        elif websocket:
            await sockets.proxy(scope, receive, send, endpoint, port, rest or b"")
        else:
            await http.forward(scope, receive, send, endpoint, port, rest or b"")


def _raw_path(scope: Scope) -> bytes:
    raw = scope.get("raw_path")
    return raw if raw else scope["path"].encode("utf-8")


async def _refuse(
    receive: Receive, send: Send, websocket: bool, status: int, code: str, message: str
) -> None:
    if websocket:
        await sockets.refuse(receive, send, status, message)
    else:
        await http.send_error(send, status, code, message)
