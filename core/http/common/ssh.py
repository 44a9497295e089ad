"""What both shapes' SSH access routes share (docs/ssh.md): their dependencies and the
``sshCommand`` they print, which names the SSH gateway as clients reach it: ``DNAH_SSH_HOST``
or the host of the URL the request came through (the gateway's ``x-forwarded-host``), and
``DNAH_SSH_PORT``. ``core/services/ssh.py`` decides."""

from __future__ import annotations

from urllib.parse import urlsplit

from litestar import Request

from contracts import ssh
from core.config import CoreConfig
from core.http.common.deps import public_base_url
from core.services.ssh import SshService


def public_host(request: Request) -> str:
    config: CoreConfig = request.app.state.config
    return urlsplit(public_base_url(request, config.public_url)).hostname or "127.0.0.1"


def ssh_keys(request: Request, service: SshService, sandbox_id: str, keys: list[ssh.SshKey]) -> ssh.SshKeys:
    host, port = service.endpoint(public_host(request))
    return ssh.SshKeys(sandbox_id=sandbox_id, keys=keys, ssh_command=service.command(sandbox_id, host, port))
