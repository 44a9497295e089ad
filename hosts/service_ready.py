"""Waiting for a template's services before a sandbox is handed out.

A template may declare services (``/etc/dnah/services.json``, started by the agent:
``guest/services.py``) with a ``ready_port``: the port the service listens on once it can
serve. A create, start or fork of a sandbox of that template returns only when every such port
accepts a TCP connection inside the sandbox (as the preview proxy would connect), so a client
that calls it right after the create (E2B's ``run_code`` after ``Sandbox.create``) finds it
listening instead of a 502. A service that is not ready within ``READY_TIMEOUT_S`` is logged
and the sandbox is handed out anyway: it is running, the service may yet come.

The ports are read from the template's own rootfs in the cache (the file the agent reads in
the sandbox), once per template build.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from pathlib import Path

import structlog

from hosts.errors import HostError
from hosts.ports import netns
from hosts.runtime.base import PortEndpoint
from hosts.templates import TemplateStore

log = structlog.get_logger("hosts.services")

SERVICES_FILE = "etc/dnah/services.json"
READY_TIMEOUT_S = 20.0
POLL_S = 0.05


def ready_ports(store: TemplateStore, template: str) -> tuple[int, ...]:
    """The ``ready_port`` of every service the current build of ``template`` declares (none
    for a template that is not built here or declares none)."""
    try:
        rootfs = store.get(template).rootfs
    except HostError:
        return ()
    return _declared(rootfs)


@functools.lru_cache(maxsize=64)
def _declared(rootfs: Path) -> tuple[int, ...]:
    try:
        doc = json.loads((rootfs / SERVICES_FILE).read_bytes())
    except (OSError, ValueError):
        return ()
    services = doc.get("services") if isinstance(doc, dict) else None
    ports = []
    for service in services if isinstance(services, list) else []:
        port = service.get("ready_port") if isinstance(service, dict) else None
        if isinstance(port, int) and 1 <= port <= 65535:
            ports.append(port)
    return tuple(ports)


async def wait_ready(sandbox_id: str, endpoint: PortEndpoint, ports: tuple[int, ...]) -> bool:
    """Wait until each of ``ports`` accepts a connection at ``endpoint``; False (logged) when
    one did not within ``READY_TIMEOUT_S``."""
    started = time.monotonic()
    deadline = started + READY_TIMEOUT_S
    for port in ports:
        while True:
            try:
                sock = await netns.connect(endpoint, port)
            except OSError:
                if time.monotonic() >= deadline:
                    log.warning(
                        "service not ready", sandbox_id=sandbox_id, port=port, waited_s=READY_TIMEOUT_S
                    )
                    return False
                await asyncio.sleep(POLL_S)
                continue
            with contextlib.suppress(OSError):
                sock.close()
            break
    log.info(
        "services ready",
        sandbox_id=sandbox_id,
        ports=list(ports),
        seconds=round(time.monotonic() - started, 2),
    )
    return True
