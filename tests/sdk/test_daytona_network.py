"""The official Daytona Python SDK (0.226.1), unmodified: network fields at create and
``update_network_settings``, straight at the core and through the gateway in bearer mode.
The flow (``daytona_network_flow.py``) runs in the SDK's own virtualenv and reports JSON.
What the policies do to traffic is ``tests/stack/test_egress_stack.py``'s part."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import httpx
import pytest

from cli.stack import Stack
from tests.sdk.test_daytona_sdk import HERE, sdk_python
from tests.support import mint_key

__all__ = ["sdk_python"]  # fixtures used by this module

pytestmark = pytest.mark.stack


@pytest.mark.parametrize("via", ["core", "gateway"])
def test_the_daytona_sdk_sets_network_settings(
    stack: Stack, gateway: httpx.Client, sdk_python: Path, via: str
) -> None:
    key = mint_key(gateway, f"sdk-network-{via}")
    api_url = stack.config.core_url if via == "core" else stack.config.gateway_url
    with tempfile.TemporaryDirectory(prefix="dnah-sdk-network-") as cwd:
        done = subprocess.run(
            [str(sdk_python), str(HERE / "daytona_network_flow.py")],
            cwd=cwd,
            env={
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": cwd,
                "DAYTONA_API_URL": api_url,
                "DAYTONA_API_KEY": key,
            },
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert done.returncode == 0, f"stdout: {done.stdout}\nstderr: {done.stderr}"
    assert json.loads(done.stdout) == {
        "created": [[True, None, None], [False, "198.18.0.0/15,192.0.2.0/24", "pypi.org"]],
        "read": [False, "198.18.0.0/15,192.0.2.0/24", "pypi.org"],
        "allow_list": [False, "198.18.0.0/15", None],
        "restored": [False, None, None],
        "blocked": [True, None, None],
    }
    assert done.stderr == "", done.stderr
