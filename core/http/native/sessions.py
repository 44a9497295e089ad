"""Persistent shell sessions, native shape (seed 000): ``/v1/sandboxes/{id}/sessions``. The
shell itself lives in the sandbox's agent (``guest/sessions.py``)."""

from __future__ import annotations

from litestar import delete, get, post
from litestar.di import Provide

from contracts import guest
from contracts.public import (
    CreateSession,
    SessionCommandList,
    SessionCommandOut,
    SessionExec,
    SessionList,
    SessionOut,
)
from core.http.common.deps import provide_sessions
from core.http.common.inputs import NativeController
from core.http.native.auth import provide_principal
from core.services.auth import Principal
from core.services.toolbox.sessions import SessionService


def _session_out(info: guest.SessionInfo) -> SessionOut:
    return SessionOut(id=info.session_id, cwd=info.cwd, alive=info.alive)


def _command_out(info: guest.SessionCommandInfo) -> SessionCommandOut:
    return SessionCommandOut(
        command_id=info.command_id,
        cmd=info.command,
        stdout=info.stdout,
        stderr=info.stderr,
        exit_code=info.exit_code,
        cwd=info.cwd,
        timed_out=info.timed_out,
    )


class NativeSessions(NativeController):
    path = "/v1/sandboxes/{sandbox_id:str}/sessions"
    dependencies = {
        "principal": Provide(provide_principal),
        "sessions": Provide(provide_sessions, sync_to_thread=False),
    }

    @post("/", status_code=201)
    async def create(
        self,
        sandbox_id: str,
        principal: Principal,
        sessions: SessionService,
        data: CreateSession | None = None,
    ) -> SessionOut:
        data = data or CreateSession()  # no body: all defaults
        info = await sessions.create(principal.org_id, sandbox_id, session_id=data.id, cwd=data.cwd)
        return _session_out(info)

    @get("/")
    async def list_sessions(
        self, sandbox_id: str, principal: Principal, sessions: SessionService
    ) -> SessionList:
        found = await sessions.list(principal.org_id, sandbox_id)
        return SessionList(items=[_session_out(info) for info in found])

    @get("/{session_id:str}")
    async def read(
        self, sandbox_id: str, session_id: str, principal: Principal, sessions: SessionService
    ) -> SessionOut:
        return _session_out(await sessions.get(principal.org_id, sandbox_id, session_id))

    @delete("/{session_id:str}", status_code=204)
    async def remove(
        self, sandbox_id: str, session_id: str, principal: Principal, sessions: SessionService
    ) -> None:
        await sessions.delete(principal.org_id, sandbox_id, session_id)

    @post("/{session_id:str}/exec", status_code=200)
    async def exec(
        self,
        sandbox_id: str,
        session_id: str,
        data: SessionExec,
        principal: Principal,
        sessions: SessionService,
    ) -> SessionCommandOut:
        """A timeout is a result (``timed_out``, exit code -9), as for exec."""
        info = await sessions.exec(
            principal.org_id,
            sandbox_id,
            session_id,
            command=data.cmd,
            timeout_ms=data.timeout_ms,
            run_async=False,
        )
        return _command_out(info)

    @get("/{session_id:str}/commands")
    async def commands(
        self, sandbox_id: str, session_id: str, principal: Principal, sessions: SessionService
    ) -> SessionCommandList:
        """The last 100 commands, oldest first, each stream cut at 8 KiB."""
        info = await sessions.get(principal.org_id, sandbox_id, session_id, output=True)
        return SessionCommandList(items=[_command_out(command) for command in info.commands])
