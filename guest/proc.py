"""Process streams (``proc.spawn`` in ``contracts/guest.py``): one process, its stdio piped
over a stream connection of its own. The SSH gateway runs ``ssh host cmd``, SFTP (the
sandbox's own ``sftp-server``) and scp on them.

The process is an entry of the agent's process registry (``guest/processes.py``), started
with this stream attached before any output is read, so the stream gets all of it. Threads:
the connection's reader thread (the one that called ``spawn``) copies the host's binary
frames into the process's stdin, so a process that does not read its input stops the
reader, and the transport's flow control then stops the host. The registry's pumps send
what the process writes, prefixed with the pipe's tag byte, so a slow host stops the
process at its next write; its waiter sends ``proc.exited`` once the process exited and both
pipes ended. The host then closes the connection, which ends the reader's loop. (The agent
does not shut the connection itself: input the host sent meanwhile would then be unread at
the close, and the host's failed write would discard the last frames before it read them.)

Cleanup. Unlike a ``proc.start`` stream, the host's leaving before the process ended kills
the process's whole session (SIGHUP, then SIGKILL after the grace period, as for
terminals): an ``ssh host sleep 1000`` whose client is gone leaves nothing behind.
"""

from __future__ import annotations

from guest import framing, processes


def spawn(request: framing.ProcSpawnRequest, channel: processes.Client, base_env: dict[str, str]) -> None:
    """Run a process stream to its end (see the module doc)."""
    try:
        process = processes.start(
            request.argv, env=request.env, cwd=request.cwd, base_env=base_env, client=(channel, request.id)
        )
    except processes.ProcError as exc:
        channel.send(framing.error(request.id, exc.code, str(exc)))
        return
    try:
        processes.relay_input(process, channel)
    finally:
        process.detach(channel)
        process.kill()  # nothing may outlive the host's stream
