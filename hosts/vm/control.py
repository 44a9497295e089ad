"""The host's end of vminit's control port (``contracts.vm``): one message, one answer.

A control stream is opened like an agent stream, on the sandbox's agent socket (QEMU: the
``SerialMuxer``'s; Cloud Hypervisor: its hybrid-vsock socket) with ``CONNECT 53``; then one
JSON line goes out and one comes back.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from contracts import vm
from hosts.errors import AgentUnavailable, RuntimeFailure

DEFAULT_TIMEOUT = 30.0


async def send(agent_socket: Path, message: vm.ControlMessage, *, timeout: float = DEFAULT_TIMEOUT) -> None:  # noqa: ASYNC109
    """Send ``message`` to vminit and wait for its answer.

    Raises:
        AgentUnavailable: no connection, a refused port, or no answer within ``timeout``.
        RuntimeFailure: vminit answered with an error (its message is quoted).
    """
    name = type(message).__name__
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(str(agent_socket), limit=vm.MAX_CONTROL_LINE)
            try:
                writer.write(b"CONNECT %d\n" % vm.CONTROL_PORT)
                await writer.drain()
                ok = await reader.readline()
                if ok.split() != [b"OK", b"%d" % vm.CONTROL_PORT]:
                    raise AgentUnavailable(f"vminit's control port refused {name}: {ok[:64]!r}")
                writer.write(vm.encode_control(message))
                await writer.drain()
                line = await reader.readline()
            finally:
                writer.close()
    except (OSError, TimeoutError, ValueError) as exc:
        raise AgentUnavailable(f"control message {name} not answered: {exc!r}") from None
    if not line:
        raise AgentUnavailable(f"vminit closed the control stream without answering {name}")
    reply = vm.decode_reply(line)
    if not reply.ok:
        raise RuntimeFailure(f"vminit refused {name}: {reply.error}")
