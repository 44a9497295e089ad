"""The official Daytona Python SDK's PTY API (``daytona`` 0.226.1), unmodified, against the real
stack: straight at the core and through the gateway in bearer mode. The flow
(``daytona_pty_flow.py``) runs in the SDK's own virtualenv, as ``test_daytona_sdk.py`` runs its
flow, and reports JSON."""

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


def run_pty_flow(python: Path, api_url: str, api_key: str) -> tuple[dict, str]:
    with tempfile.TemporaryDirectory(prefix="dnah-sdk-pty-") as cwd:
        done = subprocess.run(
            [str(python), str(HERE / "daytona_pty_flow.py")],
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
def test_the_daytona_sdk_pty_api_runs_unmodified(
    stack: Stack, gateway: httpx.Client, sdk_python: Path, via: str
) -> None:
    key = mint_key(gateway, f"sdk-pty-{via}")
    api_url = stack.config.core_url if via == "core" else stack.config.gateway_url
    report, stderr = run_pty_flow(sdk_python, api_url, key)

    assert report["connected"] is True
    assert report["first_output"] == {"greeting": True, "cwd": True, "size": True}
    assert report["info"] == {
        "id": "term",
        "cols": 100,
        "rows": 25,
        "cwd": "/tmp",
        "envs": {"GREETING": "hello"},
        "active": True,
        "lazy_start": False,
        "has_created_at": True,
    }
    assert report["resized"] == [120, 40] and report["size_after_resize"] is True
    assert report["listed"] == ["term"]
    assert report["second_sees"] is True and report["first_sees"] is True
    assert report["exit"] == {"exit_code": 7, "error": None, "connected": False}
    # A session the SDK created over its WebSocket lives as long as its clients.
    assert report["listed_after_exit"] == []
    assert report["duplicate"] == "DaytonaConflictError"
    assert report["killed"]["connected"] is False and report["killed"]["exit_code"] != 0
    assert report["listed_after_kill"] == []
    assert report["missing"] == "DaytonaNotFoundError"
    # The sync SDK's connect_pty_session does not map a refused upgrade to a typed error
    # (create_pty_session does); the refusal's status shows in the message.
    assert report["connect_missing"].startswith("DaytonaError") and "404" in report["connect_missing"]
    assert stderr == "", stderr
