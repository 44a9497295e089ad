"""The code-interpreter template end to end: a ``code-interpreter-v1`` sandbox made through the
gateway, whose agent starts the template's service (``/etc/dnah/services.json``), reached at
``/preview/{id}/49999/…`` over plain HTTP as E2B's SDK reaches it (the SDK itself:
tests/sdk). Variables persist in a context, an exception comes back with its traceback, a
matplotlib figure as a PNG, output streams while the cell runs, contexts are kernels of
their own, and the service comes back when it dies. The service answers as soon as the
create has returned."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from cli.stack import Stack
from tests.support import wait_for

TEMPLATE = "code-interpreter-v1"
PORT = 49999
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Interpreter:
    """The sandbox's code interpreter through the gateway's preview path."""

    def __init__(self, gateway_url: str, sandbox_id: str, token: str) -> None:
        self.http = httpx.Client(
            base_url=f"{gateway_url}/preview/{sandbox_id}/{PORT}",
            headers={"e2b-traffic-access-token": token},
            timeout=httpx.Timeout(120.0),
        )

    def execute(self, code: str, **fields: Any) -> list[dict[str, Any]]:
        with self.http.stream("POST", "/execute", json={"code": code, **fields}) as response:
            assert response.status_code == 200, response.read()
            return [json.loads(line) for line in response.iter_lines()]


def template_prepared(stack: Stack, template: str = TEMPLATE) -> bool:
    """Whether the stack's hostd has imported the template into its pool: the shared stack
    asks for it (``DNAH_PREPARE_TEMPLATES``, tests/conftest.py) in the background, and a
    create meanwhile waits for that import, longer than the core waits for a create when the
    machine is loaded."""
    log = stack.var / "log" / "hostd.log"
    return any(
        '"template prepared"' in line and f'"{template}"' in line
        for line in log.read_text(errors="replace").splitlines()
    )


@pytest.fixture(scope="module")
def interpreter(stack: Stack, gateway: httpx.Client) -> Iterator[tuple[Interpreter, str, httpx.Client]]:
    wait_for(lambda: template_prepared(stack), what=f"hostd to prepare {TEMPLATE}", timeout_s=300)
    key = gateway.post("/v1/api-keys", json={"name": "code-interpreter"}).json()["key"]
    with httpx.Client(
        base_url=stack.config.gateway_url, headers={"authorization": f"Bearer {key}"}, timeout=300
    ) as org:
        created = org.post("/v1/sandboxes", json={"template": TEMPLATE, "ram_mb": 1024})
        assert created.status_code == 201, created.text
        sandbox_id = created.json()["id"]
        try:
            token = org.get(f"/sandbox/{sandbox_id}/ports/{PORT}/preview-url").json()["token"]
            client = Interpreter(stack.config.gateway_url, sandbox_id, token)
            # the create returned once the service's ready_port listened (hosts/service_ready.py):
            # E2B's SDK calls run_code right after Sandbox.create, with no wait of its own
            health = client.http.get("/health")
            if health.status_code != 200:
                _served_after_a_bounded_wait(stack, org, client, sandbox_id, health)
            assert client.http.get("/health").text == "OK"
            yield client, sandbox_id, org
        finally:
            org.delete(f"/v1/sandboxes/{sandbox_id}")


def _served_after_a_bounded_wait(
    stack: Stack, org: httpx.Client, client: Interpreter, sandbox_id: str, first: httpx.Response
) -> None:
    """The service did not answer right after the create. That is a fault unless hostd's
    wait for its port ran out (``service not ready``: a create waits at most 20 s, then hands
    the sandbox out anyway); then the service must still come up. Either failure names what
    the proxy answered, what hostd logged and the service's own log, on one line."""
    said_ready = _hostd_said(stack, sandbox_id, "services ready")
    if said_ready or not _hostd_said(stack, sandbox_id, "service not ready"):
        raise AssertionError(f"not serving right after the create: {_why(stack, org, sandbox_id, first)}")
    try:
        wait_for(lambda: client.http.get("/health").status_code == 200, what="the service", timeout_s=120)
    except AssertionError:
        raise AssertionError(f"never served: {_why(stack, org, sandbox_id, first)}") from None


def _hostd_said(stack: Stack, sandbox_id: str, event: str) -> bool:
    log = stack.var / "log" / "hostd.log"
    return any(
        f'"{event}"' in line and sandbox_id in line for line in log.read_text(errors="replace").splitlines()
    )


