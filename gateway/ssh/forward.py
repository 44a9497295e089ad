"""Local port forwarding (``ssh -L LOCAL:localhost:PORT``): each ``direct-tcpip`` channel is a
raw TCP connection to ``PORT`` inside the sandbox, through the core's relay to hostd's port
tunnel (``WS /sandboxes/{id}/ports/{port}/tunnel``: binary messages both ways, either end
closing closes the other).

SSH channels can half-close, the tunnel cannot: when the SSH client ends its direction, the
gateway stops sending and waits for the sandbox's side to finish (an HTTP server answers and
closes); when the sandbox's side closes, the channel is closed. A port nothing listens on is
refused by hostd, which closes the tunnel: the client sees the channel closed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import asyncssh
import structlog

from gateway.ssh.core_client import CoreClient, Relay, RelayRefused

log = structlog.get_logger()

READ_CHUNK = 64 * 1024

TunnelHandler = Callable[[asyncssh.SSHReader[bytes], asyncssh.SSHWriter[bytes]], Awaitable[None]]


def tunnel_handler(core: CoreClient, sandbox_id: str, port: int) -> TunnelHandler:
    """The channel handler asyncssh runs for one forwarded connection."""

    async def handle(reader: asyncssh.SSHReader[bytes], writer: asyncssh.SSHWriter[bytes]) -> None:
        try:
            relay, _ = await core.open(sandbox_id, f"ports/{port}/tunnel")
        except RelayRefused as exc:
            log.info("ssh tunnel refused", sandbox_id=sandbox_id, port=port, reason=str(exc))
            writer.close()
            return
        outgoing = asyncio.create_task(_client_to_sandbox(reader, relay))
        try:
            await _sandbox_to_client(relay, writer)
        finally:
            outgoing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await outgoing
            await relay.close()
            writer.close()

    return handle


async def _client_to_sandbox(reader: asyncssh.SSHReader[bytes], relay: Relay) -> None:
    while True:
        data = await reader.read(READ_CHUNK)
        if not data:
            return
        await relay.send(bytes(data))


async def _sandbox_to_client(relay: Relay, writer: asyncssh.SSHWriter[bytes]) -> None:
    while True:
        message = await relay.recv()
        if message is None:
            return
        if isinstance(message, bytes) and message:
            writer.write(message)
            await writer.drain()
