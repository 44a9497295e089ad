"""The agent channel's wire format (``contracts/channel.py``) and the guest's copy of it."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from contracts import channel as wire

REPO = Path(__file__).resolve().parents[2]


def test_the_guest_copy_is_byte_for_byte_the_contract() -> None:
    """The guest cannot import contracts/, so it carries a copy; the two must never drift."""
    assert (REPO / "guest" / "channel_wire.py").read_bytes() == (
        REPO / "contracts" / "channel.py"
    ).read_bytes()


def frames_of(data: bytes, *, step: int = 1) -> list[tuple[int, int, bytes]]:
    reader = wire.FrameReader()
    out = []
    for start in range(0, len(data), step):
        reader.feed(data[start : start + step])
        while (frame := reader.next()) is not None:
            out.append(frame)
    return out


SAMPLE = [
    (wire.OPEN, 1, wire.U32.pack(52)),
    (wire.OPEN_OK, 1, b""),
    (wire.DATA, 1, bytes(range(256)) * 128),  # MAX_PAYLOAD bytes
    (wire.WINDOW, 1, wire.U32.pack(4096)),
    (wire.CLOSE, 1, b""),
    (wire.RESET, 2, wire.reason("gone")),
    (wire.OPEN_FAIL, 3, wire.reason("nothing listens on port 9")),
]


def test_the_header_layout() -> None:
    frame = wire.encode(wire.WINDOW, 7, wire.U32.pack(5))
    assert wire.HEADER_SIZE == 16
    assert frame[:2] == wire.MAGIC
    assert frame[2] == wire.WINDOW and frame[3] == 0
    assert frame[4:8] == (7).to_bytes(4, "big") and frame[8:12] == (4).to_bytes(4, "big")
    assert frame[16:] == (5).to_bytes(4, "big")
    with pytest.raises(ValueError, match="at most"):
        wire.encode(wire.DATA, 1, bytes(wire.MAX_PAYLOAD + 1))


@pytest.mark.parametrize("step", [1, 7, 4096, 1 << 20])
def test_frames_survive_any_split(step: int) -> None:
    stream = b"".join(wire.encode(*frame) for frame in SAMPLE)
    assert frames_of(stream, step=step) == SAMPLE


def test_hello_round_trips_and_the_ack_nonce_sits_where_the_host_looks() -> None:
    nonce = bytes(range(wire.NONCE_SIZE))
    ack = wire.hello(wire.HELLO_ACK, 3, nonce)
    assert ack[wire.ACK_NONCE_AT : wire.ACK_NONCE_AT + wire.NONCE_SIZE] == nonce
    ((kind, stream, payload),) = frames_of(ack)
    assert (kind, stream, wire.parse_hello(payload)) == (wire.HELLO_ACK, 0, (3, nonce))
    assert wire.parse_hello(b"not-mux!" + payload[8:]) is None
    assert wire.parse_hello(payload + b"x") is None


def test_garbage_is_reported_once_and_the_next_frame_is_found() -> None:
    garbage = random.Random(0).randbytes(10_000) + wire.MAGIC + b"\xff" * 30
    frame = wire.encode(wire.DATA, 1, b"after")
    assert frames_of(garbage + frame) == [(wire.LOST, 0, b""), (wire.DATA, 1, b"after")]


def test_a_corrupted_byte_fails_the_crc() -> None:
    first = bytearray(wire.encode(wire.DATA, 1, b"payload"))
    first[-1] ^= 1
    second = wire.encode(wire.CLOSE, 1)
    assert frames_of(bytes(first) + second) == [(wire.LOST, 0, b""), (wire.CLOSE, 1, b"")]


def test_an_oversized_header_is_not_a_frame() -> None:
    header = wire.HEADER.pack(wire.MAGIC, wire.DATA, 0, 1, wire.MAX_PAYLOAD + 1, 0)
    assert frames_of(header + wire.encode(wire.CLOSE, 1)) == [(wire.LOST, 0, b""), (wire.CLOSE, 1, b"")]


def test_padding_and_hello_resync_a_reader_cut_at_every_offset() -> None:
    """The guest's side of a reconnect: whatever it was in the middle of, the host's padding
    completes it and the HELLO that follows is found."""
    stream = b"".join(wire.encode(*frame) for frame in SAMPLE)
    hello = wire.hello(wire.HELLO, wire.VERSION, b"n" * wire.NONCE_SIZE)
    for cut in range(0, len(stream), 97):
        frames = frames_of(stream[:cut] + bytes(wire.PADDING) + hello, step=65536)
        assert frames[-1] == (wire.HELLO, 0, hello[wire.HEADER_SIZE :]), cut
        assert frames[-2] == (wire.LOST, 0, b""), cut


def test_the_hosts_hunt_finds_its_ack_behind_a_false_header_without_more_bytes() -> None:
    """A stale byte run that looks like the start of a big frame must not hide the ack."""
    nonce = random.Random(1).randbytes(wire.NONCE_SIZE)
    fake = wire.HEADER.pack(wire.MAGIC, wire.DATA, 0, 1, wire.MAX_PAYLOAD, 0)
    reader = wire.FrameReader()
    reader.feed(b"stale" + fake + b"tail" + wire.hello(wire.HELLO_ACK, wire.VERSION, nonce))
    assert reader.seek(nonce, wire.ACK_NONCE_AT)
    kind, _, payload = reader.next() or (None, None, b"")
    assert kind == wire.HELLO_ACK and wire.parse_hello(payload) == (wire.VERSION, nonce)


def test_seek_keeps_only_what_could_still_match() -> None:
    reader = wire.FrameReader()
    nonce = b"N" * wire.NONCE_SIZE
    ack = wire.hello(wire.HELLO_ACK, wire.VERSION, nonce)
    reader.feed(bytes(100_000) + ack[:20])  # the ack arrives in two pieces
    assert not reader.seek(nonce, wire.ACK_NONCE_AT)
    reader.feed(ack[20:])
    assert reader.seek(nonce, wire.ACK_NONCE_AT)
    assert reader.next() == (wire.HELLO_ACK, 0, ack[wire.HEADER_SIZE :])
