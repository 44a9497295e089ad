"""The stdlib agent (``guest/framing.py``) and ``contracts.guest`` (msgspec) speak the same bytes.

Each guest → host message is encoded by the agent and by msgspec and compared byte for byte,
then the agent's bytes are decoded by msgspec. Each host → guest message is encoded by msgspec
and decoded by the agent, and the agent's encoder reproduces msgspec's bytes for it too.
"""

from __future__ import annotations

import typing

import msgspec
import pytest

from contracts import guest
from guest import framing

AWKWARD_TEXT = 'naïve ✓ 😀 "quoted" back\\slash\n\ttab \x01\x1f\x7f \u2028 </script> \ufffd'


def test_constants_match() -> None:
    assert framing.AGENT_PORT == guest.AGENT_PORT
    assert framing.PROTOCOL_VERSION == guest.PROTOCOL_VERSION
    assert framing.BINARY_FLAG == guest.BINARY_FLAG
    assert framing.LENGTH_MASK == guest.LENGTH_MASK
    assert framing.MAX_JSON_FRAME == guest.MAX_JSON_FRAME


# guest → host --------------------------------------------------------------------------------

GUEST_MESSAGES: list[tuple[dict[str, object], guest.GuestToHost]] = [
    (
        framing.pong(1, "dnah-guest/0.2.0"),
        guest.Pong(id=1, version=guest.PROTOCOL_VERSION, agent="dnah-guest/0.2.0"),
    ),
    (
        framing.exec_result(2, stdout="hello\n", stderr="", exit_code=0, duration_ms=12.5, timed_out=False),
        guest.ExecResult(id=2, stdout="hello\n", stderr="", exit_code=0, duration_ms=12.5),
    ),
    (
        framing.exec_result(
            2**40, stdout=AWKWARD_TEXT, stderr=AWKWARD_TEXT, exit_code=-9, duration_ms=0.0, timed_out=True
        ),
        guest.ExecResult(
            id=2**40, stdout=AWKWARD_TEXT, stderr=AWKWARD_TEXT, exit_code=-9, duration_ms=0.0, timed_out=True
        ),
    ),
    (
        framing.exec_result(
            3, stdout="", stderr="x: not found\n", exit_code=127, duration_ms=0.4, timed_out=False
        ),
        guest.ExecResult(id=3, stdout="", stderr="x: not found\n", exit_code=127, duration_ms=0.4),
    ),
    (
        framing.dirs_result(4, home="/home/user", work="/home/ünï", project="/workspace"),
        guest.DirsResult(id=4, home="/home/user", work="/home/ünï", project="/workspace"),
    ),
    (
        framing.metrics_result(
            5, cpus=2.0, mem_limit_bytes=512 * 2**20, mem_used_bytes=123_456_789, load_1m=0.52
        ),
        guest.MetricsResult(
            id=5, cpus=2.0, mem_limit_bytes=512 * 2**20, mem_used_bytes=123_456_789, load_1m=0.52
        ),
    ),
    (
        framing.metrics_result(6, cpus=1 / 3, mem_limit_bytes=0, mem_used_bytes=0, load_1m=12.345678),
        guest.MetricsResult(id=6, cpus=0.333, mem_limit_bytes=0, mem_used_bytes=0, load_1m=12.346),
    ),
    (
        framing.error(0, "bad_request", AWKWARD_TEXT),
        guest.Error(id=0, code="bad_request", message=AWKWARD_TEXT),
    ),
    (framing.error(7, "internal", "boom"), guest.Error(id=7, code="internal", message="boom")),
]


@pytest.mark.parametrize(("agent_message", "struct"), GUEST_MESSAGES)
def test_guest_messages_encode_identically(
    agent_message: dict[str, object], struct: guest.GuestToHost
) -> None:
    agent_frame = framing.encode(agent_message)
    assert agent_frame == guest.encode(struct)
    length, binary = guest.parse_header(agent_frame[:4])
    assert (length, binary) == (len(agent_frame) - 4, False)
    assert guest.decode_from_guest(agent_frame[4:]) == struct


@pytest.mark.parametrize(
    ("measured", "sent"),
    [
        (0.0, 0.0),
        (0.0004, 0.0),
        (0.001, 0.001),
        (0.00049999, 0.0),
        (12.3456789, 12.346),
        (1234567.8915, 1234567.891),
        (86_400_000.0, 86_400_000.0),
    ],
)
def test_duration_is_rounded_to_microseconds_in_fixed_notation(measured: float, sent: float) -> None:
    """msgspec writes small and huge floats in exponent notation differently from Python's
    ``repr``; rounding to 3 decimals keeps every realistic duration in the range where both
    print the same digits."""
    agent_frame = framing.encode(
        framing.exec_result(1, stdout="", stderr="", exit_code=0, duration_ms=measured, timed_out=False)
    )
    struct = guest.ExecResult(id=1, stdout="", stderr="", exit_code=0, duration_ms=sent)
    assert agent_frame == guest.encode(struct)


