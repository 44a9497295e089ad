"""Persistent shell sessions over the service layer, in both API shapes.

Native (seed 000): ``/v1/sandboxes/{id}/sessions``. Daytona (its toolbox API):
``/toolbox/{id}/process/session`` as the SDK spells it, and ``/process/sessions`` as seed 004
lists it (the gateway maps ``/sandbox/{id}/toolbox/…`` onto ``/toolbox/{id}/…``); both
spellings are served by the same handlers. The shell itself lives in the sandbox's agent
(``guest/sessions.py``).
"""

from __future__ import annotations

from litestar import Response, delete, get, post
from litestar.di import Provide

from contracts import guest
from contracts.public import (
    CreateSession,
    DaytonaCommandLogs,
    DaytonaCreateSession,
    DaytonaSession,
    DaytonaSessionCommand,
    DaytonaSessionExecute,
    DaytonaSessionExecuteResult,
    DaytonaSessionStarted,
    SessionCommandList,
    SessionCommandOut,
    SessionExec,
    SessionList,
    SessionOut,
)
from core.errors import ExecTimeout
from core.http.deps import provide_principal, provide_sandboxes
from core.http.inputs import DaytonaController, NativeController
from core.services.auth import Principal
from core.services.sandboxes import SandboxService

DAYTONA_SYNC_TIMEOUT_S = 600
"""Daytona's session exec has no timeout field; a synchronous command gets this long (as
``/process/execute`` without one) and answers 408 past it. Asynchronous ones have none."""


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
        "sandboxes": Provide(provide_sandboxes, sync_to_thread=False),
    }

    @post("/", status_code=201)
    async def create(
        self,
        sandbox_id: str,
        principal: Principal,
        sandboxes: SandboxService,
        data: CreateSession | None = None,
    ) -> SessionOut:
        data = data or CreateSession()  # no body: all defaults
        info = await sandboxes.session_create(principal.org_id, sandbox_id, session_id=data.id, cwd=data.cwd)
        return _session_out(info)

    @get("/")
    async def list_sessions(
        self, sandbox_id: str, principal: Principal, sandboxes: SandboxService
    ) -> SessionList:
        found = await sandboxes.session_list(principal.org_id, sandbox_id)
        return SessionList(items=[_session_out(info) for info in found])

    @get("/{session_id:str}")
    async def read(
        self, sandbox_id: str, session_id: str, principal: Principal, sandboxes: SandboxService
    ) -> SessionOut:
        return _session_out(await sandboxes.session_get(principal.org_id, sandbox_id, session_id))

    @delete("/{session_id:str}", status_code=204)
    async def remove(
        self, sandbox_id: str, session_id: str, principal: Principal, sandboxes: SandboxService
    ) -> None:
        await sandboxes.session_delete(principal.org_id, sandbox_id, session_id)

    @post("/{session_id:str}/exec", status_code=200)
    async def exec(
        self,
        sandbox_id: str,
        session_id: str,
        data: SessionExec,
        principal: Principal,
        sandboxes: SandboxService,
    ) -> SessionCommandOut:
        """A timeout is a result (``timed_out``, exit code -9), as for exec."""
        info = await sandboxes.session_exec(
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
        self, sandbox_id: str, session_id: str, principal: Principal, sandboxes: SandboxService
    ) -> SessionCommandList:
        """The last 100 commands, oldest first, each stream cut at 8 KiB."""
        info = await sandboxes.session_get(principal.org_id, sandbox_id, session_id, output=True)
        return SessionCommandList(items=[_command_out(command) for command in info.commands])


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
        "sandboxes": Provide(provide_sandboxes, sync_to_thread=False),
    }

    @post(["/session", "/sessions"], status_code=201)
    async def create(
        self, sandbox_id: str, data: DaytonaCreateSession, principal: Principal, sandboxes: SandboxService
    ) -> None:
        """201 with no body; 409 if the id is taken."""
        await sandboxes.session_create(principal.org_id, sandbox_id, session_id=data.session_id, cwd=None)

    @get(["/session", "/sessions"])
    async def list_sessions(
        self, sandbox_id: str, principal: Principal, sandboxes: SandboxService
    ) -> list[DaytonaSession]:
        return [_daytona_session(info) for info in await sandboxes.session_list(principal.org_id, sandbox_id)]

    @get(["/session/{session_id:str}", "/sessions/{session_id:str}"])
    async def read(
        self, sandbox_id: str, session_id: str, principal: Principal, sandboxes: SandboxService
    ) -> DaytonaSession:
        return _daytona_session(await sandboxes.session_get(principal.org_id, sandbox_id, session_id))

    @delete(["/session/{session_id:str}", "/sessions/{session_id:str}"], status_code=204)
    async def remove(
        self, sandbox_id: str, session_id: str, principal: Principal, sandboxes: SandboxService
    ) -> None:
        await sandboxes.session_delete(principal.org_id, sandbox_id, session_id)

    @post(["/session/{session_id:str}/exec", "/sessions/{session_id:str}/exec"], status_code=200)
    async def exec(
        self,
        sandbox_id: str,
        session_id: str,
        data: DaytonaSessionExecute,
        principal: Principal,
        sandboxes: SandboxService,
    ) -> Response[DaytonaSessionExecuteResult | DaytonaSessionStarted]:
        """Sync: 200 with the output (408 past ``DAYTONA_SYNC_TIMEOUT_S``); async: 202 with the
        command's id, its logs and exit code fetched later."""
        run_async = bool(data.run_async or data.async_)
        info = await sandboxes.session_exec(
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
        sandboxes: SandboxService,
    ) -> DaytonaSessionCommand:
        info = await sandboxes.session_command(principal.org_id, sandbox_id, session_id, command_id)
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
        sandboxes: SandboxService,
    ) -> DaytonaCommandLogs:
        info = await sandboxes.session_command(
            principal.org_id, sandbox_id, session_id, command_id, logs=True
        )
        return DaytonaCommandLogs(output=info.stdout + info.stderr, stdout=info.stdout, stderr=info.stderr)
