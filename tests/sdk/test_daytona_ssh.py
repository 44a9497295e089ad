"""The official Daytona Python SDK's SSH access API (``daytona`` 0.226.1), unmodified, through
the gateway in bearer mode; the ``sshCommand`` it returns is then run as printed with
OpenSSH's client (the gateway's host key pinned from the var dir)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tempfile
from pathlib import Path

import httpx

from cli.stack import Stack
from tests.sdk.test_daytona_sdk import HERE, sdk_python
from tests.support import mint_key

__all__ = ["sdk_python"]  # fixtures used by this module


def test_create_ssh_access_and_log_in_as_printed(
    stack: Stack, gateway: httpx.Client, sdk_python: Path, tmp_path: Path
) -> None:
    key = mint_key(gateway, "sdk-ssh")
    with tempfile.TemporaryDirectory(prefix="dnah-sdk-ssh-") as cwd:
        done = subprocess.run(
            [str(sdk_python), str(HERE / "daytona_ssh_flow.py")],
            cwd=cwd,
            env={
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": cwd,
                "DAYTONA_API_URL": stack.config.gateway_url,
                "DAYTONA_API_KEY": key,
            },
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert done.returncode == 0, f"stdout: {done.stdout}\nstderr: {done.stderr}"
    report = json.loads(done.stdout)
    sandbox_id = report["sandbox_id"]
    try:
        assert report["kept"]["sandbox_id"] == sandbox_id
        assert report["default_minutes"] == 60
        assert report["valid_before"] == [True, sandbox_id]
        assert report["valid_after"] is False
        host_key = (stack.var / "ssh_host_ed25519_key.pub").read_text().split()
        known = tmp_path / "known_hosts"
        known.write_text(f"[127.0.0.1]:{stack.ssh_port} {host_key[0]} {host_key[1]}\n")
        argv = shlex.split(report["kept"]["ssh_command"])
        pinned = ["-F", "/dev/null", "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes"]
        login = subprocess.run(
            [argv[0], *pinned, *argv[1:], "cat /etc/hostname"], capture_output=True, timeout=60
        )
        assert login.returncode == 0, login.stderr
        assert login.stdout.strip()
    finally:
        gateway_key = {"authorization": f"Bearer {key}"}
        httpx.delete(f"{stack.config.gateway_url}/v1/sandboxes/{sandbox_id}", headers=gateway_key, timeout=60)
