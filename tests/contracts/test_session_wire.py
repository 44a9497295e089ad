"""The ``session.*`` messages: the stdlib agent (``guest/framing.py``) and ``contracts.guest``
agree byte for byte, as ``test_guest_wire.py`` proves for the others. The agent parses every
``session.*`` request into one ``SessionRequest`` (tagged by ``kind``), so the host → guest
cases compare field by field rather than class by class."""

from __future__ import annotations

import msgspec
import pytest

from contracts import guest
from guest import framing

TEXT = 'naïve ✓ 😀 "quoted"\n\t\x00 \u2028'

_COMMAND = framing.session_command_info(
    command_id="c1", command=TEXT, exit_code=None, timed_out=False, cwd=None, stdout="", stderr=""
)
_DONE = framing.session_command_info(
    command_id="c2", command="false", exit_code=-9, timed_out=True, cwd="/tmp", stdout=TEXT, stderr="e"
)
_INFO = framing.session_info(session_id="s", cwd="/home/ünï", alive=True, commands=[_COMMAND, _DONE])

COMMAND = guest.SessionCommandInfo(command_id="c1", command=TEXT)
DONE = guest.SessionCommandInfo(
    command_id="c2", command="false", exit_code=-9, timed_out=True, cwd="/tmp", stdout=TEXT, stderr="e"
)
INFO = guest.SessionInfo(session_id="s", cwd="/home/ünï", alive=True, commands=[COMMAND, DONE])

GUEST: list[tuple[dict[str, object], guest.GuestToHost]] = [
    (framing.session_result(1, _INFO), guest.SessionResult(id=1, session=INFO)),
    (
        framing.session_list_result(
            2, [_INFO, framing.session_info(session_id="t", cwd="/", alive=False, commands=[])]
        ),
        guest.SessionListResult(
            id=2, sessions=[INFO, guest.SessionInfo(session_id="t", cwd="/", alive=False)]
        ),
    ),
    (framing.session_command_result(3, _DONE), guest.SessionCommandResult(id=3, command=DONE)),
    (framing.error(4, "conflict", "taken"), guest.Error(id=4, code="conflict", message="taken")),
]


@pytest.mark.parametrize(("agent_message", "struct"), GUEST)
def test_session_replies_encode_identically(
    agent_message: dict[str, object], struct: guest.GuestToHost
) -> None:
    assert framing.encode(agent_message) == guest.encode(struct)
    assert guest.decode_from_guest(framing.encode(agent_message)[4:]) == struct


HOST: list[tuple[guest.HostToGuest, framing.SessionRequest]] = [
    (guest.SessionCreate(id=1), framing.SessionRequest(1, kind="session.create")),
    (
        guest.SessionCreate(id=1, session_id=TEXT, cwd="/tmp"),
        framing.SessionRequest(1, kind="session.create", session_id=TEXT, cwd="/tmp"),
    ),
    (guest.SessionList(id=2), framing.SessionRequest(2, kind="session.list")),
    (guest.SessionGet(id=3, session_id="s"), framing.SessionRequest(3, kind="session.get", session_id="s")),
    (
        guest.SessionGet(id=3, session_id="s", output=True),
        framing.SessionRequest(3, kind="session.get", session_id="s", output=True),
    ),
    (
        guest.SessionDelete(id=4, session_id="s"),
        framing.SessionRequest(4, kind="session.delete", session_id="s"),
    ),
    (
        guest.SessionExec(id=5, session_id="s", command=TEXT),
        framing.SessionRequest(5, kind="session.exec", session_id="s", command=TEXT, timeout_ms=60_000),
    ),
    (
        guest.SessionExec(id=5, session_id="s", command="x", timeout_ms=0, run_async=True),
        framing.SessionRequest(
            5, kind="session.exec", session_id="s", command="x", timeout_ms=0, run_async=True
        ),
    ),
    (
        guest.SessionCommand(id=6, session_id="s", command_id="c"),
        framing.SessionRequest(6, kind="session.command", session_id="s", command_id="c"),
    ),
    (
        guest.SessionLogs(id=7, session_id="s", command_id="c"),
        framing.SessionRequest(7, kind="session.logs", session_id="s", command_id="c"),
    ),
]


@pytest.mark.parametrize(("struct", "request_"), HOST)
def test_session_requests_decode_in_the_agent(
    struct: guest.HostToGuest, request_: framing.SessionRequest
) -> None:
    assert framing.parse_request(guest.encode(struct)[4:]) == request_


@pytest.mark.parametrize(
    "payload",
    [
        b'{"t":"session.exec","id":1,"session_id":"s"}',
        b'{"t":"session.exec","id":1,"session_id":"s","command":"x","run_async":1}',
        b'{"t":"session.get","id":1}',
        b'{"t":"session.create","id":1,"cwd":5}',
        b'{"t":"session.logs","id":1,"session_id":"s","command_id":null}',
    ],
)
def test_both_ends_reject_the_same_malformed_session_requests(payload: bytes) -> None:
    with pytest.raises(framing.BadRequest):
        framing.parse_request(payload)
    with pytest.raises(msgspec.ValidationError):
        guest.decode_from_host(payload)
