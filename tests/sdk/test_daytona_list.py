"""The official Daytona Python SDK (0.226.1), unmodified: ``list`` with its filters and sorts
across several pages, and the backup fields and build-log URL of its API client, straight at
the core and through the gateway in bearer mode. The flow (``daytona_list_flow.py``) runs in
the SDK's own virtualenv and reports JSON."""

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
def test_the_daytona_sdk_lists_backs_up_and_reads_build_logs(
    stack: Stack, gateway: httpx.Client, sdk_python: Path, via: str
) -> None:
    key = mint_key(gateway, f"sdk-list-{via}")
    api_url = stack.config.core_url if via == "core" else stack.config.gateway_url
    with tempfile.TemporaryDirectory(prefix="dnah-sdk-list-") as cwd:
        done = subprocess.run(
            [str(sdk_python), str(HERE / "daytona_list_flow.py")],
            cwd=cwd,
            env={
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": cwd,
                "DAYTONA_API_URL": api_url,
                "DAYTONA_API_KEY": key,
                "PYTHONWARNINGS": "ignore::DeprecationWarning",  # create_backup is marked deprecated
            },
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert done.returncode == 0, f"stdout: {done.stdout}\nstderr: {done.stderr}"
    assert json.loads(done.stdout) == {
        "newest_first": ["sdk-c", "sdk-a", "sdk-b"],
        "by_name": ["sdk-a", "sdk-b", "sdk-c"],
        "started": ["sdk-a", "sdk-b"],
        "both_states": ["sdk-a", "sdk-b", "sdk-c"],
        "name_prefix": ["sdk-a"],
        "not_public": 3,
        "public": [],
        "backup": ["Completed", "Completed", True],
        "build_log": [200, True],
    }
    assert done.stderr == "", done.stderr
