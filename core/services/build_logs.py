"""The build log behind Daytona's ``build-logs-url``: the template a sandbox was made from, as
its host built it.

Daytona builds an image per sandbox (or snapshot) and streams that build's output. Our
sandboxes boot from templates a host built beforehand (``dnah template build``), so a
sandbox's build log is its template's, fetched from the sandbox's host (the host keeps it
beside the template: ``hosts/templates.py``). The host serves the template it would boot a
new sandbox of that name from; a template rebuilt since the sandbox was made (a changed
recipe) shows the newer build.
"""

from __future__ import annotations

import asyncpg

from core.db import sandboxes as sandboxes_db
from core.errors import HostUnavailable, NotFound
from core.hostclient import HostClient


class BuildLogService:
    def __init__(self, db: asyncpg.Pool, hosts: HostClient) -> None:
        self._db = db
        self._hosts = hosts

    async def sandbox_id(self, org_id: str, ref: str) -> str:
        """The id of the org's sandbox ``ref`` (id or name); ``NotFound`` otherwise."""
        rec = await sandboxes_db.get(self._db, org_id, ref)
        if rec is None:
            raise NotFound(f"sandbox {ref!r} not found")
        return rec.id

    async def log(self, org_id: str, ref: str) -> str:
        """The build log of the sandbox's template, from the sandbox's host."""
        found = await sandboxes_db.get_with_host(self._db, org_id, ref)
        if found is None:
            raise NotFound(f"sandbox {ref!r} not found")
        rec, host = found
        if host is None:
            raise HostUnavailable(f"sandbox {rec.id} has no host to read its template's build log from")
        return await self._hosts.template_build_log(host, rec.template)
