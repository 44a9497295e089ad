"""The official ``e2b-code-interpreter`` SDK (2.11.5), unmodified, on the ``code-interpreter-v1``
template, straight at the core and through the gateway in bearer mode: ``run_code`` with
variables that persist, a traceback, a matplotlib chart as a PNG, streamed output and contexts
of their own. The flow (``e2b_code_flow.py``) runs in the E2B SDKs' virtualenv and reports JSON.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.stack import Stack
from tests.sdk.test_e2b_sdk import HERE, e2b_org, e2b_python, run_flow
from tests.stack.test_code_interpreter import template_prepared
from tests.support import wait_for

__all__ = ["e2b_org", "e2b_python"]  # fixtures used by this module


CODE = {
    "run_code_persistence": {"stdout": ["set\n"], "result": ["42"], "count_grows": True},
    "run_code_traceback": {"name": "ValueError", "value": "boom", "traceback_names_f": True},
    "run_code_chart": {"pngs": 1, "is_png": True},
    "run_code_streams": {"stdout": ["out\n"], "stderr": ["err\n"], "on_stdout": ["out\n"]},
    "contexts": {"own": ["('own', '/tmp')"], "default_sees_y": ["False"], "listed": True, "removed": True},
    "warm_1_plus_1": ["2"],
    "cleanup": True,
}
"""What ``e2b-code-interpreter`` returns against E2B's ``code-interpreter-v1`` for each step."""


@pytest.mark.parametrize("via", ["core", "gateway"])
def test_the_e2b_code_interpreter_sdk_runs_unmodified(
    stack: Stack, e2b_org: str, e2b_python: Path, via: str
) -> None:
    # the shared stack imports the template in the background; a create before that waits
    # longer than the core waits for a create on a loaded machine
    wait_for(lambda: template_prepared(stack), what="hostd to prepare code-interpreter-v1", timeout_s=300)
    api_url = stack.config.core_url if via == "core" else stack.config.gateway_url
    report = run_flow([str(e2b_python), str(HERE / "e2b_code_flow.py")], api_url, e2b_org)
    assert report["steps"]["create"] == {"created": True}
    assert {name: report["steps"].get(name, "not run") for name in CODE} == CODE
