"""SSH sessions: a login shell on a terminal, a command, or the ``sftp`` subsystem.

Each session is one stream through the core's relay to the sandbox:

- **shell with a terminal** (``ssh host``, ``ssh -t host``): an ephemeral terminal
  (``guest.PtyAttach`` with ``create``) of the terminal type and size the client asked for;
  keystrokes go in as they come, output comes back, a window change becomes a
  ``guest.PtyResize``; the shell's exit status is the session's. The terminal dies with the
  session, every process it started with it.
- **a command** (``ssh host cmd``): ``bash -c cmd`` on a process stream (``guest.ProcSpawn``),
  with stdout and stderr kept apart and stdin streamed (the client's end of input closes
  the process's stdin). A command runs without a terminal even when one was requested.
- **shell without a terminal** (``ssh host < script``): ``bash -l`` on a process stream.
- **sftp** (``sftp``, and OpenSSH 9's ``scp``, which speaks SFTP): the sandbox's own
  ``sftp-server`` on a process stream, so files are read and written by the sandbox user,
  inside the sandbox, exactly as its shell would.

The exit status is passed on (a process killed by a signal as the signal). When the client
goes away the stream is closed, and the agent kills what the session was running.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
from collections.abc import Coroutine

import asyncssh
import msgspec
import structlog

from contracts import guest
from gateway.ssh.core_client import CoreClient, Relay, RelayRefused

log = structlog.get_logger()

READ_CHUNK = 64 * 1024
DEFAULT_TERM = "xterm-256color"
_reply = msgspec.json.Decoder(guest.StreamReply)


class SessionHandler:
    """asyncssh's ``process_factory``: one call per session channel."""

    def __init__(self, core: CoreClient, sftp_server: str, sandbox_key: str) -> None:
        self._core = core
        self._sftp_server = sftp_server
        self._sandbox_key = sandbox_key

    async def run(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        sandbox_id = process.get_extra_info(self._sandbox_key)
        try:
            if process.subsystem is not None:
                if process.subsystem != "sftp":
                    _fail(process, f"subsystem {process.subsystem!r} is not offered\n")
                    return
                await self._process(process, sandbox_id, [self._sftp_server])
            elif process.command is not None:
                await self._process(process, sandbox_id, ["bash", "-c", process.command])
            elif process.get_terminal_type() is not None:
                await self._terminal(process, sandbox_id)
            else:
                await self._process(process, sandbox_id, ["bash", "-l"])
        except RelayRefused as exc:
            _fail(process, f"dnah: {exc}\n")
        except (
            _ClientGone,
            asyncssh.BreakReceived,
            asyncssh.SignalReceived,
            asyncssh.DisconnectError,
            OSError,
        ):
            _close(process)

    # a process stream -----------------------------------------------------------------------

    async def _process(
        self, process: asyncssh.SSHServerProcess[bytes], sandbox_id: str, argv: list[str]
    ) -> None:
        env = {k: v for k, v in _client_env(process).items() if k in ("LANG", "LC_ALL", "TERM")}
        relay, _ = await self._core.open(sandbox_id, "proc", guest.ProcSpawn(id=0, argv=argv, env=env))
        pump_in = asyncio.create_task(_stdin_to_proc(process, relay))
        try:
            code = await _unless_gone(process, _proc_output(process, relay))
        finally:
            pump_in.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump_in
            await relay.close()
        _exit(process, code)

    # a terminal -----------------------------------------------------------------------------

    async def _terminal(self, process: asyncssh.SSHServerProcess[bytes], sandbox_id: str) -> None:
        cols, rows, _, _ = process.get_terminal_size()
        env = {"TERM": process.get_terminal_type() or DEFAULT_TERM}
        session_id = "ssh-" + secrets.token_hex(8)
        opener = guest.PtyAttach(
            id=0,
            session_id=session_id,
            create=True,
            cols=min(max(cols or 80, 1), guest.PTY_MAX_SIZE),
            rows=min(max(rows or 24, 1), guest.PTY_MAX_SIZE),
            env=env,
        )
        relay, _ = await self._core.open(sandbox_id, "pty", opener)
        pump_in = asyncio.create_task(_keys_to_terminal(process, relay, session_id))
        try:
            code = await _unless_gone(process, _terminal_output(process, relay))
        finally:
            pump_in.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump_in
            await relay.close()
        _exit(process, code)


async def _stdin_to_proc(process: asyncssh.SSHServerProcess[bytes], relay: Relay) -> None:
    """The client's input to the process; its end closes the process's stdin."""
    while True:
        try:
            data = await process.stdin.read(READ_CHUNK)
        except asyncssh.TerminalSizeChanged:
            continue
        await relay.send(bytes(data))
        if not data:
            return


async def _proc_output(process: asyncssh.SSHServerProcess[bytes], relay: Relay) -> int | None:
    """The process's output to the client, each stream to its own; the exit code (None when
    the stream ended without one)."""
    while True:
        message = await relay.recv()
        if message is None:
            return None
        if isinstance(message, bytes):
            if not message:
                continue
            tag, data = message[0], message[1:]
            writer = process.stdout if tag == guest.PROC_STDOUT else process.stderr
            if data:
                writer.write(data)
                await writer.drain()
            continue
        with contextlib.suppress(msgspec.DecodeError):
            reply = _reply.decode(message)
            if isinstance(reply, guest.ProcExited):
                return reply.exit_code


async def _keys_to_terminal(process: asyncssh.SSHServerProcess[bytes], relay: Relay, session_id: str) -> None:
    while True:
        try:
            data = await process.stdin.read(READ_CHUNK)
        except asyncssh.TerminalSizeChanged as change:
            resize = guest.PtyResize(
                id=0,
                session_id=session_id,
                cols=min(max(change.width, 1), guest.PTY_MAX_SIZE),
                rows=min(max(change.height, 1), guest.PTY_MAX_SIZE),
            )
            await relay.send(msgspec.json.encode(resize).decode())
            continue
        if not data:
            return  # the client sent EOF: the shell goes on until it exits or the client leaves
        await relay.send(bytes(data))


async def _terminal_output(process: asyncssh.SSHServerProcess[bytes], relay: Relay) -> int | None:
    while True:
        message = await relay.recv()
        if message is None:
            return None
        if isinstance(message, bytes):
            process.stdout.write(message)
            await process.stdout.drain()
            continue
        with contextlib.suppress(msgspec.DecodeError):
            reply = _reply.decode(message)
            if isinstance(reply, guest.PtyExited):
                return reply.exit_code


class _ClientGone(Exception):
    """The SSH channel closed while the sandbox side still ran."""


async def _unless_gone(
    process: asyncssh.SSHServerProcess[bytes], output: Coroutine[object, object, int | None]
) -> int | None:
    """``output``'s result, unless the client's channel closes first (then ``_ClientGone``:
    the caller closes the stream, and the agent kills what ran)."""
    work = asyncio.ensure_future(output)
    gone = asyncio.ensure_future(process.channel.wait_closed())
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not work.done():
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await work
    if work.cancelled():
        raise _ClientGone
    return work.result()


def _client_env(process: asyncssh.SSHServerProcess[bytes]) -> dict[str, str]:
    env = process.env or {}
    return {str(k): str(v) for k, v in env.items()}


def _exit(process: asyncssh.SSHServerProcess[bytes], code: int | None) -> None:
    """End the session with the exit status, a killing signal, or 255 when the stream broke."""
    if code is None:
        with contextlib.suppress(OSError):
            process.stderr.write(b"dnah: the connection to the sandbox ended\n")
        process.exit(255)
    elif code < 0:
        try:
            name = signal.Signals(-code).name.removeprefix("SIG")
        except ValueError:
            process.exit(255)
            return
        process.exit_with_signal(name)
    else:
        process.exit(code & 0xFF)


def _fail(process: asyncssh.SSHServerProcess[bytes], message: str) -> None:
    with contextlib.suppress(OSError):
        process.stderr.write(message.encode())
    process.exit(255)


def _close(process: asyncssh.SSHServerProcess[bytes]) -> None:
    with contextlib.suppress(Exception):
        process.close()
