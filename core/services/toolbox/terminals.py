"""Terminals in a sandbox (``guest/pty.py``): PTY sessions managed through the relay, and
attached to as byte streams of their own (``core/terminal_client.py``). Every call is
activity; typing in an attached terminal is too, at most one write a second (``activity``).
"""

from __future__ import annotations

import msgspec

from contracts import guest
from contracts.fields import EnvMap, Name, Path
from core.services.sandboxes import SandboxService
from core.terminal_client import HostTerminal


class TerminalOpen(msgspec.Struct, frozen=True, kw_only=True):
    """What attaching to a terminal takes, with the agent's own constraints, so an adapter
    that builds one from a query string can check it (``contracts.fields.checked``) and answer
    a 400 in its own words. With ``create`` a new ephemeral session of that size is made,
    killed when its last client detaches; without it the others are ignored."""

    session_id: Name
    create: bool = False
    cols: guest.TermSize = 80
    rows: guest.TermSize = 24
    cwd: Path | None = None
    env: EnvMap = {}


class TerminalService:
    def __init__(self, sandboxes: SandboxService) -> None:
        self._sandboxes = sandboxes

    async def create(
        self,
        org_id: str,
        ref: str,
        *,
        session_id: str | None = None,
        cols: int = 80,
        rows: int = 24,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        lazy_start: bool = False,
    ) -> guest.PtyInfo:
        """A session that outlives its clients (no ``session_id``: a new UUID); an id already
        taken is a 409. With ``lazy_start`` the shell starts at the first attach."""
        msg = guest.PtyCreate(
            id=0,
            session_id=session_id,
            cols=cols,
            rows=rows,
            cwd=cwd,
            env=env or {},
            lazy_start=lazy_start,
        )
        return (await self._sandboxes.ask(org_id, ref, msg, guest.PtyResult)).session

    async def list(self, org_id: str, ref: str) -> list[guest.PtyInfo]:
        return (await self._sandboxes.ask(org_id, ref, guest.PtyList(id=0), guest.PtyListResult)).sessions

    async def get(self, org_id: str, ref: str, session_id: str) -> guest.PtyInfo:
        msg = guest.PtyGet(id=0, session_id=session_id)
        return (await self._sandboxes.ask(org_id, ref, msg, guest.PtyResult)).session

    async def kill(self, org_id: str, ref: str, session_id: str) -> guest.PtyInfo:
        """Kill every process of the session and forget it; attached clients see the exit."""
        msg = guest.PtyKill(id=0, session_id=session_id)
        return (await self._sandboxes.ask(org_id, ref, msg, guest.PtyResult)).session

    async def resize(self, org_id: str, ref: str, session_id: str, cols: int, rows: int) -> guest.PtyInfo:
        """A session whose shell has exited is a 409."""
        msg = guest.PtyResize(id=0, session_id=session_id, cols=cols, rows=rows)
        return (await self._sandboxes.ask(org_id, ref, msg, guest.PtyResult)).session

    async def attach(
        self, org_id: str, ref: str, request: TerminalOpen
    ) -> tuple[str, HostTerminal, guest.PtyInfo]:
        """Attach as ``request`` says; the sandbox's id, the terminal and the session. The
        caller owns the terminal and must close it (which detaches)."""
        opener = guest.PtyAttach(id=0, **msgspec.structs.asdict(request))
        return await self._sandboxes.pty_attach(org_id, ref, opener)

    async def activity(self, sandbox_id: str) -> None:
        """Typing in a terminal is activity: one conditional write a second at most."""
        await self._sandboxes.pty_activity(sandbox_id)
