"""``GET /templates/{name}/build-log``: a template's build log, as plain text.

Daytona's ``build-logs-url`` points at the build of a sandbox's image; ours is the template
the host boots sandboxes of that name from (``TemplateStore.build_log``). The core fetches
it from the sandbox's host and serves it under its own authentication. Reading a file of a
few hundred KiB is done in a thread, as all template store calls are.
"""

from __future__ import annotations

import asyncio

from litestar import MediaType, get
from litestar.datastructures import State

from hosts.templates import TemplateStore


@get("/templates/{name:str}/build-log", media_type=MediaType.TEXT)
async def template_build_log(name: str, state: State) -> str:
    """404 ``template_not_found`` when the host has no ready template of that name."""
    templates: TemplateStore = state.templates
    return await asyncio.to_thread(templates.build_log, name)
