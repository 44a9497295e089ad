"""The stdlib agent (``guest/framing.py``, ``guest/requests.py``) and ``contracts.guest``
(msgspec) speak the same bytes: the proof that ``contracts.guest`` is the one source of truth.

"Every message type" below enumerates the contract's unions (``HostToGuest``, ``StreamOpener``,
``GuestToHost``, ``StreamReply``) and the structs they nest, with generated samples that set
every field (``guest_samples``): the agent must parse each request hostd encodes, reading
exactly the fields the contract declares and getting their values; hostd must decode each
reply the agent's builders produce, byte for byte identical to msgspec's encoding; neither
side may have a message type the other lacks. The meta-tests at the end of that section show
these checks fail when a field is added on one side only. The hand-written cases around it
pin awkward values, rounding, rejections and the relay; ``test_guest_*_wire.py`` and friends
do the same per operation family.
"""

from __future__ import annotations

import inspect
import json
import random
import re
import typing
from collections.abc import Callable

import msgspec
import msgspec.inspect as mi
import pytest

from contracts import guest
from guest import framing
from guest import requests as agent_requests
from tests.contracts.guest_samples import minimal, sample

AWKWARD_TEXT = 'naïve ✓ 😀 "quoted" back\\slash\n\ttab \x01\x1f\x7f \u2028 </script> \ufffd'