# host → guest --------------------------------------------------------------------------------

HOST_MESSAGES: list[tuple[guest.HostToGuest, framing.Request]] = [
    (guest.Ping(id=1), framing.PingRequest(id=1)),
    (guest.Exec(id=2, argv=["true"]), framing.ExecRequest(id=2, argv=["true"])),
    (
        guest.Exec(
            id=2**53,
            argv=["sh", "-c", AWKWARD_TEXT],
            env={"LANG": "C.UTF-8", "WEIRD": AWKWARD_TEXT},
            cwd="/workspace/ünï",
            timeout_ms=1,
        ),
        framing.ExecRequest(
            id=2**53,
            argv=["sh", "-c", AWKWARD_TEXT],
            env={"LANG": "C.UTF-8", "WEIRD": AWKWARD_TEXT},
            cwd="/workspace/ünï",
            timeout_ms=1,
        ),
    ),
    (
        guest.CodeRun(id=3, language="python", code="print(1)"),
        framing.CodeRunRequest(id=3, language="python", code="print(1)"),
    ),
    (
        guest.CodeRun(
            id=4,
            language="typescript",
            code=AWKWARD_TEXT,
            argv=["-x", AWKWARD_TEXT],
            env={"A": "b"},
            cwd="/tmp",
            timeout_ms=5,
        ),
        framing.CodeRunRequest(
            id=4,
            language="typescript",
            code=AWKWARD_TEXT,
            argv=["-x", AWKWARD_TEXT],
            env={"A": "b"},
            cwd="/tmp",
            timeout_ms=5,
        ),
    ),
    (guest.Dirs(id=5), framing.DirsRequest(id=5)),
    (guest.Metrics(id=6), framing.MetricsRequest(id=6)),
]


@pytest.mark.parametrize(("struct", "request_"), HOST_MESSAGES)
def test_host_messages_decode_in_the_agent(struct: guest.HostToGuest, request_: framing.Request) -> None:
    frame = guest.encode(struct)
    length, binary = framing.parse_header(frame[:4])
    assert (length, binary) == (len(frame) - 4, False)
    assert framing.parse_request(frame[4:]) == request_


@pytest.mark.parametrize(("struct", "request_"), HOST_MESSAGES)
def test_host_messages_encode_identically(struct: guest.HostToGuest, request_: framing.Request) -> None:
    """The agent's encoder is generic: given the fields in msgspec's order it reproduces
    msgspec's bytes exactly."""
    fields = {"t": struct.__struct_config__.tag}
    fields.update((name, getattr(request_, name)) for name in struct.__struct_fields__)
    assert framing.encode(fields) == guest.encode(struct)
    assert guest.decode_from_host(framing.encode(fields)[4:]) == struct


def test_defaults_agree() -> None:
    payload = b'{"t":"exec","id":5,"argv":["ls"]}'
    struct = guest.decode_from_host(payload)
    assert isinstance(struct, guest.Exec)
    request = framing.parse_request(payload)
    assert isinstance(request, framing.ExecRequest)
    assert (request.env, request.cwd, request.timeout_ms) == (struct.env, struct.cwd, struct.timeout_ms)

    payload = b'{"t":"code.run","id":5,"language":"bash","code":"true"}'
    code_run = guest.decode_from_host(payload)
    assert isinstance(code_run, guest.CodeRun)
    code_request = framing.parse_request(payload)
    assert isinstance(code_request, framing.CodeRunRequest)
    assert (code_request.argv, code_request.env, code_request.cwd, code_request.timeout_ms) == (
        code_run.argv,
        code_run.env,
        code_run.cwd,
        code_run.timeout_ms,
    )


REQUIRED_FIELDS: dict[str, object] = {
    "language": "python",
    "env": {},
    "code": "",
    "argv": ["x"],
    "url": "u",
    "path": "p",
    "files": ["f"],
    "message": "m",
    "name": "n",
    "ref": "r",
    "session_id": "s",
    "command_id": "c",
    "command": "true",
    "pattern": "*",
    "source": "a",
    "destination": "b",
    "find": "x",
    "replace": "y",
    "cols": 80,
    "rows": 24,
}
"""Enough fields for every request type's required ones."""


def test_every_request_has_a_reply_type_and_the_agent_parses_it() -> None:
    """``REPLIES`` covers the whole request union, and the agent knows every request tag."""
    requests = set(typing.get_args(guest.HostToGuest))
    assert set(guest.REPLIES) == requests
    assert set(guest.REPLIES.values()) <= set(typing.get_args(guest.GuestToHost))
    for request in requests:
        tag = request.__struct_config__.tag
        body = REQUIRED_FIELDS  # unknown fields are ignored by both ends
        payload = msgspec.json.encode({"t": tag, "id": 1, **body})
        assert type(guest.decode_from_host(payload)) is request
        framing.parse_request(payload)  # raises if the agent does not know the tag


