"""Running things in a sandbox: a command (``exec``, through hostd's own exec route) and code
in one of the sandbox's languages (``run_code``, through the relay). Both are activity; a
timeout kills the whole process group and is reported in the result (the adapters decide
whether that is an error in their shape).
"""

from __future__ import annotations

from contracts import guest
from contracts.host import ExecResult
from core.services.sandboxes import SandboxService


class CodeService:
    def __init__(self, sandboxes: SandboxService) -> None:
        self._sandboxes = sandboxes

    async def exec(
        self, org_id: str, ref: str, *, cmd: list[str], env: dict[str, str], cwd: str | None, timeout_ms: int
    ) -> ExecResult:
        """Run the argv ``cmd`` as the sandbox user and wait for it."""
        return await self._sandboxes.exec(org_id, ref, cmd=cmd, env=env, cwd=cwd, timeout_ms=timeout_ms)

    async def run_code(
        self,
        org_id: str,
        ref: str,
        *,
        code: str,
        language: str | None,
        argv: list[str],
        env: dict[str, str],
        cwd: str | None,
        timeout_ms: int,
    ) -> guest.ExecResult:
        """Run ``code`` with ``language``'s interpreter; no language means the sandbox's own
        (``SandboxService.run_code``, which knows the sandbox's record)."""
        return await self._sandboxes.run_code(
            org_id, ref, code=code, language=language, argv=argv, env=env, cwd=cwd, timeout_ms=timeout_ms
        )
