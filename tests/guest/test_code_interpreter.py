"""The code-interpreter server (guest/code_interpreter/) against real Jupyter kernels.

The server runs as in the template: Debian's python3 with its ipykernel, jupyter_client and
matplotlib (``install/deps.sh`` installs them on the machine, as the template's recipe does in
the sandbox), from the repository's ``guest/`` on PYTHONPATH, on a free loopback port. The
stream is read line by line as E2B's SDK reads it (``e2b_code_interpreter`` 2.11.5,
``models._parse_output``): one JSON object a line, with a ``type``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import wait_for

REPO = Path(__file__).resolve().parents[2]
PYTHON = "/usr/bin/python3"
"""Debian's python3: the template's, with the Debian packages the server needs."""
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Interpreter:
    def __init__(self, url: str, home: Path) -> None:
        self.url = url
        self.home = home
        self.http = httpx.Client(base_url=url, timeout=httpx.Timeout(120.0))

    def execute(self, code: str, **fields: Any) -> list[dict[str, Any]]:
        """Every event of one execution, in order."""
        with self.http.stream("POST", "/execute", json={"code": code, **fields}) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"] == "application/x-ndjson"
            return [json.loads(line) for line in response.iter_lines()]


@pytest.fixture(scope="module")
def interpreter() -> Iterator[Interpreter]:
    home = Path(tempfile.mkdtemp(prefix="dnah-ci-"))
    port = _free_port()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [PYTHON, "-m", "guest.code_interpreter", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=home,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/health", timeout=5).text == "OK"
        except httpx.TransportError:
            assert proc.poll() is None, "the server exited"
            return False

    try:
        wait_for(healthy, what="the code interpreter to answer /health", timeout_s=60)
        yield Interpreter(url, home)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(home, ignore_errors=True)


def _of(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]


def test_variables_survive_and_the_cell_value_is_the_main_result(interpreter: Interpreter) -> None:
    interpreter.execute("x = 40")
    events = interpreter.execute("print('hello')\nx + 2")
    assert [e["type"] for e in events] == ["stdout", "result", "number_of_executions", "end_of_execution"]
    stdout, result, count, _ = events
    assert stdout["text"] == "hello\n" and isinstance(stdout["timestamp"], int)
    assert result == {"type": "result", "is_main_result": True, "text": "42"}
    assert count["execution_count"] >= 2
    again = interpreter.execute("x")
    assert _of(again, "number_of_executions")[0]["execution_count"] == count["execution_count"] + 1


def test_an_exception_is_an_error_with_its_traceback(interpreter: Interpreter) -> None:
    events = interpreter.execute("def f():\n    return undefined_name\nf()")
    (error,) = _of(events, "error")
    assert error["name"] == "NameError"
    assert error["value"] == "name 'undefined_name' is not defined"
    traceback = re.sub(r"\x1b\[[0-9;]*m", "", error["traceback"])  # IPython colours it, as E2B's does
    assert "----> 3 f()" in traceback and "return undefined_name" in traceback
    assert events[-1] == {"type": "end_of_execution"}
    assert not _of(events, "result")


def test_stderr_and_rich_results(interpreter: Interpreter) -> None:
    code = (
        "import sys\nfrom IPython.display import HTML, display\n"
        "sys.stderr.write('warned\\n'); sys.stderr.flush()\n"
        "display(HTML('<b>bold</b>'))\n"
        "{'a': 1}"
    )
    events = interpreter.execute(code)
    assert [e["text"] for e in _of(events, "stderr")] == ["warned\n"]
    shown, main = _of(events, "result")
    assert shown["html"] == "<b>bold</b>" and shown["is_main_result"] is False
    assert main["text"] == "{'a': 1}" and main["is_main_result"] is True


def test_a_matplotlib_figure_is_a_png_result(interpreter: Interpreter) -> None:
    events = interpreter.execute("import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()")
    pngs = [e for e in _of(events, "result") if "png" in e]
    assert len(pngs) == 1
    assert pngs[0]["is_main_result"] is False
    assert base64.b64decode(pngs[0]["png"]).startswith(PNG_MAGIC)
    assert pngs[0]["text"].startswith("<Figure")


def test_output_is_streamed_while_the_cell_runs(interpreter: Interpreter) -> None:
    """The cell prints, then waits for a file the test creates only after it has read the
    first line: the whole cell cannot finish before its first output reached the client."""
    flag = interpreter.home / "go-on"
    code = (
        "import os, time\nprint('first', flush=True)\n"
        f"while not os.path.exists({str(flag)!r}):\n    time.sleep(0.05)\nprint('second')"
    )
    seen: list[dict[str, Any]] = []
    with interpreter.http.stream("POST", "/execute", json={"code": code}) as response:
        for line in response.iter_lines():
            seen.append(json.loads(line))
            if seen[-1].get("text") == "first\n":
                flag.touch()
    assert [e["text"] for e in _of(seen, "stdout")] == ["first\n", "second\n"]
    assert seen[-1] == {"type": "end_of_execution"}


def test_env_vars_hold_for_one_execution(interpreter: Interpreter) -> None:
    read = "import os\nos.environ.get('DNAH_CI_VAR')"
    with_var = interpreter.execute(read, env_vars={"DNAH_CI_VAR": "set"})
    assert _of(with_var, "result")[0]["text"] == "'set'"
    assert not _of(interpreter.execute(read), "result")  # None: no value to show


def test_contexts_are_separate_kernels(interpreter: Interpreter) -> None:
    workdir = interpreter.home / "ctx"
    workdir.mkdir()
    created = interpreter.http.post("/contexts", json={"language": "python", "cwd": str(workdir)})
    assert created.status_code == 200
    context = created.json()
    assert context["language"] == "python" and context["cwd"] == str(workdir)
    listed = interpreter.http.get("/contexts").json()
    assert context in listed and len(listed) >= 2  # and the default one

    interpreter.execute("only_here = 7", context_id=context["id"])
    cwd = interpreter.execute("import os\nos.getcwd()", context_id=context["id"])
    assert _of(cwd, "result")[0]["text"] == repr(str(workdir))
    assert _of(interpreter.execute("only_here"), "error")[0]["name"] == "NameError"  # default context

    assert interpreter.http.post(f"/contexts/{context['id']}/restart").status_code == 204
    restarted = interpreter.execute("only_here", context_id=context["id"])
    assert _of(restarted, "error")[0]["name"] == "NameError"

    assert interpreter.http.delete(f"/contexts/{context['id']}").status_code == 204
    gone = interpreter.http.post("/execute", json={"code": "1", "context_id": context["id"]})
    assert gone.status_code == 404
    assert context not in interpreter.http.get("/contexts").json()


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"code": "1", "language": "javascript"}, 400),
        ({"code": "1", "language": "python", "context_id": "x"}, 400),
        ({"code": "1", "context_id": "no-such-context"}, 404),
        ({"code": 1}, 400),
        ({"code": "1", "env_vars": {"A": 1}}, 400),
    ],
)
def test_requests_it_cannot_serve(interpreter: Interpreter, body: dict[str, Any], status: int) -> None:
    response = interpreter.http.post("/execute", json=body)
    assert response.status_code == status
    assert response.text  # the SDK quotes the body in its exception


def test_a_client_that_goes_away_interrupts_its_cell(interpreter: Interpreter) -> None:
    """E2B's SDK enforces run_code's timeout by closing the connection; the kernel is
    interrupted so the context serves the next call instead of finishing the old cell."""
    created = interpreter.http.post("/contexts", json={}).json()
    code = "import time\nprint('started', flush=True)\ntime.sleep(3600)"
    body = {"code": code, "context_id": created["id"]}
    with (
        httpx.Client(base_url=interpreter.url, timeout=60) as client,
        client.stream("POST", "/execute", json=body) as response,
    ):
        first = json.loads(next(response.iter_lines()))
        assert first["text"] == "started\n"
    after = interpreter.execute("'free again'", context_id=created["id"])
    assert _of(after, "result")[0]["text"] == "'free again'"
    interpreter.http.delete(f"/contexts/{created['id']}")
