"""The official E2B SDKs, unmodified, against the real stack: ``e2b`` 2.63.0 and
``e2b-code-interpreter`` 2.11.5 (Python) and the ``e2b`` npm package under Node 20, each
straight at the core and through the gateway in bearer mode, configured as a user does
(``E2B_API_URL``, ``E2B_SANDBOX_URL``, ``E2B_API_KEY``, nothing else).

The SDKs live outside .venv (``install.sh``: a virtualenv and an npm prefix, cached by the hash
of their pins), so the flows (``e2b_flow.py``, ``e2b_flow.mjs``, ``e2b_code_flow.py``) run as
subprocesses and report JSON: each step's outcome, or the SDK's error (with the server's
answer) when it failed. A test runs one group of steps on a sandbox of its own and compares
every step with what E2B's SDK returns against E2B.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.stack import Stack
from tests.support import mint_key

HERE = Path(__file__).resolve().parent


def install(manifest: str) -> Path:
    """Where ``install.sh`` put the SDKs ``manifest`` pins (installed on first use)."""
    done = subprocess.run(
        ["bash", str(HERE / "install.sh"), str(HERE / manifest)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip())


@pytest.fixture(scope="module")
def e2b_python() -> Path:
    return install("requirements-e2b.txt") / "bin" / "python"


@pytest.fixture(scope="module")
def e2b_node() -> Path:
    version = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True).stdout
    assert version.startswith("v20."), f"the JS SDK is tested under Node 20, found {version}"
    return install("js/package-lock.json")


@pytest.fixture
def e2b_org(stack: Stack, gateway: httpx.Client) -> Iterator[str]:
    """An API key of an org of its own; whatever the flow left is deleted after."""
    key = mint_key(gateway, "e2b-sdk")
    yield key
    with httpx.Client(
        base_url=stack.config.gateway_url, headers={"authorization": f"Bearer {key}"}, timeout=60
    ) as org:
        for item in org.get("/v1/sandboxes").json().get("items", []):
            org.delete(f"/v1/sandboxes/{item['id']}")


def run_flow(argv: list[str], api_url: str, api_key: str, **extra: str) -> dict[str, Any]:
    """Run a flow in an empty directory (the SDKs read ``.env`` files there) with a minimal
    environment; return its report."""
    with tempfile.TemporaryDirectory(prefix="dnah-e2b-") as cwd:
        done = subprocess.run(
            argv,
            cwd=cwd,
            env={
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": cwd,
                "E2B_API_URL": api_url,
                "E2B_SANDBOX_URL": api_url,
                "E2B_API_KEY": api_key,
                "DNAH_FLOW_RUN": secrets.token_hex(6),
                **extra,
            },
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    assert done.returncode == 0, f"stdout: {done.stdout}\nstderr: {done.stderr}"
    report: dict[str, Any] = json.loads(done.stdout)
    print(f"\n{' '.join(Path(a).name for a in argv[1:])}: ms per step {report['ms']}")
    return report


def running(group: str) -> dict[str, Any]:
    """What ``create`` and ``get_info`` report for a sandbox of ``group``'s (its metadata's
    ``run`` differs per run and is checked apart)."""
    return {"metadata": {"group": group}, "state": "running", "same_id": True}


COMMANDS = {
    "env_from_create": "yes\n",
    "run": {"stdout": "hi\n", "stderr": "err\n", "exit_code": 0},
    "run_nonzero": {"raised": True, "exit_code": 3, "stdout": "out\n", "stderr": "bad\n"},
    "run_on_stdout": {"stdout": "first\nsecond\n", "streamed": "first\nsecond\n"},
    "run_cwd_envs": "/tmp\n12\n",
    "background_kill_list": {
        "listed": True,
        "cmd": ["/bin/bash", ["-l", "-c", "sleep 300"]],
        "killed": True,
        "kill_again": False,
    },
    "send_stdin": {"stdout": "got:hello\n"},
    "run_as_root": "root\n/root\n/root\n",
    "root_background_kill": {"killed": True, "gone": True},
}
FILES = {
    "files_write_read": {"wrote": ["a.txt", "/tmp/e2b/dir/a.txt"], "text": "alpha\n", "bytes": [0, 1, 255]},
    "files_list": [["a.txt", "file", 6], ["b.bin", "file", 3]],
    "files_exists": [True, False],
    "files_make_dir": [True, False],
    "files_rename_remove": {"moved": "/tmp/e2b/dir/c.txt", "after": [False, False]},
    "files_write_files_get_info": {
        "paths": ["/tmp/e2b/many/1.txt", "/tmp/e2b/many/2.txt"],
        "info": ["2.txt", "file", 3],
    },
}
WATCH = {"files_watch_dir": [["new.txt", "create"]]}
PTY = {"pty": {"first_size": True, "resized": True, "killed": True, "kill_again": False}}
PORTS = {"port_by_headers": {"status": 200, "body": "hello from the sandbox\n"}}
LIFECYCLE = {
    "list_by_metadata": {"ids": [True], "none": 0},
    "set_timeout": {"killed_at_deadline": True, "kill_after": False},
    "kill": {"killed": True, "kill_again": False},
}
PAUSE = {
    "pause_connect": {
        "paused": True,
        "state": "paused",
        "file": "kept\n",
        "process": True,
        "runs": "back\n",
        "state_after": "running",
    },
}
GROUPS = {
    "commands": COMMANDS,
    "files": FILES,
    "watch": WATCH,
    "pty": PTY,
    "ports": PORTS,
    "lifecycle": LIFECYCLE,
    "pause": PAUSE,
}
"""Each group's steps and what E2B's SDK returns for them. Where the Python and JS SDKs
differ (error classes' names), ``SDK_ERRORS`` says."""

SDK_ERRORS = {
    "python": {
        "run_timeout": {"raised": "TimeoutException"},
        "files_read_missing": "FileNotFoundException",
        "info_after_kill": "SandboxNotFoundException",
    },
    "js": {
        "run_timeout": {"raised": "TimeoutError"},
        "files_read_missing": "FileNotFoundError",
        "info_after_kill": "SandboxNotFoundError",
    },
}


def expected(sdk: str, group: str) -> dict[str, Any]:
    want = dict(GROUPS[group])
    errors = SDK_ERRORS[sdk]
    if group == "commands":
        want["run_timeout"] = errors["run_timeout"]
    if group == "files":
        want["files_read_missing"] = errors["files_read_missing"]
    if group == "lifecycle":
        want["kill"] = {**want["kill"], "info_after": errors["info_after_kill"]}
    return want


def check(report: dict[str, Any], sdk: str, group: str) -> None:
    steps = report["steps"]
    info = steps.get("info")
    assert isinstance(info, dict) and info.get("metadata", {}).pop("run", None), info
    assert {"create": steps["create"], "info": info} == {"create": {"created": True}, "info": running(group)}
    if group != "lifecycle":
        assert steps["cleanup"] is True
    if group == "lifecycle":
        for metadata in steps["list_by_metadata"].pop("metadata", []):
            assert metadata.get("group") == "lifecycle", metadata
    seen = {name: steps.get(name, "not run") for name in expected(sdk, group)}
    assert seen == expected(sdk, group)


# The groups each SDK passes today, straight at the core and through the gateway.
PYTHON_GROUPS = ["commands", "files", "watch", "pty", "ports", "lifecycle", "pause"]
JS_GROUPS = ["commands", "files", "watch", "pty", "ports", "lifecycle", "pause"]


@pytest.mark.parametrize("via", ["core", "gateway"])
@pytest.mark.parametrize("group", PYTHON_GROUPS)
def test_the_e2b_python_sdk_runs_unmodified(
    stack: Stack, e2b_org: str, e2b_python: Path, group: str, via: str
) -> None:
    api_url = stack.config.core_url if via == "core" else stack.config.gateway_url
    report = run_flow([str(e2b_python), str(HERE / "e2b_flow.py"), group], api_url, e2b_org)
    check(report, "python", group)


@pytest.mark.parametrize("via", ["core", "gateway"])
@pytest.mark.parametrize("group", JS_GROUPS)
def test_the_e2b_js_sdk_runs_unmodified(
    stack: Stack, e2b_org: str, e2b_node: Path, group: str, via: str
) -> None:
    api_url = stack.config.core_url if via == "core" else stack.config.gateway_url
    report = run_flow(
        ["node", str(HERE / "e2b_flow.mjs"), group], api_url, e2b_org, DNAH_NPM_PREFIX=str(e2b_node)
    )
    check(report, "js", group)
