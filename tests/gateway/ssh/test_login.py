"""The SSH gateway's logins when the core cannot answer: refused, never let through (a real
SSH gateway, a real asyncssh client, a core address where nothing listens)."""

from __future__ import annotations

from pathlib import Path

import asyncssh
import pytest

from gateway.ssh.config import load_config
from gateway.ssh.core_client import CoreClient
from gateway.ssh.server import serve
from tests.support import free_port


@pytest.mark.parametrize("user", ["A" * 32, "some-sandbox-id"])
async def test_no_core_means_no_login(tmp_path: Path, user: str) -> None:
    env = {
        "DNAH_SSH_GATEWAY_TOKEN": "t" * 32,
        "DNAH_VAR_DIR": str(tmp_path),
        "DNAH_SSH_PORT": str(free_port()),
        "DNAH_CORE_URL": f"http://127.0.0.1:{free_port()}",
    }
    config = load_config(env)
    core = CoreClient(config.core_url, config.gateway_token)
    acceptor = await serve(config, core)
    key = asyncssh.generate_private_key("ssh-ed25519")
    try:
        with pytest.raises(asyncssh.PermissionDenied):
            async with asyncssh.connect(
                "127.0.0.1", config.port, username=user, client_keys=[key], known_hosts=None, agent_path=None
            ):
                pass
    finally:
        acceptor.close()
        await acceptor.wait_closed()
        await core.close()