def test_constants_match() -> None:
    assert framing.AGENT_PORT == guest.AGENT_PORT
    assert framing.PROTOCOL_VERSION == guest.PROTOCOL_VERSION
    assert framing.BINARY_FLAG == guest.BINARY_FLAG
    assert framing.LENGTH_MASK == guest.LENGTH_MASK
    assert framing.MAX_JSON_FRAME == guest.MAX_JSON_FRAME
    for name in (
        "PROC_STDOUT",
        "PROC_STDERR",
        "PROC_PTY",
        "PROC_OUTPUT_KEPT",
        "PROC_KEEP_EXITED_MS",
        "PROC_MAX_EXITED",
        "PROC_EXITED_KEPT",
        "PROC_MAX_RUNNING",
        "PROC_INPUT_MAX",
        "PROC_INPUT_WAIT_MS",
        "PROC_CLIENT_BACKLOG",
        "PROC_CLIENT_STALL_MS",
    ):
        assert getattr(framing, name) == getattr(guest, name), name


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
        b'{"t":"proc.signal","id":1,"pid":5}',
        b'{"t":"proc.signal","id":1,"pid":"5","signal":9}',
        b'{"t":"proc.signal","id":1,"tag":7,"signal":9}',
        b'{"t":"proc.input","id":1,"pid":5}',
        b'{"t":"proc.input","id":1,"pid":5,"data":[1]}',
        b'{"t":"proc.resize","id":1,"pid":5,"cols":80}',
        b'{"t":"proc.resize","id":1,"pid":5,"cols":"80","rows":24}',
        b'{"t":"proc.close_stdin","id":1,"pid":true}',
    ],
)
def test_both_ends_reject_the_same_malformed_requests(payload: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        guest.decode_from_host(payload)
    with pytest.raises(framing.BadRequest):
        framing.parse_request(payload)


@pytest.mark.parametrize(
    "payload",
    [
        b'{"t":"proc.start","id":1}',
        b'{"t":"proc.start","id":1,"argv":[]}',
        b'{"t":"proc.start","id":1,"argv":"ls"}',
        b'{"t":"proc.start","id":1,"argv":["ls"],"env":{"A":1}}',
        b'{"t":"proc.start","id":1,"argv":["ls"],"tag":5}',
        b'{"t":"proc.start","id":1,"argv":["ls"],"pty":{"cols":"80","rows":24}}',
        b'{"t":"proc.start","id":1,"argv":["ls"],"pty":{"cols":80}}',
        b'{"t":"proc.start","id":1,"argv":["ls"],"pty":true}',
        b'{"t":"proc.start","id":1,"argv":["ls"],"stdin":1}',
        b'{"t":"proc.start","id":1,"argv":["ls"],"timeout_ms":0}',
        b'{"t":"proc.start","id":1,"argv":["ls"],"timeout_ms":"5"}',
        b'{"t":"proc.connect","id":1,"pid":"5"}',
        b'{"t":"proc.connect","id":1,"tag":["x"]}',
    ],
)
def test_both_ends_reject_the_same_malformed_proc_openers(payload: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        guest.decode_opener(payload)
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


# every message type ---------------------------------------------------------------------------

SEEDS = range(6)
"""Samples per message type; each is its own ``random.Random(f"{tag}:{seed}")``."""

REQUEST_TYPES: list[type[msgspec.Struct]] = [
    *typing.get_args(guest.HostToGuest),
    *typing.get_args(guest.StreamOpener),
]
REPLY_TYPES: list[type[msgspec.Struct]] = list(
    dict.fromkeys([*typing.get_args(guest.GuestToHost), *typing.get_args(guest.StreamReply)])
)
FIXED_BY_AGENT: dict[type[msgspec.Struct], dict[str, object]] = {
    guest.Pong: {"version": framing.PROTOCOL_VERSION},
}
"""Reply fields the agent fills in itself rather than taking from its caller."""
NOT_BUILDERS = {"parse_header", "encode", "binary_header", "parse_request", "is_int"}
"""``guest.framing``'s public functions that build no message; every other one does."""


def _tag(cls: type[msgspec.Struct]) -> str:
    tag = cls.__struct_config__.tag
    assert isinstance(tag, str)
    return tag


def _nested(types: list[type[msgspec.Struct]]) -> list[type[msgspec.Struct]]:
    """The untagged structs that ``types`` contain, at any depth."""
    found: dict[type[msgspec.Struct], None] = {}

    def walk(kind: mi.Type) -> None:
        match kind:
            case mi.StructType():
                if kind.cls.__struct_config__.tag is None and kind.cls not in found:
                    found[kind.cls] = None
                for field in kind.fields:
                    walk(field.type)
            case mi.ListType():
                walk(kind.item_type)
            case mi.DictType():
                walk(kind.value_type)
            case mi.UnionType():
                for member in kind.types:
                    walk(member)

    for cls in types:
        walk(mi.type_info(cls))
    return list(found)


NESTED_TYPES = _nested(REPLY_TYPES)


def builder_name(cls: type[msgspec.Struct]) -> str:
    """The agent's builder for ``cls``: its tag with dots as underscores (``git.status.result``:
    ``git_status_result``), or for a nested struct its name in snake case (``FsEntry``:
    ``fs_entry``)."""
    tag = cls.__struct_config__.tag
    if isinstance(tag, str):
        return tag.replace(".", "_")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()


def agent_builders() -> set[str]:
    return {
        name
        for name, value in vars(framing).items()
        if inspect.isfunction(value)
        and value.__module__ == framing.__name__
        and not name.startswith("_")
        and name not in NOT_BUILDERS
    }


class _Recording(dict[str, object]):
    """A decoded frame that remembers which keys the agent's parser looked up."""

    def __init__(self, message: dict[str, object]) -> None:
        super().__init__(message)
        self.read: set[str] = set()

    def get(self, key: str, default: object = None) -> object:
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> object:
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.read.add(str(key))
        return super().__contains__(key)


def check_request(struct: msgspec.Struct) -> None:
    """The agent parses what hostd encodes: it reads exactly the fields ``contracts.guest``
    declares for the type, and gets every value; msgspec decodes its own bytes back."""
    tag, fields = _tag(type(struct)), [name for name in struct.__struct_fields__ if name != "id"]
    payload = guest.encode(struct)[4:]
    parsed = framing.parse_request(payload)
    if tag != "ping":  # parsed by ``framing`` itself, which reads no field
        message = _Recording(json.loads(payload))
        assert agent_requests.parse(parsed.id, tag, message) == parsed
        assert message.read == set(fields), (
            f"the agent reads {sorted(message.read)} of a {tag!r}; contracts.guest declares {sorted(fields)}"
        )
    for name in ["id", *fields]:  # a nested struct is a plain dict in the agent
        assert getattr(parsed, name) == msgspec.to_builtins(getattr(struct, name)), (
            f"{tag}.{name} differs in the agent"
        )
    assert _decode_request(type(struct), payload) == struct


def _decode_request(cls: type[msgspec.Struct], payload: bytes) -> msgspec.Struct:
    if cls in typing.get_args(guest.StreamOpener):
        return guest.decode_opener(payload)
    return guest.decode_from_host(payload)


def _agent_value(value: object) -> object:
    """``value`` as the agent's code holds it: a nested struct built by its builder."""
    if isinstance(value, msgspec.Struct):
        builder = getattr(framing, builder_name(type(value)))
        return builder(**{name: _agent_value(getattr(value, name)) for name in value.__struct_fields__})
    if isinstance(value, list):
        return [_agent_value(item) for item in value]
    return value


def check_reply(struct: msgspec.Struct) -> None:
    """The agent's builder takes exactly the type's fields and produces msgspec's bytes for
    them, which hostd decodes back to the same message."""
    cls = type(struct)
    fields = msgspec.structs.asdict(struct)
    request_id = fields.pop("id")
    taken = [name for name in fields if name not in FIXED_BY_AGENT.get(cls, {})]
    builder: Callable[..., dict[str, object]] = getattr(framing, builder_name(cls))
    parameters = list(inspect.signature(builder).parameters)
    assert set(parameters) == {"request_id", *taken}, (
        f"the agent's builder {builder.__name__}{parameters} does not take {cls.__name__}'s fields {taken}"
    )
    agent_frame = framing.encode(builder(request_id, **{name: _agent_value(fields[name]) for name in taken}))
    assert agent_frame == guest.encode(struct), f"the agent's {_tag(cls)!r} is not msgspec's"
    if cls in typing.get_args(guest.GuestToHost):
        assert guest.decode_from_guest(agent_frame[4:]) == struct
    else:
        assert guest.decode_stream_reply(agent_frame[4:]) == struct


def _samples(types: list[type[msgspec.Struct]]) -> list[object]:
    return [pytest.param(cls, seed, id=f"{_tag(cls)}-{seed}") for cls in types for seed in SEEDS]


def test_every_request_type_is_the_agents() -> None:
    """No request type on one side only, and ``REPLIES`` answers the whole request union."""
    assert {_tag(cls) for cls in REQUEST_TYPES} == agent_requests.REQUEST_TAGS
    assert set(guest.REPLIES) == set(typing.get_args(guest.HostToGuest))
    assert set(guest.REPLIES.values()) <= set(typing.get_args(guest.GuestToHost))


def test_every_reply_type_has_the_agents_builder() -> None:
    """No reply (or nested struct) on one side only: the agent's builders are exactly these."""
    assert agent_builders() == {builder_name(cls) for cls in [*REPLY_TYPES, *NESTED_TYPES]}


@pytest.mark.parametrize(("cls", "seed"), _samples(REQUEST_TYPES))
def test_the_agent_parses_every_request(cls: type[msgspec.Struct], seed: int) -> None:
    check_request(sample(cls, random.Random(f"{_tag(cls)}:{seed}")))


@pytest.mark.parametrize(("cls", "seed"), _samples(REQUEST_TYPES))
def test_the_agent_fills_in_the_contracts_defaults(cls: type[msgspec.Struct], seed: int) -> None:
    """A request with its required fields only: both ends fill in the same defaults."""
    required = minimal(cls, random.Random(f"{_tag(cls)}:{seed}"))
    payload = msgspec.json.encode({"t": _tag(cls), "id": seed, **required})
    struct = _decode_request(cls, payload)
    parsed = framing.parse_request(payload)
    for name in struct.__struct_fields__:
        assert getattr(parsed, name) == msgspec.to_builtins(getattr(struct, name)), (
            f"{_tag(cls)}.{name}'s default differs"
        )


@pytest.mark.parametrize(("cls", "seed"), _samples(REPLY_TYPES))
def test_hostd_decodes_every_reply_the_agent_builds(cls: type[msgspec.Struct], seed: int) -> None:
    struct = sample(cls, random.Random(f"{_tag(cls)}:{seed}"))
    check_reply(msgspec.structs.replace(struct, **FIXED_BY_AGENT.get(cls, {})))


class _ExecPlus(guest.Exec, frozen=True, tag="exec"):
    extra: str = ""


class _FsDonePlus(guest.FsDone, frozen=True, tag="fs.done"):
    extra: str = ""


def test_a_request_field_in_the_contract_only_fails_the_check() -> None:
    with pytest.raises(AssertionError, match=r"contracts\.guest declares"):
        check_request(sample(_ExecPlus, random.Random(0)))


def test_a_request_field_in_the_agent_only_fails_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(agent_requests._FS_FIELDS, "fs.stat", (("path",), ("owner",), (), ()))
    with pytest.raises(AssertionError, match=r"contracts\.guest declares"):
        check_request(sample(guest.FsStat, random.Random(0)))


def test_a_reply_field_in_the_contract_only_fails_the_check() -> None:
    with pytest.raises(AssertionError, match="does not take"):
        check_reply(sample(_FsDonePlus, random.Random(0)))


def test_a_reply_field_in_the_agent_only_fails_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    def fs_done(request_id: int) -> dict[str, object]:
        return {"t": "fs.done", "extra": "", "id": request_id}

    monkeypatch.setattr(framing, "fs_done", fs_done)
    with pytest.raises(AssertionError, match="is not msgspec's"):
        check_reply(sample(guest.FsDone, random.Random(0)))


def test_a_builder_without_a_contract_type_fails_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    def fs_moved(request_id: int) -> dict[str, object]:
        return {"t": "fs.moved", "id": request_id}

    fs_moved.__module__ = framing.__name__
    monkeypatch.setattr(framing, "fs_moved", fs_moved, raising=False)
    with pytest.raises(AssertionError):
        test_every_reply_type_has_the_agents_builder()


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
