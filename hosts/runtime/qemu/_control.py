"""One control message to vminit (``contracts.vm``): ``CONNECT 53`` on the agent socket, one
JSON line out, one reply line back. For ``Configure`` (the agent's environment, after boot)
and ``Poweroff`` (a clean stop), which the VMM cannot say itself."""

from __future__ import annotations

import asyncio
from pathlib import Path

from contracts import vm
from hosts.errors import RuntimeFailure


async def send(agent_socket: Path, message: vm.ControlMessage, *, timeout: float) -> None:  # noqa: ASYNC109
    """Send ``message`` and wait for vminit's answer.

    Raises:
        RuntimeFailure: no connection, no answer within ``timeout``, or vminit refused.
    """
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(str(agent_socket), limit=vm.MAX_CONTROL_LINE)
            try:
                writer.write(f"CONNECT {vm.CONTROL_PORT}\n".encode())
                await writer.drain()
                ok = await reader.readline()
                if not ok.startswith(b"OK "):
                    raise RuntimeFailure(f"vminit's control port refused the connection: {ok!r}")
                writer.write(vm.encode_control(message))
                await writer.drain()
                line = await reader.readline()
            finally:
                writer.close()
    except (OSError, TimeoutError) as exc:
        raise RuntimeFailure(f"control message {type(message).__name__} not answered: {exc!r}") from None
    if not line:
        raise RuntimeFailure(
            f"vminit closed the control connection without answering {type(message).__name__}"
        )
    reply = vm.decode_reply(line)
    if not reply.ok:
        raise RuntimeFailure(f"vminit refused {type(message).__name__}: {reply.error}")