def test_code_arg_max_agrees() -> None:
    from guest import ops

    assert ops.CODE_ARG_MAX == guest.CODE_ARG_MAX


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b'{"t":"dirs"}', guest.Dirs(id=0)),
        (b'{"t":"dirs","id":99}', guest.Dirs(id=0)),
        (b'{"t":"metrics","extra":1}', guest.Metrics(id=0)),
        (
            b'{"t":"code.run","language":"bash","code":"echo"}',
            guest.CodeRun(id=0, language="bash", code="echo"),
        ),
    ],
)
def test_relayed_messages_need_no_id(payload: bytes, expected: guest.HostToGuest) -> None:
    assert guest.decode_relayed(payload) == expected


@pytest.mark.parametrize(
    "payload",
    [
        b"{not json",
        b"[1]",
        b'"dirs"',
        b"{}",
        b'{"t":"launch"}',
        b'{"t":"pong","version":2,"agent":"x"}',
        b'{"t":"code.run","language":"cobol","code":"x"}',
        b'{"t":"code.run","language":"python"}',
        b'{"t":"code.run","language":"python","code":1}',
        b'{"t":"exec","argv":"ls"}',
    ],
)
def test_relay_rejects_what_is_not_a_known_request(payload: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        guest.decode_relayed(payload)


def test_unknown_fields_are_ignored_by_both() -> None:
    payload = b'{"t":"ping","id":9,"added_in_v2":{"x":[1,2]}}'
    assert guest.decode_from_host(payload) == guest.Ping(id=9)
    assert framing.parse_request(payload) == framing.PingRequest(id=9)


@pytest.mark.parametrize(
    "payload",
    [
        b"{not json",
        b"\xff\xfe",
        b"[1,2]",
        b'{"t":"ping"}',
        b'{"t":"ping","id":"1"}',
        b'{"t":"ping","id":true}',
        b'{"t":"ping","id":1.5}',
        b'{"t":"launch","id":1}',
        b'{"id":1}',
        b'{"t":"exec","id":1}',
        b'{"t":"exec","id":1,"argv":"ls"}',
        b'{"t":"exec","id":1,"argv":["ls",1]}',
        b'{"t":"exec","id":1,"argv":["ls"],"env":{"A":1}}',
        b'{"t":"exec","id":1,"argv":["ls"],"env":["A=1"]}',
        b'{"t":"exec","id":1,"argv":["ls"],"cwd":7}',
        b'{"t":"exec","id":1,"argv":["ls"],"timeout_ms":"5"}',
        b'{"t":"exec","id":1,"argv":["ls"],"timeout_ms":1.5}',
        b'{"t":"code.run","id":1,"code":"x"}',
        b'{"t":"code.run","id":1,"language":"ruby","code":"x"}',
        b'{"t":"code.run","id":1,"language":"python"}',
        b'{"t":"code.run","id":1,"language":"python","code":["x"]}',
        b'{"t":"code.run","id":1,"language":"python","code":"x","argv":"a"}',
        b'{"t":"code.run","id":1,"language":"python","code":"x","argv":[1]}',
        b'{"t":"code.run","id":1,"language":"python","code":"x","env":{"A":1}}',
        b'{"t":"code.run","id":1,"language":"python","code":"x","timeout_ms":"1"}',
        b'{"t":"dirs"}',
        b'{"t":"metrics","id":"1"}',
    ],
)
def test_both_ends_reject_the_same_malformed_requests(payload: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        guest.decode_from_host(payload)
    with pytest.raises(framing.BadRequest):
        framing.parse_request(payload)


@pytest.mark.parametrize(
    ("payload", "request_id"),
    [
        (b"{not json", 0),
        (b"[1]", 0),
        (b'{"t":"ping","id":"7"}', 0),
        (b'{"t":"launch","id":7}', 7),
        (b'{"t":"exec","id":7,"argv":[]}', 7),
        (b'{"t":"exec","id":7,"argv":["ls"],"timeout_ms":0}', 7),
    ],
)
def test_agent_reports_the_request_id_when_it_can(payload: bytes, request_id: int) -> None:
    with pytest.raises(framing.BadRequest) as caught:
        framing.parse_request(payload)
    assert caught.value.request_id == request_id


# headers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"\x00\x00\x00\x00", (0, False)),
        ((1234).to_bytes(4, "big"), (1234, False)),
        ((guest.BINARY_FLAG | 1234).to_bytes(4, "big"), (1234, True)),
        ((guest.BINARY_FLAG).to_bytes(4, "big"), (0, True)),
        ((guest.LENGTH_MASK).to_bytes(4, "big"), (guest.LENGTH_MASK, False)),
        (b"\xff\xff\xff\xff", (guest.LENGTH_MASK, True)),
    ],
)
def test_headers_parse_identically(header: bytes, expected: tuple[int, bool]) -> None:
    assert framing.parse_header(header) == expected
    assert guest.parse_header(header) == expected
