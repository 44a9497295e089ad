"""The official Daytona Python SDK (``daytona`` 0.226.1), unmodified, against the real stack:
straight at the core, and through the gateway in bearer mode, as a user configures it
(``DAYTONA_API_URL`` and ``DAYTONA_API_KEY``, nothing else). ``DAYTONA_USE_DEPRECATED_POLLING``
is left unset: the SDK's Socket.IO connection meets a 404, which it swallows silently, and
the test stays quiet and fast without the deprecation warning that flag brings.

The SDK lives in a virtualenv of its own (``tests/sdk/install.sh``; why in
``requirements.txt``), so the flow runs as a subprocess (``daytona_flow.py``) and reports JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import httpx
import pytest

from cli.stack import Stack
from tests.support import mint_key

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def sdk_python() -> Path:
    """The SDK's interpreter, installed on first use (a few seconds; cached by hash after)."""
    done = subprocess.run(
        ["bash", str(HERE / "install.sh")], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip()) / "bin" / "python"


def run_flow(sdk_python: Path, api_url: str, api_key: str) -> tuple[dict, str]:
    """Run the flow in an empty directory (the SDK reads ``.env`` files from there) with a
    minimal environment; return its report and its stderr."""
    with tempfile.TemporaryDirectory(prefix="dnah-sdk-") as cwd:
        done = subprocess.run(
            [str(sdk_python), str(HERE / "daytona_flow.py")],
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
def test_the_daytona_sdk_runs_unmodified(
    stack: Stack, gateway: httpx.Client, sdk_python: Path, via: str
) -> None:
    key = mint_key(gateway, f"sdk-{via}")
    api_url = stack.config.core_url if via == "core" else stack.config.gateway_url
    with httpx.Client(base_url=api_url, headers={"authorization": f"Bearer {key}"}, timeout=60) as org:
        # A bash sandbox (a native-only language) in the same org must not trip the SDK's list().
        bash = org.post("/v1/sandboxes", json={"language": "bash"})
        assert bash.status_code == 201, bash.text

        report, stderr = run_flow(sdk_python, api_url, key)
        print(f"\nDaytona SDK via {via}, ms per call: {report['ms']}")

        check_report(report, stderr, others=[bash.json()["id"]])

        live = org.get("/v1/sandboxes").json()["items"]
        assert [s["id"] for s in live] == [bash.json()["id"]], "the SDK's sandboxes are all deleted"
        org.delete(f"/v1/sandboxes/{bash.json()['id']}")


def check_report(report: dict, stderr: str, others: list[str]) -> None:
    """What the flow must have seen; ``others`` are sandboxes of the org that ``list`` shows."""
    sid = report["created"]["id"]
    assert report["created"]["state"] == "started"
    assert report["exec"] == {"exit_code": 0, "result": "hi\n"}
    assert report["exec_failed"] == {"exit_code": 3, "result": "out\nerr\n"}
    assert report["exec_timeout"] == "DaytonaTimeoutError"
    assert report["code_run"] == {"exit_code": 0, "result": "42\n", "charts": []}
    assert report["code_run_failed"] == {"exit_code": 4, "result": "partial\n"}
    assert report["js_code_run"] == {"exit_code": 0, "result": "21 42\n"}
    assert report["session_exec"] == {
        "exit_code": 0,
        "stdout": "42\n/tmp\n",
        "stderr": "e\n",
        "output": "42\n/tmp\ne\n",
    }
    assert report["session_async_started"] == {"has_id": True, "exit_code": None}
    assert report["session_async_done"] == {
        "command": "sleep 0.3; echo later; exit_code=0; (exit 3)",
        "exit_code": 3,
    }
    assert report["session_logs"] == {"stdout": "later\n", "stderr": "", "output": "later\n"}
    assert report["session"]["id"] == "dev"
    assert [c[1] for c in report["session"]["commands"]] == [0, 0, 3]
    assert (report["sessions_listed"], report["sessions_after_delete"]) == (["dev"], [])
    assert report["git_status"] == {"branch": "main", "files": [["hi.txt", "Added"]]}
    assert report["git_pushed"] is True
    assert report["git_branches"] == {"branches": ["main", "side"], "current": "side"}
    assert report["git_clean"] is True
    assert (report["home"], report["work"]) == ("/home/daytona", "/home/daytona")
    assert report["fs_list"] == [["raw", True, "0750", "/home/daytona/data/raw"]]
    assert report["fs_list_deep"] == ["/home/daytona/data/raw", "/home/daytona/data/raw/x.txt"]
    assert report["fs_info"] == {
        "name": "x.txt",
        "is_dir": False,
        "size": 7,
        "mode": "-rw-r--r--",
        "permissions": "0644",
        "owner": "daytona",
        "has_mod_time": True,
    }
    assert report["fs_search"] == ["/home/daytona/data/raw/x.txt"]
    assert report["fs_find"] == [["/home/daytona/data/raw/x.txt", 1, "a TODO"]]
    assert report["fs_replace"] == [["/home/daytona/data/y.txt", True]]
    assert report["fs_after"] == "600\na DONE\n"
    assert report["fs_deleted"] == "gone\n"
    assert report["fs_uploaded_sha"] == report["fs_expected_sha"]
    assert report["fs_download_matches"] is True
    assert report["fs_download_missing"] == "not found"
    assert report["fs_bulk"] == [
        ["data/bulk/a.txt", "file", False],
        ["data/bulk/deeper/b.txt", "from bytes\n", False],
        ["data/bulk/missing.txt", None, True],
    ]
    assert report["fs_bulk_local"] == "from disk\n"
    assert report["get"] == {"id": sid, "state": "started"}
    assert sid in report["list"] and set(others) <= set(report["list"])
    assert report["after_delete"] == report["js_after_delete"] == "destroyed"
    # Quiet: the SDK's Socket.IO attempt (a 404 here) fails silently and it polls instead.
    assert stderr == "", stderr
