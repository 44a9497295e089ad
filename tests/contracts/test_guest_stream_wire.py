"""The stream messages (``fs.write``/``fs.read`` and their replies, binary frame headers): the
stdlib agent (``guest/framing.py``) and ``contracts.guest`` agree byte for byte, as
``test_guest_wire.py`` proves for the request/reply messages."""

from __future__ import annotations

import msgspec
import pytest

from contracts import guest
from guest import framing

TEXT = 'naïve ✓ 😀 "quoted"\n\ttab \x01 \u2028'


def test_stream_constants_match() -> None:
    assert framing.MAX_BINARY_FRAME == guest.MAX_BINARY_FRAME


@pytest.mark.parametrize(
    ("agent_message", "struct"),
    [
        (framing.fs_ready(1), guest.FsReady(id=1)),
        (
            framing.fs_written(2, "/home/u/" + TEXT, 2**40),
            guest.FsWritten(id=2, path="/home/u/" + TEXT, size=2**40),
        ),
        (framing.fs_reading(3, "/x", 0), guest.FsReading(id=3, path="/x", size=0)),
        (framing.error(4, "no_space", TEXT), guest.Error(id=4, code="no_space", message=TEXT)),
    ],
)
def test_stream_replies_encode_identically(
    agent_message: dict[str, object], struct: guest.StreamReply
) -> None:
    frame = framing.encode(agent_message)
    assert frame == guest.encode(struct)
    assert guest.decode_stream_reply(frame[4:]) == struct


@pytest.mark.parametrize(
    ("struct", "parsed"),
    [
        (guest.FsWrite(id=1, path=TEXT), framing.FsWriteRequest(1, TEXT)),
        (guest.FsWrite(id=2, path="/a", mode="0755"), framing.FsWriteRequest(2, "/a", "0755")),
        (guest.FsRead(id=3, path=TEXT), framing.FsReadRequest(3, TEXT)),
    ],
)
def test_openers_decode_in_the_agent(struct: guest.StreamOpener, parsed: framing.StreamRequest) -> None:
    frame = guest.encode(struct)
    assert framing.parse_request(frame[4:]) == parsed
    assert guest.decode_opener(frame[4:]) == struct


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b'{"t":"fs.write","id":1}', "'path' must be a string"),
        (b'{"t":"fs.write","id":1,"path":"/a","mode":7}', "'mode' must be a string or null"),
        (b'{"t":"fs.read","id":1,"path":null}', "'path' must be a string"),
    ],
)
def test_bad_openers_are_refused(payload: bytes, message: str) -> None:
    with pytest.raises(framing.BadRequest, match=message):
        framing.parse_request(payload)


@pytest.mark.parametrize("size", [0, 1, 65536, guest.MAX_BINARY_FRAME])
def test_binary_headers_agree(size: int) -> None:
    header = guest.encode_binary(b"x" * size)
    assert header == framing.binary_header(size)
    assert guest.parse_header(header) == (size, True)


def test_a_binary_frame_has_a_size_limit() -> None:
    with pytest.raises(ValueError, match="at most"):
        guest.encode_binary(b"x" * (guest.MAX_BINARY_FRAME + 1))


def test_openers_are_not_relayable() -> None:
    """hostd's relay sends requests on the shared connection; an opener there would hijack it."""
    for opener in (b'{"t":"fs.write","path":"/a"}', b'{"t":"fs.read","path":"/a"}'):
        with pytest.raises(msgspec.ValidationError):
            guest.decode_relayed(opener)
