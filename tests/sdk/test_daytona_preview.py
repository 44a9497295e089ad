"""The official Daytona Python SDK's preview links (``daytona`` 0.226.1), unmodified, against
the real stack: straight at the core and through the gateway in bearer mode. The flow
(``daytona_preview_flow.py``) runs in the SDK's own virtualenv and reports JSON."""

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


def run_preview_flow(python: Path, api_url: str, api_key: str) -> tuple[dict, str]:
    with tempfile.TemporaryDirectory(prefix="dnah-sdk-preview-") as cwd:
        done = subprocess.run(
            [str(python), str(HERE / "daytona_preview_flow.py")],
            cwd=cwd,
            env={
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": cwd,
                "DAYTONA_API_URL": api_url,
                "DAYTONA_API_KEY": api_key,
            },
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert done.returncode == 0, f"stdout: {done.stdout}\nstderr: {done.stderr}"
    return json.loads(done.stdout), done.stderr


@pytest.mark.parametrize("via", ["core", "gateway"])
def test_the_daytona_sdk_preview_links_run_unmodified(
    stack: Stack, gateway: httpx.Client, sdk_python: Path, via: str
) -> None:
    key = mint_key(gateway, f"sdk-preview-{via}")
    api_url = stack.config.core_url if via == "core" else stack.config.gateway_url
    report, stderr = run_preview_flow(sdk_python, api_url, key)

    assert report == {
        "server_started": True,
        "link_type": "PortPreviewUrl",
        "link_sandbox": True,
        "with_token": [200, True],
        "without_token": 401,
        "signed_type": "SignedPortPreviewUrl",
        "signed_fields": [True, 8000, True],
        "signed_opened": [200, True],
        "signed_after_expire": 403,
        "cookie_after_expire": 403,
        "public": [True, True],
        "public_without_token": 200,
        "private_again": [False, 401],
    }
    assert stderr == "", stderr
