"""Persistent shells in a sandbox (``guest/sessions.py``): one ``bash`` per session, kept by
the agent, each command run with ``.`` so ``cd`` and ``export`` persist. Every call is
activity. A command's timeout is a result (``timed_out``, exit code -9), not an error: the
session lives on.
"""

from __future__ import annotations

from contracts import guest
from core.services.sandboxes import SandboxService


class SessionService:
    def __init__(self, sandboxes: SandboxService) -> None:
        self._sandboxes = sandboxes

    async def create(
        self, org_id: str, ref: str, *, session_id: str | None = None, cwd: str | None = None
    ) -> guest.SessionInfo:
        """A new shell (no ``session_id``: a new UUID); an id already taken is a 409."""
        msg = guest.SessionCreate(id=0, session_id=session_id, cwd=cwd)
        return (await self._sandboxes.ask(org_id, ref, msg, guest.SessionResult)).session

    async def list(self, org_id: str, ref: str) -> list[guest.SessionInfo]:
        msg = guest.SessionList(id=0)
        return (await self._sandboxes.ask(org_id, ref, msg, guest.SessionListResult)).sessions

    async def get(self, org_id: str, ref: str, session_id: str, *, output: bool = False) -> guest.SessionInfo:
        """The session and its last 100 commands (with ``output``, up to 8 KiB a stream)."""
        msg = guest.SessionGet(id=0, session_id=session_id, output=output)
        return (await self._sandboxes.ask(org_id, ref, msg, guest.SessionResult)).session

    async def delete(self, org_id: str, ref: str, session_id: str) -> guest.SessionInfo:
        """Kill every process of the shell's session and forget it."""
        msg = guest.SessionDelete(id=0, session_id=session_id)
        return (await self._sandboxes.ask(org_id, ref, msg, guest.SessionResult)).session

    async def exec(
        self, org_id: str, ref: str, session_id: str, *, command: str, timeout_ms: int, run_async: bool
    ) -> guest.SessionCommandInfo:
        """Run ``command`` in the session's shell; ``run_async`` answers at once (no exit code
        yet)."""
        msg = guest.SessionExec(
            id=0, session_id=session_id, command=command, timeout_ms=timeout_ms, run_async=run_async
        )
        return (await self._sandboxes.ask(org_id, ref, msg, guest.SessionCommandResult)).command

    async def command(
        self, org_id: str, ref: str, session_id: str, command_id: str, *, logs: bool = False
    ) -> guest.SessionCommandInfo:
        """A command's state; with ``logs``, its output so far (up to 1 MiB a stream)."""
        msg: guest.HostToGuest = (
            guest.SessionLogs(id=0, session_id=session_id, command_id=command_id)
            if logs
            else guest.SessionCommand(id=0, session_id=session_id, command_id=command_id)
        )
        return (await self._sandboxes.ask(org_id, ref, msg, guest.SessionCommandResult)).command
