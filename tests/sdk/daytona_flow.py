"""The official Daytona SDK, unmodified, through one sandbox's life; prints a JSON report.

Run by ``test_daytona_sdk.py`` with the SDK's own virtualenv (``tests/sdk/install.sh``), not
the project's: nothing here imports the project. The SDK is configured as a user would, with
``DAYTONA_API_URL`` and ``DAYTONA_API_KEY`` in the environment; everything else is its
default. The report holds what each call returned and how long it took, so the test can
assert on values and print timings.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

from daytona import CreateSandboxFromSnapshotParams, Daytona


def value(state: Any) -> str:
    """An SDK enum's wire value (``str()`` of a str-Enum differs across Python versions)."""
    return str(getattr(state, "value", state))


def main() -> int:
    report: dict[str, Any] = {"ms": {}}

    def timed(name: str, call: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        result = call()
        report["ms"][name] = round((time.perf_counter() - started) * 1000, 1)
        return result

    daytona = timed("client", Daytona)
    sandbox = timed("create", daytona.create)
    report["created"] = {"id": sandbox.id, "state": value(sandbox.state), "cpu": sandbox.cpu}

    hi = timed("exec", lambda: sandbox.process.exec("echo hi"))
    report["exec"] = {"exit_code": hi.exit_code, "result": hi.result}
    failed = sandbox.process.exec("echo out; echo err >&2; exit 3", cwd="/tmp", env={"X": "1"})
    report["exec_failed"] = {"exit_code": failed.exit_code, "result": failed.result}
    try:
        sandbox.process.exec("sleep 10", timeout=1)
        report["exec_timeout"] = "no error"
    except Exception as exc:  # the SDK's own error class is what the report shows
        report["exec_timeout"] = type(exc).__name__

    ran = timed("code_run", lambda: sandbox.process.code_run("print(6*7)"))
    report["code_run"] = {"exit_code": ran.exit_code, "result": ran.result, "charts": ran.artifacts.charts}
    timed("code_run_again", lambda: sandbox.process.code_run("print(6*7)"))
    broken = sandbox.process.code_run("import sys; print('partial'); sys.exit(4)")
    report["code_run_failed"] = {"exit_code": broken.exit_code, "result": broken.result}

    report["home"] = timed("home", sandbox.get_user_home_dir)
    report["work"] = sandbox.get_work_dir()

    js = daytona.create(CreateSandboxFromSnapshotParams(language="javascript"))
    js_run = js.process.code_run("console.log([1, 2].map((n) => n * 21).join(' '))")
    report["js_code_run"] = {"exit_code": js_run.exit_code, "result": js_run.result}

    got = timed("get", lambda: daytona.get(sandbox.id))
    report["get"] = {"id": got.id, "state": value(got.state)}
    report["list"] = sorted(s.id for s in timed("list", lambda: list(daytona.list())))

    timed("delete", sandbox.delete)
    daytona.delete(js)
    report["after_delete"] = value(daytona.get(sandbox.id).state)
    report["js_after_delete"] = value(daytona.get(js.id).state)
    json.dump(report, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