def _why(stack: Stack, org: httpx.Client, sandbox_id: str, answer: httpx.Response) -> str:
    log = (stack.var / "log" / "hostd.log").read_text(errors="replace").splitlines()
    hostd = [line for line in log if sandbox_id in line][-8:]
    inside = org.post(
        f"/v1/sandboxes/{sandbox_id}/exec",
        json={"cmd": ["sh", "-c", "tail -c 1500 /tmp/dnah-services/*.log; ps -eo pid,etimes,args"]},
    )
    return " | ".join(
        [f"proxy {answer.status_code} {answer.text[:300]}", *hostd, f"in the sandbox: {inside.text[:3000]}"]
    ).replace("\n", " / ")


def _of(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]


def test_variables_persist_and_errors_carry_their_traceback(
    interpreter: tuple[Interpreter, str, httpx.Client],
) -> None:
    client, _, _ = interpreter
    client.execute("import pandas as pd\ntable = pd.DataFrame({'n': [1, 2, 3]})")
    events = client.execute("print('sum', flush=True)\nint(table['n'].sum())")
    assert [e["text"] for e in _of(events, "stdout")] == ["sum\n"]
    assert _of(events, "result") == [{"type": "result", "is_main_result": True, "text": "6"}]
    assert events[-1] == {"type": "end_of_execution"}

    failed = client.execute("table['missing']")
    (error,) = _of(failed, "error")
    assert error["name"] == "KeyError" and "'missing'" in error["value"]
    assert "Traceback" in error["traceback"]


def test_a_matplotlib_figure_comes_back_as_a_png(interpreter: tuple[Interpreter, str, httpx.Client]) -> None:
    client, _, _ = interpreter
    events = client.execute("import matplotlib.pyplot as plt\nplt.bar(['a', 'b'], [3, 5])\nplt.show()")
    (png,) = [e for e in _of(events, "result") if "png" in e]
    assert base64.b64decode(png["png"]).startswith(PNG_MAGIC) and png["is_main_result"] is False


def test_output_streams_while_the_cell_runs(interpreter: tuple[Interpreter, str, httpx.Client]) -> None:
    """The cell waits for a file that the test writes through the API only after the first
    line reached it through gateway, core and hostd."""
    client, sandbox_id, org = interpreter
    code = (
        "import os, time\nprint('first', flush=True)\n"
        "while not os.path.exists('/tmp/go-on'):\n    time.sleep(0.05)\nprint('second')"
    )
    seen: list[dict[str, Any]] = []
    with client.http.stream("POST", "/execute", json={"code": code}) as response:
        for line in response.iter_lines():
            seen.append(json.loads(line))
            if seen[-1].get("text") == "first\n":
                put = org.put(f"/v1/sandboxes/{sandbox_id}/files", params={"path": "/tmp/go-on"}, content=b"")
                assert put.status_code in (200, 201), put.text
    assert [e["text"] for e in _of(seen, "stdout")] == ["first\n", "second\n"]


def test_contexts_are_kernels_of_their_own(interpreter: tuple[Interpreter, str, httpx.Client]) -> None:
    client, _, _ = interpreter
    context = client.http.post("/contexts", json={"cwd": "/tmp"}).json()
    assert context["language"] == "python" and context["cwd"] == "/tmp"
    assert context in client.http.get("/contexts").json()
    client.execute("mine = 'ctx'", context_id=context["id"])
    assert _of(client.execute("mine", context_id=context["id"]), "result")[0]["text"] == "'ctx'"
    assert _of(client.execute("mine"), "error")[0]["name"] == "NameError"
    assert client.http.delete(f"/contexts/{context['id']}").status_code == 204
    assert client.http.post("/execute", json={"code": "1", "context_id": context["id"]}).status_code == 404
    assert client.http.post("/contexts", json={"language": "javascript"}).status_code == 400


def test_the_service_is_started_again_when_it_dies(
    interpreter: tuple[Interpreter, str, httpx.Client],
) -> None:
    client, sandbox_id, org = interpreter
    killed = org.post(
        f"/v1/sandboxes/{sandbox_id}/exec",
        json={"cmd": ["sudo", "pkill", "-KILL", "-f", "-u", "user", "guest.code_interpreter"]},
    )
    assert killed.status_code == 200 and killed.json()["exit_code"] == 0, killed.text

    def answers() -> bool:
        try:
            return _of(client.execute("'back'"), "result")[0]["text"] == "'back'"
        except (httpx.TransportError, AssertionError):
            return False

    wait_for(answers, what="the code interpreter to be started again", timeout_s=120)
