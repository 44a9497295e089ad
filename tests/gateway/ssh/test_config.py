"""The SSH gateway's settings (``gateway/ssh/config.py``) and its host key."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from gateway.ssh.config import ConfigError, load_config
from gateway.ssh.server import load_host_key

TOKEN = "t" * 32


def test_defaults(tmp_path: Path) -> None:
    config = load_config({"DNAH_SSH_GATEWAY_TOKEN": TOKEN, "DNAH_VAR_DIR": str(tmp_path)})
    assert (config.host, config.port, config.core_url) == ("127.0.0.1", 2222, "http://127.0.0.1:3100")
    assert config.host_key == tmp_path / "ssh_host_ed25519_key"
    assert config.sftp_server == "/usr/lib/openssh/sftp-server"


def test_settings(tmp_path: Path) -> None:
    env = {
        "DNAH_SSH_GATEWAY_TOKEN": TOKEN,
        "DNAH_SSH_HOST_KEY": str(tmp_path / "key"),
        "DNAH_SSH_PORT": "2022",
        "DNAH_SSH_BIND": "0.0.0.0",
        "DNAH_CORE_URL": "http://core:3100/",
        "DNAH_SSH_LOGIN_TIMEOUT_S": "5",
    }
    config = load_config(env)
    assert (config.host, config.port, config.core_url) == ("0.0.0.0", 2022, "http://core:3100")
    assert (config.host_key, config.login_timeout_s) == (tmp_path / "key", 5.0)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, "DNAH_SSH_GATEWAY_TOKEN"),
        ({"DNAH_SSH_GATEWAY_TOKEN": "short"}, "DNAH_SSH_GATEWAY_TOKEN"),
        ({"DNAH_SSH_GATEWAY_TOKEN": TOKEN}, "DNAH_VAR_DIR"),
        ({"DNAH_SSH_GATEWAY_TOKEN": TOKEN, "DNAH_VAR_DIR": "/x", "DNAH_SSH_PORT": "70000"}, "DNAH_SSH_PORT"),
        ({"DNAH_SSH_GATEWAY_TOKEN": TOKEN, "DNAH_VAR_DIR": "/x", "DNAH_SSH_PORT": "ssh"}, "DNAH_SSH_PORT"),
        (
            {"DNAH_SSH_GATEWAY_TOKEN": TOKEN, "DNAH_VAR_DIR": "/x", "DNAH_CORE_URL": "core:3100"},
            "DNAH_CORE_URL",
        ),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_config(env)


def test_the_host_key_is_made_once_and_kept(tmp_path: Path) -> None:
    config = load_config({"DNAH_SSH_GATEWAY_TOKEN": TOKEN, "DNAH_VAR_DIR": str(tmp_path / "var")})
    first = load_host_key(config)
    assert stat.S_IMODE(config.host_key.stat().st_mode) == 0o600
    assert first.get_algorithm() == "ssh-ed25519"
    again = load_host_key(config)  # a restart: the same key, so clients' known_hosts still match
    assert again.export_public_key() == first.export_public_key()
    published = (tmp_path / "var" / "ssh_host_ed25519_key.pub").read_bytes()
    assert published == first.export_public_key()
