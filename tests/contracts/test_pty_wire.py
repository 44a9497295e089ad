"""The ``pty.*`` messages: the stdlib agent (``guest/framing.py``) and ``contracts.guest`` agree
byte for byte, as ``test_guest_wire.py`` proves for the others. The agent parses every
``pty.*`` relay request into one ``PtyRequest`` (tagged by ``kind``) and the ``pty.attach``
opener into ``PtyAttachRequest``, so the host → guest cases compare field by field."""

from __future__ import annotations

import msgspec
import pytest

from contracts import guest
from guest import framing

TEXT = 'naïve ✓ 😀 "quoted"\n\t\x01 \u2028'

_INFO = framing.pty_info(
    session_id="p1",
    cols=80,
    rows=24,
    cwd="/home/ünï",
    env={"A": TEXT},
    created_at="2026-11-25T00:00:00.000Z",
    active=True,
    exit_code=None,
    clients=2,
    ephemeral=True,
    lazy_start=False,
    pid=42,
)
_DONE = framing.pty_info(
    session_id="p2",
    cols=1,
    rows=1000,
    cwd="/",
    env={},
    created_at="2026-11-25T00:00:01.000Z",
    active=False,
    exit_code=-1,
    clients=0,
    ephemeral=False,
    lazy_start=True,
    pid=None,
)
INFO = guest.PtyInfo(
    session_id="p1",
    cols=80,
    rows=24,
    cwd="/home/ünï",
    env={"A": TEXT},
    created_at="2026-11-25T00:00:00.000Z",
    active=True,
    clients=2,
    ephemeral=True,
    pid=42,
)
DONE = guest.PtyInfo(
    session_id="p2",
    cols=1,
    rows=1000,
    cwd="/",
    env={},
    created_at="2026-11-25T00:00:01.000Z",
    active=False,
    exit_code=-1,
    lazy_start=True,
)

GUEST: list[tuple[dict[str, object], guest.GuestToHost]] = [
    (framing.pty_result(1, _INFO), guest.PtyResult(id=1, session=INFO)),
    (framing.pty_list_result(2, [_INFO, _DONE]), guest.PtyListResult(id=2, sessions=[INFO, DONE])),
    (framing.pty_list_result(3, []), guest.PtyListResult(id=3, sessions=[])),
]


@pytest.mark.parametrize(("agent_message", "struct"), GUEST)
def test_pty_replies_encode_identically(agent_message: dict[str, object], struct: guest.GuestToHost) -> None:
    assert framing.encode(agent_message) == guest.encode(struct)
    assert guest.decode_from_guest(framing.encode(agent_message)[4:]) == struct


STREAM: list[tuple[dict[str, object], guest.StreamReply]] = [
    (framing.pty_attached(4, _INFO), guest.PtyAttached(id=4, session=INFO)),
    (framing.pty_exited(5, 3), guest.PtyExited(id=5, exit_code=3)),
    (framing.pty_exited(0, -9), guest.PtyExited(id=0, exit_code=-9)),
    (framing.error(6, "conflict", "exited"), guest.Error(id=6, code="conflict", message="exited")),
]


@pytest.mark.parametrize(("agent_message", "struct"), STREAM)
def test_pty_stream_replies_encode_identically(
    agent_message: dict[str, object], struct: guest.StreamReply
) -> None:
    assert framing.encode(agent_message) == guest.encode(struct)
    assert guest.decode_stream_reply(framing.encode(agent_message)[4:]) == struct


HOST: list[tuple[guest.HostToGuest, framing.PtyRequest]] = [
    (guest.PtyCreate(id=1), framing.PtyRequest(1, kind="pty.create")),
    (
        guest.PtyCreate(id=1, session_id="s", cols=100, rows=40, cwd=TEXT, env={"K": TEXT}, lazy_start=True),
        framing.PtyRequest(
            1,
            kind="pty.create",
            session_id="s",
            cols=100,
            rows=40,
            cwd=TEXT,
            env={"K": TEXT},
            lazy_start=True,
        ),
    ),
    (guest.PtyList(id=2), framing.PtyRequest(2, kind="pty.list")),
    (guest.PtyGet(id=3, session_id="s"), framing.PtyRequest(3, kind="pty.get", session_id="s")),
    (guest.PtyKill(id=4, session_id="s"), framing.PtyRequest(4, kind="pty.kill", session_id="s")),
    (
        guest.PtyResize(id=5, session_id="s", cols=7, rows=9),
        framing.PtyRequest(5, kind="pty.resize", session_id="s", cols=7, rows=9),
    ),
]


@pytest.mark.parametrize(("struct", "request_"), HOST)
def test_pty_requests_decode_in_the_agent(struct: guest.HostToGuest, request_: framing.PtyRequest) -> None:
    assert framing.parse_request(guest.encode(struct)[4:]) == request_
    assert guest.decode_relayed(guest.encode(struct)[4:]) == msgspec.structs.replace(struct, id=0)


@pytest.mark.parametrize(
    ("struct", "request_"),
    [
        (guest.PtyAttach(id=1, session_id="s"), framing.PtyAttachRequest(1, session_id="s")),
        (
            guest.PtyAttach(id=2, session_id="s", create=True, cols=3, rows=4, cwd="/tmp", env={"A": "b"}),
            framing.PtyAttachRequest(
                2, session_id="s", create=True, cols=3, rows=4, cwd="/tmp", env={"A": "b"}
            ),
        ),
    ],
)
def test_the_attach_opener_decodes_in_the_agent(
    struct: guest.PtyAttach, request_: framing.PtyAttachRequest
) -> None:
    assert framing.parse_request(guest.encode(struct)[4:]) == request_
    assert guest.decode_opener(guest.encode(struct)[4:]) == struct


@pytest.mark.parametrize(
    "payload",
    [
        b'{"t":"pty.get","id":1}',
        b'{"t":"pty.kill","id":1,"session_id":5}',
        b'{"t":"pty.resize","id":1,"session_id":"s","cols":1}',
        b'{"t":"pty.resize","id":1,"session_id":"s","cols":"1","rows":1}',
        b'{"t":"pty.create","id":1,"cols":true}',
        b'{"t":"pty.create","id":1,"env":{"a":1}}',
        b'{"t":"pty.create","id":1,"lazy_start":"yes"}',
        b'{"t":"pty.create","id":1,"cwd":[]}',
    ],
)
def test_both_ends_reject_the_same_malformed_pty_requests(payload: bytes) -> None:
    with pytest.raises(framing.BadRequest):
        framing.parse_request(payload)
    with pytest.raises(msgspec.ValidationError):
        guest.decode_from_host(payload)


@pytest.mark.parametrize(
    "payload",
    [b'{"t":"pty.attach","id":1}', b'{"t":"pty.attach","id":1,"session_id":"s","create":1}'],
)
def test_both_ends_reject_the_same_malformed_openers(payload: bytes) -> None:
    with pytest.raises(framing.BadRequest):
        framing.parse_request(payload)
    with pytest.raises(msgspec.ValidationError):
        guest.decode_opener(payload)


def test_the_constants_agree() -> None:
    for name in (
        "PROTOCOL_VERSION",
        "PTY_MAX_SESSIONS",
        "PTY_SCROLLBACK",
        "PTY_MAX_SIZE",
        "PTY_KILL_GRACE_MS",
    ):
        assert getattr(framing, name) == getattr(guest, name), name
