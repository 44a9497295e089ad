"""The official E2B code interpreter SDK (``e2b-code-interpreter`` 2.11.5), unmodified, on the
``code-interpreter-v1`` template; prints a JSON report (``flow_report.Report``).

Run by ``test_e2b_sdk.py`` with the SDKs' own virtualenv, configured as a user would
(``E2B_API_URL``, ``E2B_SANDBOX_URL``, ``E2B_API_KEY``); nothing here imports the project.
"""

from __future__ import annotations

import base64
import os
import re
from typing import Any

from e2b_code_interpreter import Sandbox
from flow_report import Report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def plain(text: str) -> str:
    """A Jupyter traceback without its colours (ANSI escapes, as IPython writes them)."""
    return ANSI.sub("", text)


CHART = """
import matplotlib.pyplot as plt
plt.plot([1, 2, 3], [1, 4, 9])
plt.title("squares")
plt.show()
"""


def main() -> int:
    report = Report()
    run = os.environ["DNAH_FLOW_RUN"]
    sbx: Sandbox | None = report.step(
        "create",
        lambda: Sandbox.create(metadata={"run": run, "group": "code"}),
        shown=lambda created: {"created": True},
    )
    if sbx is None:
        report.print()
        return 0
    try:
        steps(report, sbx)
    finally:
        report.step("cleanup", sbx.kill)
    report.print()
    return 0


def steps(report: Report, sbx: Sandbox) -> None:
    def persistence() -> dict[str, Any]:
        first = sbx.run_code("x = 41\nprint('set')")
        second = sbx.run_code("x + 1")
        return {
            "stdout": first.logs.stdout,
            "result": [r.text for r in second.results if r.is_main_result],
            "count_grows": (second.execution_count or 0) > (first.execution_count or 0),
        }

    report.step("run_code_persistence", persistence)

    def traceback() -> dict[str, Any]:
        failed = sbx.run_code("def f():\n    raise ValueError('boom')\nf()")
        error = failed.error
        return {
            "name": error.name if error else None,
            "value": error.value if error else None,
            "traceback_names_f": bool(error and "f()" in plain(error.traceback)),
        }

    report.step("run_code_traceback", traceback)

    def chart() -> dict[str, Any]:
        drawn = sbx.run_code(CHART)
        pngs = [r.png for r in drawn.results if r.png]
        return {"pngs": len(pngs), "is_png": bool(pngs) and base64.b64decode(pngs[0])[:8] == PNG_MAGIC}

    report.step("run_code_chart", chart)

    def streaming() -> dict[str, Any]:
        seen: list[str] = []
        done = sbx.run_code(
            "import sys\nprint('out')\nprint('err', file=sys.stderr)", on_stdout=lambda m: seen.append(m.line)
        )
        return {"stdout": done.logs.stdout, "stderr": done.logs.stderr, "on_stdout": seen}

    report.step("run_code_streams", streaming)

    def contexts() -> dict[str, Any]:
        ctx = sbx.create_code_context(cwd="/tmp")
        sbx.run_code("y = 'own'", context=ctx)
        own = sbx.run_code("import os\n(y, os.getcwd())", context=ctx)
        default = sbx.run_code("'y' in dir()")
        listed = ctx.id in {c.id for c in sbx.list_code_contexts()}
        sbx.remove_code_context(ctx)
        return {
            "own": [r.text for r in own.results],
            "default_sees_y": [r.text for r in default.results],
            "listed": listed,
            "removed": ctx.id not in {c.id for c in sbx.list_code_contexts()},
        }

    report.step("contexts", contexts)
    report.step("warm_1_plus_1", lambda: [r.text for r in sbx.run_code("1+1").results])


if __name__ == "__main__":
    raise SystemExit(main())
