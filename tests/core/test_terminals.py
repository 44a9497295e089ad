"""Terminals end to end on a real stack (core → hostd's WebSocket → the agent's PTY stream):
the native ``/v1/sandboxes/{id}/terminal`` WebSocket and Daytona's PTY routes, spoken to the
core directly with the ``websockets`` client (the gateway's forwarding is covered in
``tests/gateway/test_websockets.py``, the Daytona SDK in ``tests/sdk/test_daytona_pty.py``)."""

from __future__ import annotations

import base64
import json
import re
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from cli.stack import Stack


def create_sandbox(client: httpx.Client) -> str:
    resp = client.post("/v1/sandboxes", json={})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


@pytest.fixture
def core_org(stack: Stack, org: httpx.Client) -> Iterator[httpx.Client]:
    """The ``org`` fixture's key, against the core directly."""
    with httpx.Client(
        base_url=stack.config.core_url, headers={"authorization": org.headers["authorization"]}, timeout=60
    ) as client:
        yield client


def ws_url(stack: Stack, path: str) -> str:
    return stack.config.core_url.replace("http://", "ws://") + path


def open_ws(stack: Stack, client: httpx.Client, path: str, **kwargs: object) -> ClientConnection:
    return connect(
        ws_url(stack, path),
        additional_headers={"authorization": client.headers["authorization"]},
        open_timeout=20,
        proxy=None,
        **kwargs,  # type: ignore[arg-type]
    )


