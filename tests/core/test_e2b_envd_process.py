"""E2B's envd at the core, ``process.Process``: Connect server streams (``Start``, ``Connect``)
with their envelopes, keepalives and end-of-stream, a non-zero exit, a timeout that ends in
``deadline_exceeded``, a background process re-attached with its output from the start,
signals, stdin (``SendInput``, ``StreamInput``, ``CloseStdin``) and a PTY resized with
``Update``. Plain HTTP in E2B's wire shapes (what its SDK sends: ``bash -l -c`` commands)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from cli.stack import Stack
from tests.core.e2b_envd_support import (
    STREAM,
    call_stream,
    envd_client,
    envelope,
    give_token,
    read_stream,
    unary,
)
from tests.core.test_files import create
from tests.support import wait_for


@pytest.fixture
async def envd(stack: Stack, stack_db: asyncpg.Pool, org: httpx.Client) -> AsyncIterator[httpx.Client]:
    sid = create(org)
    token = await give_token(stack_db, sid)
    with envd_client(stack.config.core_url, sid, token) as client:
        yield client


def command(script: str, **extra: Any) -> dict[str, Any]:
    return {"process": {"cmd": "/bin/bash", "args": ["-l", "-c", script], **extra}}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def events(envelopes: list[tuple[int, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The messages' events and the end-of-stream message (which must come last, once)."""
    *messages, (flags, end) = envelopes
    assert flags == 2 and all(f == 0 for f, _ in messages), envelopes
    return [m["event"] for _, m in messages], end


def output(evs: list[dict[str, Any]], stream: str) -> bytes:
    return b"".join(base64.b64decode(e["data"][stream]) for e in evs if stream in e.get("data", {}))


def send_input(
    envd: httpx.Client, selector: dict[str, Any], data: bytes, kind: str = "stdin"
) -> httpx.Response:
    return unary(envd, "process.Process/SendInput", {"process": selector, "input": {kind: b64(data)}})


def signal(envd: httpx.Client, selector: dict[str, Any], name: str) -> httpx.Response:
    return unary(envd, "process.Process/SendSignal", {"process": selector, "signal": name})


def open_start(envd: httpx.Client, message: dict[str, Any]) -> httpx.Response:
    """A ``Start`` stream left open for the test to read (and close) as it goes."""
    request = envd.build_request(
        "POST", "/process.Process/Start", content=envelope(message), headers={"Content-Type": STREAM}
    )
    return envd.send(request, stream=True)


def running(envd: httpx.Client) -> dict[int, dict[str, Any]]:
    resp = unary(envd, "process.Process/List", {})
    assert resp.status_code == 200, resp.text
    return {p["pid"]: p for p in resp.json().get("processes", [])}


def test_start_streams_output_and_a_non_zero_exit(envd: httpx.Client) -> None:
    evs, end = events(
        call_stream(
            envd,
            "process.Process/Start",
            {**command("echo out; echo err >&2; pwd; echo $FOO; exit 3"), "stdin": False},
        )
    )
    assert end == {}
    assert "start" in evs[0] and evs[0]["start"]["pid"] > 0
    assert evs[-1] == {"end": {"exitCode": 3, "exited": True, "status": "exit status 3"}}
    assert output(evs, "stdout").startswith(b"out\n")
    assert output(evs, "stderr") == b"err\n"
    evs, _ = events(
        call_stream(envd, "process.Process/Start", command("pwd; echo $FOO", cwd="/tmp", envs={"FOO": "bar"}))
    )
    assert output(evs, "stdout") == b"/tmp\nbar\n"
    assert evs[-1]["end"]["exitCode"] == 0 and "exitCode" in evs[-1]["end"]
    # the longest deadline Connect allows (10 digits, about 115 days) is past the agent's
    # own bound (a day): the call keeps it, the agent runs the process without one
    evs, end = events(
        call_stream(envd, "process.Process/Start", command("echo ok"), **{"Connect-Timeout-Ms": "9999999999"})
    )
    assert end == {} and output(evs, "stdout") == b"ok\n"


def test_timeout_is_deadline_exceeded_and_kills_the_process(envd: httpx.Client) -> None:
    messages = call_stream(
        envd, "process.Process/Start", command("sleep 300"), **{"Connect-Timeout-Ms": "1500"}
    )
    evs, end = events(messages)
    assert "start" in evs[0]
    assert end["error"]["code"] == "deadline_exceeded", end
    pid = evs[0]["start"]["pid"]
    wait_for(lambda: pid not in running(envd), what="the timed-out process to be killed")


def test_keepalives_on_a_quiet_stream(envd: httpx.Client) -> None:
    messages = call_stream(
        envd, "process.Process/Start", command("sleep 3; echo done"), **{"Keepalive-Ping-Interval": "1"}
    )
    evs, end = events(messages)
    assert end == {}
    assert {"keepalive": {}} in evs
    assert output(evs, "stdout") == b"done\n"


