"""The official Daytona Python SDK's lifecycle calls (``daytona`` 0.226.1), unmodified, against
the real stack: straight at the core and through the gateway in bearer mode. The flow
(``daytona_lifecycle_flow.py``) runs in the SDK's own virtualenv, as ``test_daytona_sdk.py``
runs its flow, and reports JSON: stop, start, pause, archive, labels, the timers, activity,
resize, fork, and the state the SDK reports after each."""

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


def run_lifecycle_flow(python: Path, api_url: str, api_key: str) -> tuple[dict, str]:
    with tempfile.TemporaryDirectory(prefix="dnah-sdk-lifecycle-") as cwd:
        done = subprocess.run(
            [str(python), str(HERE / "daytona_lifecycle_flow.py")],
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
def test_the_daytona_sdk_lifecycle_runs_unmodified(
    stack: Stack, gateway: httpx.Client, sdk_python: Path, via: str
) -> None:
    key = mint_key(gateway, f"sdk-lifecycle-{via}")
    api_url = stack.config.core_url if via == "core" else stack.config.gateway_url
    report, stderr = run_lifecycle_flow(sdk_python, api_url, key)
    print(f"\nDaytona SDK lifecycle via {via}, ms per call: {report['ms']}")

    # The state the SDK holds after each call, then what a fresh get() reads: the server
    # answers each operation with its final state, which ends the SDK's wait at once.
    assert report["states"] == {
        "created": ["started", "started"],
        "stopped": ["stopped", "stopped"],
        "started": ["started", "started"],
        "paused": ["paused", "paused"],
        "resumed": ["started", "started"],
        "archived": ["archived", "archived"],
        "unarchived": ["started", "started"],
        "resized": ["started", "started"],
    }
    # What was written before a stop, a pause or an archive is there after the start.
    assert report["after_stop"] == report["after_pause"] == report["after_archive"] == "kept-42\n"
    assert report["after_resize"] == "kept-42\n"
    # The SDK has no resume: its start() resumes a paused sandbox, the same processes.
    assert report["sdk_has_resume"] is False
    assert report["sleeper_survives_pause"] is True

    # set_labels replaces them; the SDK's language label is the sandbox's language, not a
    # stored label: every answer shows it, the PUT's as a get().
    assert report["labels"] == {
        "first": {"code-toolbox-language": "python", "team": "a", "tier": "gold"},
        "second": {"code-toolbox-language": "python", "team": "b"},
        "held": {"code-toolbox-language": "python", "team": "b"},
        "got": {"code-toolbox-language": "python", "team": "b"},
    }
    # [autoStop, autoArchive, autoDelete] as get() shows them, in Daytona's terms: autoStop 0
    # is off, autoArchive 0 is its 30-day maximum, autoDelete -1 is off and 0 is "on stop".
    assert report["intervals"] == {
        "initial": [0, 0, -1],
        "set": [5, 60, 120],
        "zeros": [0, 43200, 0],
        "no_delete": [0, 43200, -1],
    }
    assert report["activity"] == {"had": True, "moved": True}
    assert report["activity_state"] == "started"

    # resize (GiB of memory) of a stopped sandbox: the DTO at once, the cgroup once started.
    assert report["resized"] == {"cpu": 2, "memory": 2, "state": "stopped"}
    assert report["resized_got"] == {"cpu": 2, "memory": 2}
    assert report["limits"]["after"] == {"cpus": 2.0, "memory_mib": 2048}
    assert report["limits"]["before"] != report["limits"]["after"]

    # fork: a new, started sandbox with the parent's files, independent from then on.
    assert report["fork"] == {
        "new_id": True,
        "state": "started",
        "got": "started",
        "file": "kept-42\n",
        "listed": True,
        "independent": ["fork-only\n", "kept-42\n"],
    }
    assert report["delete_parent_with_fork"] == "DaytonaConflictError"
    assert report["after_delete"] == report["fork_after_delete"] == "destroyed"
    assert stderr == "", stderr

    with httpx.Client(base_url=api_url, headers={"authorization": f"Bearer {key}"}, timeout=60) as org:
        assert org.get("/v1/sandboxes").json()["items"] == [], "the flow deletes all it made"
