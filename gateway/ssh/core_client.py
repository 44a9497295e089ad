"""The SSH gateway's client for the core's ``/internal/ssh/*`` routes (``contracts/ssh.py``):
the login check over HTTP, and one WebSocket per stream (terminal, process, tunnel).

This is the one place where ``httpx``'s and ``websockets``' errors become the gateway's:
a login the core cannot answer is refused (never allowed), and a relay the core closes
before it opened becomes ``RelayRefused`` with the core's (or hostd's) reason, which the
session shows the SSH user.
"""

from __future__ import annotations

import contextlib

import httpx
import msgspec
import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from contracts import guest, ssh

log = structlog.get_logger()

OPEN_TIMEOUT_S = 10.0
_auth_result = msgspec.json.Decoder(ssh.SshAuthResult)


class RelayRefused(Exception):
    """The core (or hostd behind it) would not open the stream; the message says why."""


class Relay:
    """An open stream: ``send`` bytes or text, ``recv`` until None (closed)."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws

    async def send(self, message: bytes | str) -> None:
        """Send one message; a stream that has gone away swallows it (``recv`` ends)."""
        with contextlib.suppress(ConnectionClosed):
            await self._ws.send(message)

    async def recv(self) -> bytes | str | None:
        try:
            return await self._ws.recv()
        except ConnectionClosed:
            return None

    @property
    def close_reason(self) -> str:
        return self._ws.close_reason or ""

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._ws.close()


class CoreClient:
    def __init__(self, core_url: str, gateway_token: str) -> None:
        self._url = core_url
        self._headers = {"authorization": f"Bearer {gateway_token}"}
        self._http = httpx.AsyncClient(base_url=core_url, headers=self._headers, timeout=10.0)

    async def authenticate(self, request: ssh.SshAuthRequest) -> str | None:
        """The sandbox a login opens, or None when refused (or the core cannot say)."""
        try:
            response = await self._http.post("/internal/ssh/auth", content=msgspec.json.encode(request))
        except httpx.HTTPError as exc:
            log.warning("ssh login check failed", error=type(exc).__name__)
            return None
        if response.status_code != 200:
            return None
        return _auth_result.decode(response.content).sandbox_id

    async def open(
        self, sandbox_id: str, route: str, opener: msgspec.Struct | None = None
    ) -> tuple[Relay, object]:
        """Open the relay ``route`` (``pty``, ``proc``, ``ports/{port}/tunnel``) of the sandbox;
        with ``opener``, send it and return the first reply (decoded ``guest.StreamReply``)."""
        url = self._url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        try:
            ws = await connect(
                f"{url}/internal/ssh/sandboxes/{sandbox_id}/{route}",
                additional_headers=self._headers,
                open_timeout=OPEN_TIMEOUT_S,
                compression=None,
                proxy=None,
                ping_interval=None,
                max_size=2 * guest.MAX_BINARY_FRAME,
            )
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise RelayRefused(f"the sandbox service did not answer ({type(exc).__name__})") from exc
        relay = Relay(ws)
        if opener is None:
            return relay, None
        await relay.send(msgspec.json.encode(opener).decode())
        first = await relay.recv()
        if not isinstance(first, str):
            reason = relay.close_reason or "the stream closed"
            await relay.close()
            raise RelayRefused(reason)
        try:
            reply = guest.decode_stream_reply(first.encode())
        except msgspec.DecodeError:
            await relay.close()
            raise RelayRefused("the sandbox answered with something unexpected") from None
        if isinstance(reply, guest.Error):
            await relay.close()
            raise RelayRefused(reply.message)
        return relay, reply

    async def close(self) -> None:
        await self._http.aclose()