class Screen:
    """What a terminal WebSocket has sent so far."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.output = bytearray()
        self.texts: list[str] = []

    def pull(self, timeout: float = 15) -> None:
        message = self.ws.recv(timeout=timeout)
        if isinstance(message, bytes):
            self.output += message
        else:
            self.texts.append(message)

    def expect(self, pattern: bytes, timeout: float = 15) -> re.Match[bytes]:
        deadline = time.monotonic() + timeout
        while (found := re.search(pattern, self.output)) is None:
            self.pull(max(0.1, deadline - time.monotonic()))
        return found

    def type(self, text: str) -> None:
        self.ws.send(text.encode())


def sandbox_processes(client: httpx.Client, sid: str) -> str:
    resp = client.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": ["ps", "-eo", "pid,sid,args"]})
    assert resp.status_code == 200, resp.text
    return resp.json()["stdout"]


def test_native_terminal(stack: Stack, core_org: httpx.Client) -> None:
    sid = create_sandbox(core_org)
    before = core_org.get(f"/v1/sandboxes/{sid}").json()["last_activity_at"]
    time.sleep(1.1)
    with open_ws(stack, core_org, f"/v1/sandboxes/{sid}/terminal?cols=100&rows=30&cwd=/tmp") as ws:
        screen = Screen(ws)
        screen.pull()
        ready = json.loads(screen.texts[0])
        assert ready["type"] == "ready" and (ready["cols"], ready["rows"]) == (100, 30)
        screen.type("echo h''i-$(id -un); pwd; stty size\n")
        screen.expect(rb"hi-\w+\r?\n/tmp\r?\n30 100")
        ws.send(json.dumps({"type": "resize", "cols": 120, "rows": 40}))
        screen.type("stty size\n")
        screen.expect(rb"40 120")
        ws.send("echo t''ext-$((2+3))\n")  # text that is not a resize is typed too
        screen.expect(rb"text-5")
        screen.type("exit 3\n")
        with pytest.raises(ConnectionClosed):
            while True:
                screen.pull()
        assert json.loads(screen.texts[-1]) == {"type": "exit", "exit_code": 3}
        assert ws.close_code == 1000
    after = core_org.get(f"/v1/sandboxes/{sid}").json()["last_activity_at"]
    assert after > before


def test_a_dropped_client_leaves_no_process(stack: Stack, core_org: httpx.Client) -> None:
    sid = create_sandbox(core_org)
    with open_ws(stack, core_org, f"/v1/sandboxes/{sid}/terminal") as ws:
        screen = Screen(ws)
        screen.type("sleep 1000 & echo B''G=$!; sleep 2000\n")
        job = screen.expect(rb"BG=(\d+)")[1].decode()
        table = sandbox_processes(core_org, sid)
        assert "sleep 1000" in table and "sleep 2000" in table
        shell_sid = next(line.split()[1] for line in table.splitlines() if line.split()[0] == job)
        ws.socket.shutdown(socket.SHUT_RDWR)  # the client vanishes mid-command, no close frame
    deadline = time.monotonic() + 10
    while True:
        table = sandbox_processes(core_org, sid)
        survivors = [line for line in table.splitlines()[1:] if line.split()[1] == shell_sid]
        if not survivors and "sleep" not in table:
            break
        assert time.monotonic() < deadline, table
        time.sleep(0.2)


def test_refusals(stack: Stack, core_org: httpx.Client) -> None:
    sid = create_sandbox(core_org)
    with pytest.raises(InvalidStatus) as unauthenticated:
        connect(ws_url(stack, f"/v1/sandboxes/{sid}/terminal"), proxy=None).close()
    assert unauthenticated.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as missing:
        open_ws(stack, core_org, "/v1/sandboxes/sbx-nope/terminal").close()
    assert missing.value.response.status_code == 404
    assert json.loads(missing.value.response.body or b"{}")["code"] == "not_found"
    with pytest.raises(InvalidStatus) as bad_size:
        open_ws(stack, core_org, f"/v1/sandboxes/{sid}/terminal?cols=0").close()
    assert bad_size.value.response.status_code == 400
    with pytest.raises(InvalidStatus) as bad_cwd:
        open_ws(stack, core_org, f"/v1/sandboxes/{sid}/terminal?cwd=/no/such").close()
    assert bad_cwd.value.response.status_code == 400
    with pytest.raises(InvalidStatus) as unknown_session:
        open_ws(stack, core_org, f"/v1/sandboxes/{sid}/terminal?session_id=nope").close()
    assert unknown_session.value.response.status_code == 404


def test_daytona_pty_routes(stack: Stack, core_org: httpx.Client) -> None:
    sid = create_sandbox(core_org)
    base = f"/toolbox/{sid}/process/pty"
    made = core_org.post(base, json={"id": "rest", "cols": 90, "rows": 20, "envs": {"GREETING": "hey"}})
    assert made.status_code == 201, made.text
    assert made.json() == {"sessionId": "rest"}
    assert core_org.post(base, json={"id": "rest"}).status_code == 409
    info = core_org.get(f"{base}/rest").json()
    assert info["id"] == "rest" and (info["cols"], info["rows"], info["active"]) == (90, 20, True)
    assert info["envs"] == {"GREETING": "hey"} and info["lazyStart"] is False and info["createdAt"]
    resized = core_org.post(f"{base}/rest/resize", json={"cols": 100, "rows": 50})
    assert resized.status_code == 200 and (resized.json()["cols"], resized.json()["rows"]) == (100, 50)
    assert core_org.post(f"{base}/rest/resize", json={"cols": 0, "rows": 5}).status_code == 400
    assert core_org.get(f"{base}/missing").status_code == 404

    # connect to it, type, leave: a REST-made session outlives its clients
    with open_ws(stack, core_org, f"{base}/rest/connect", subprotocols=["X-Daytona-Pty-Exit-Control"]) as ws:
        assert ws.subprotocol == "X-Daytona-Pty-Exit-Control"
        screen = Screen(ws)
        screen.pull()
        assert json.loads(screen.texts[0]) == {"type": "control", "status": "connected"}
        screen.type("echo $GREETING-$((6*7)); stty size\n")
        screen.expect(rb"hey-42\r?\n50 100")
    listed = core_org.get(base).json()["sessions"]
    assert [(s["id"], s["active"]) for s in listed] == [("rest", True)]

    # create-connect: envs in a subprotocol; exit control; the close carries the exit code
    envs = base64.urlsafe_b64encode(json.dumps({"ONE": "1"}).encode()).rstrip(b"=").decode()
    offers = ["X-Daytona-Pty-Exit-Control", f"X-Daytona-Pty-Envs~{envs}"]
    with open_ws(
        stack, core_org, f"{base}/create-connect?id=live&cols=70&rows=15", subprotocols=offers
    ) as ws:
        assert ws.subprotocol == "X-Daytona-Pty-Exit-Control"
        screen = Screen(ws)
        screen.type("echo O''NE=$ONE; stty size; exit 7\n")
        with pytest.raises(ConnectionClosed):
            while True:
                screen.pull()
        assert b"ONE=1" in screen.output and b"15 70" in screen.output
        assert json.loads(screen.texts[0]) == {"type": "control", "status": "connected"}
        assert json.loads(screen.texts[-1]) == {"type": "control", "status": "exited", "exitCode": 7}
        assert (ws.close_code, json.loads(ws.close_reason or "{}")) == (1000, {"exitCode": 7})
    assert core_org.get(f"{base}/live").status_code == 404  # ephemeral: gone with its shell

    with pytest.raises(InvalidStatus) as taken:
        open_ws(stack, core_org, f"{base}/create-connect?id=rest").close()
    assert taken.value.response.status_code == 409
    with pytest.raises(InvalidStatus) as no_id:
        open_ws(stack, core_org, f"{base}/create-connect").close()
    assert no_id.value.response.status_code == 400

    # kill: an attached client sees the exit
    with open_ws(stack, core_org, f"{base}/rest/connect", subprotocols=["X-Daytona-Pty-Exit-Control"]) as ws:
        screen = Screen(ws)
        screen.pull()
        killed = core_org.delete(f"{base}/rest")
        assert killed.status_code == 200, killed.text
        with pytest.raises(ConnectionClosed):
            while True:
                screen.pull()
        assert json.loads(screen.texts[-1])["status"] == "exited" and ws.close_code == 1000
    assert core_org.get(base).json() == {"sessions": []}
    assert core_org.delete(f"{base}/rest").status_code == 404

    # lazyStart: the shell starts at the first connect
    assert core_org.post(base, json={"id": "lazy", "lazyStart": True}).status_code == 201
    lazy = core_org.get(f"{base}/lazy").json()
    assert (lazy["lazyStart"], lazy["active"]) == (True, False)
    with open_ws(stack, core_org, f"{base}/lazy/connect") as ws:
        assert ws.subprotocol is None  # exit control not offered: none selected
        assert core_org.get(f"{base}/lazy").json()["active"] is True
    assert core_org.delete(f"{base}/lazy").status_code == 200