def test_background_process_reconnected_with_its_output_and_stdin(envd: httpx.Client) -> None:
    resp = open_start(envd, {**command("echo one; echo two; read line; echo got $line"), "tag": "bg"})
    first = next(read_stream(resp))
    resp.close()  # the client leaves: the process runs on
    pid = first[1]["event"]["start"]["pid"]
    listed = wait_for(lambda: running(envd).get(pid), what="the background process in List")
    assert listed["tag"] == "bg"
    assert listed["config"]["cmd"] == "/bin/bash" and listed["config"]["args"][0] == "-l"

    sent = unary(
        envd, "process.Process/SendInput", {"process": {"tag": "bg"}, "input": {"stdin": b64(b"hello\n")}}
    )
    assert sent.status_code == 200 and sent.json() == {}, sent.text
    evs, end = events(call_stream(envd, "process.Process/Connect", {"process": {"pid": pid}}))
    assert end == {} and evs[0] == {"start": {"pid": pid}}
    assert output(evs, "stdout") == b"one\ntwo\ngot hello\n"
    assert evs[-1]["end"]["exitCode"] == 0

    unknown = call_stream(envd, "process.Process/Connect", {"process": {"pid": 999999}})
    assert unknown[-1][1]["error"]["code"] == "not_found", unknown


def test_signals(envd: httpx.Client) -> None:
    request = envd.build_request(
        "POST",
        "/process.Process/Start",
        content=envelope(command("sleep 300")),
        headers={"Content-Type": STREAM},
    )
    resp = envd.send(request, stream=True)
    pid = next(read_stream(resp))[1]["event"]["start"]["pid"]
    resp.close()
    killed = signal(envd, {"pid": pid}, "SIGNAL_SIGKILL")
    assert killed.status_code == 200, killed.text
    wait_for(lambda: pid not in running(envd), what="the killed process to leave List")
    evs, _ = events(call_stream(envd, "process.Process/Connect", {"process": {"pid": pid}}))
    assert evs[-1] == {"end": {"exitCode": -1, "exited": False, "status": "signal: killed"}}
    missing = unary(
        envd, "process.Process/SendSignal", {"process": {"pid": 999999}, "signal": "SIGNAL_SIGTERM"}
    )
    assert missing.status_code == 404 and missing.json()["code"] == "not_found", missing.text
    bad = signal(envd, {"pid": pid}, "SIGNAL_UNSPECIFIED")
    assert bad.json()["code"] == "invalid_argument", bad.text


def test_stdin_send_close_and_stream_input(envd: httpx.Client) -> None:
    resp = open_start(envd, command("cat"))
    stream = read_stream(resp)
    pid = next(stream)[1]["event"]["start"]["pid"]
    sent = unary(
        envd, "process.Process/SendInput", {"process": {"pid": pid}, "input": {"stdin": b64(b"abc\n")}}
    )
    assert sent.status_code == 200, sent.text
    streamed = envd.post(
        "/process.Process/StreamInput",
        content=iter(
            [
                envelope({"start": {"process": {"pid": pid}}}),
                envelope({"data": {"input": {"stdin": b64(b"def\n")}}}),
                envelope({"keepalive": {}}),
                envelope({"data": {"input": {"stdin": b64(b"ghi\n")}}}),
            ]
        ),
        headers={"Content-Type": STREAM},
    )
    assert streamed.status_code == 200
    assert streamed.content == envelope({}) + envelope({}, flags=2), streamed.content
    closed = unary(envd, "process.Process/CloseStdin", {"process": {"pid": pid}})
    assert closed.status_code == 200, closed.text
    evs, end = events(list(stream))
    resp.close()
    assert end == {}
    assert output(evs, "stdout") == b"abc\ndef\nghi\n"
    assert evs[-1]["end"]["exitCode"] == 0


def test_pty_input_and_resize(envd: httpx.Client) -> None:
    resp = open_start(
        envd,
        {
            "process": {"cmd": "/bin/bash", "args": ["-i", "-l"], "envs": {"TERM": "xterm"}},
            "pty": {"size": {"cols": 80, "rows": 24}},
        },
    )
    stream = read_stream(resp)
    pid = next(stream)[1]["event"]["start"]["pid"]
    seen = bytearray()

    def type_and_wait(keys: bytes, expect: bytes) -> None:
        sent = unary(
            envd, "process.Process/SendInput", {"process": {"pid": pid}, "input": {"pty": b64(keys)}}
        )
        assert sent.status_code == 200, sent.text
        for _, message in stream:
            seen.extend(base64.b64decode(message.get("event", {}).get("data", {}).get("pty", "")))
            if expect in seen:
                return
        raise AssertionError(f"{expect!r} never appeared in {bytes(seen)!r}")

    type_and_wait(b"stty size\n", b"24 80")
    resized = unary(
        envd, "process.Process/Update", {"process": {"pid": pid}, "pty": {"size": {"cols": 100, "rows": 40}}}
    )
    assert resized.status_code == 200, resized.text
    type_and_wait(b"stty size\n", b"40 100")
    send_input(envd, {"pid": pid}, b"exit 0\n", "pty")
    rest = list(stream)
    resp.close()
    assert rest[-1] == (2, {})
    assert rest[-2][1]["event"]["end"]["exitCode"] == 0
