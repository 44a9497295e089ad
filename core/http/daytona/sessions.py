"""Persistent shell sessions, Daytona's shape (its toolbox API): ``/toolbox/{id}/process/session``
as the SDK spells it, and ``/process/sessions`` as seed 004 lists it (the gateway maps
``/sandbox/{id}/toolbox/…`` onto ``/toolbox/{id}/…``); both spellings are served by the same
handlers."""

from __future__ import annotations

from litestar import Response, delete, get, post
from litestar.di import Provide

from contracts import guest
from contracts.public import (
    DaytonaCommandLogs,
    DaytonaCreateSession,
    DaytonaSession,
    DaytonaSessionCommand,
    DaytonaSessionExecute,
    DaytonaSessionExecuteResult,
    DaytonaSessionStarted,
)
from core.errors import ExecTimeout
from core.http.common.deps import provide_sessions
from core.http.common.inputs import DaytonaController
from core.http.daytona.auth import provide_principal
from core.services.auth import Principal
from core.services.toolbox.sessions import SessionService

DAYTONA_SYNC_TIMEOUT_S = 600
"""Daytona's session exec has no timeout field; a synchronous command gets this long (as
``/process/execute`` without one) and answers 408 past it. Asynchronous ones have none."""


def _daytona_session(info: guest.SessionInfo) -> DaytonaSession:
    return DaytonaSession(
        session_id=info.session_id,
        commands=[
            DaytonaSessionCommand(id=c.command_id, command=c.command, exit_code=c.exit_code)
            for c in info.commands
        ],
    )


class DaytonaSessions(DaytonaController):
    path = "/toolbox/{sandbox_id:str}/process"
    dependencies = {
        "principal": Provide(provide_principal),
        "sessions": Provide(provide_sessions, sync_to_thread=False),
    }

    @post(["/session", "/sessions"], status_code=201)
    async def create(
        self, sandbox_id: str, data: DaytonaCreateSession, principal: Principal, sessions: SessionService
    ) -> None:
        """201 with no body; 409 if the id is taken."""
        await sessions.create(principal.org_id, sandbox_id, session_id=data.session_id, cwd=None)

    @get(["/session", "/sessions"])
    async def list_sessions(
        self, sandbox_id: str, principal: Principal, sessions: SessionService
    ) -> list[DaytonaSession]:
        return [_daytona_session(info) for info in await sessions.list(principal.org_id, sandbox_id)]

    @get(["/session/{session_id:str}", "/sessions/{session_id:str}"])
    async def read(
        self, sandbox_id: str, session_id: str, principal: Principal, sessions: SessionService
    ) -> DaytonaSession:
        return _daytona_session(await sessions.get(principal.org_id, sandbox_id, session_id))

    @delete(["/session/{session_id:str}", "/sessions/{session_id:str}"], status_code=204)
    async def remove(
        self, sandbox_id: str, session_id: str, principal: Principal, sessions: SessionService
    ) -> None:
        await sessions.delete(principal.org_id, sandbox_id, session_id)

    @post(["/session/{session_id:str}/exec", "/sessions/{session_id:str}/exec"], status_code=200)
    async def exec(
        self,
        sandbox_id: str,
        session_id: str,
        data: DaytonaSessionExecute,
        principal: Principal,
        sessions: SessionService,
    ) -> Response[DaytonaSessionExecuteResult | DaytonaSessionStarted]:
        """Sync: 200 with the output (408 past ``DAYTONA_SYNC_TIMEOUT_S``); async: 202 with the
        command's id, its logs and exit code fetched later."""
        run_async = bool(data.run_async or data.async_)
        info = await sessions.exec(
            principal.org_id,
            sandbox_id,
            session_id,
            command=data.command,
            timeout_ms=0 if run_async else DAYTONA_SYNC_TIMEOUT_S * 1000,
            run_async=run_async,
        )
        if run_async:
            return Response(DaytonaSessionStarted(cmd_id=info.command_id), status_code=202)
        if info.timed_out:
            raise ExecTimeout(f"command timed out after {DAYTONA_SYNC_TIMEOUT_S} s")
        result = DaytonaSessionExecuteResult(
            cmd_id=info.command_id,
            output=info.stdout + info.stderr,
            stdout=info.stdout,
            stderr=info.stderr,
            exit_code=info.exit_code if info.exit_code is not None else -1,
        )
        return Response(result, status_code=200)

    @get(
        [
            "/session/{session_id:str}/command/{command_id:str}",
            "/sessions/{session_id:str}/command/{command_id:str}",
        ]
    )
    async def command(
        self,
        sandbox_id: str,
        session_id: str,
        command_id: str,
        principal: Principal,
        sessions: SessionService,
    ) -> DaytonaSessionCommand:
        info = await sessions.command(principal.org_id, sandbox_id, session_id, command_id)
        return DaytonaSessionCommand(id=info.command_id, command=info.command, exit_code=info.exit_code)

    @get(
        [
            "/session/{session_id:str}/command/{command_id:str}/logs",
            "/sessions/{session_id:str}/command/{command_id:str}/logs",
        ]
    )
    async def logs(
        self,
        sandbox_id: str,
        session_id: str,
        command_id: str,
        principal: Principal,
        sessions: SessionService,
    ) -> DaytonaCommandLogs:
        info = await sessions.command(principal.org_id, sandbox_id, session_id, command_id, logs=True)
        return DaytonaCommandLogs(output=info.stdout + info.stderr, stdout=info.stdout, stderr=info.stderr)
