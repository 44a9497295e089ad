"""``HostController`` with egress kept in step: after every command that can change which
sandboxes run and at which address (boots, stops, restores, clones, archives, destroys), the
egress service's sets are rebuilt from the runtime (``Egress.sync``). Commands that only
use a running sandbox (exec, the agent relay, streams, ports, reads) pass through untouched.
"""

from __future__ import annotations

from typing import Any

from hosts.commands import (
    ArchiveSandbox,
    CloneSnapshot,
    Command,
    CreateSandbox,
    DestroySandbox,
    PauseSandbox,
    RestoreSnapshot,
    ResumeSandbox,
    StartSandbox,
    StopSandbox,
    UnarchiveSandbox,
)
from hosts.controller import HostController
from hosts.egress.service import Egress
from hosts.runtime.base import SandboxRuntime
from hosts.snapshot_store import EntryStore

_CHANGES_ADDRESSES = (
    CreateSandbox,
    StartSandbox,
    StopSandbox,
    PauseSandbox,
    ResumeSandbox,
    RestoreSnapshot,
    CloneSnapshot,
    ArchiveSandbox,
    UnarchiveSandbox,
    DestroySandbox,
)


class EgressController(HostController):
    def __init__(
        self,
        runtime: SandboxRuntime,
        egress: Egress,
        *,
        snapshots: EntryStore | None = None,
        archives: EntryStore | None = None,
    ) -> None:
        super().__init__(runtime, snapshots=snapshots, archives=archives)
        self.egress = egress

    async def handle(self, cmd: Command) -> Any:
        """``HostController.handle``, then ``Egress.sync`` for the commands above (also when
        they failed: a failed boot or stop may still have changed what runs)."""
        if isinstance(cmd, CreateSandbox | StartSandbox | CloneSnapshot):
            await self.egress.booted(cmd.spec)
        try:
            result = await super().handle(cmd)
        finally:
            if isinstance(cmd, _CHANGES_ADDRESSES):
                await self.egress.sync()
        if isinstance(cmd, DestroySandbox):
            await self.egress.destroyed(cmd.sandbox_id)
        return result
