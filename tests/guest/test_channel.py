"""The guest's ``Demux`` (``guest/channel.py``) driven by a host that speaks the wire by hand.

The demultiplexer runs in a thread on one end of a socket pair (``serve_socket``); the test
holds the other end and writes frames built with ``contracts.channel``, so it can send what
``SerialMuxer`` never would: stale bytes, a foreign version, data beyond the credit.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator

import pytest

from contracts import channel as wire
from guest import channel

NONCE = b"0123456789abcdef"


def upper(sock: socket.socket) -> None:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.sendall(data.upper())


def firehose(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while True:
            sock.sendall(b"z" * 65536)


def refuse() -> socket.socket:
    raise ConnectionRefusedError("the target refused")


TARGETS = {53: channel.in_process(upper), 54: channel.in_process(firehose), 55: refuse}


class Host:
    """The host's end of the channel, spoken by hand."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(30)
        self.reader = wire.FrameReader()

    def send(self, kind: int, stream: int, payload: bytes = b"") -> None:
        self.sock.sendall(wire.encode(kind, stream, payload))

    def frame(self) -> tuple[int, int, bytes]:
        while (frame := self.reader.next()) is None:
            data = self.sock.recv(65536)
            assert data, "the guest closed the channel"
            self.reader.feed(data)
        return frame

    def expect(self, kind: int, stream: int) -> bytes:
        """The payload of the next frame, which must be ``kind`` on ``stream`` (credit
        returns, ``WINDOW``, in between are skipped)."""
        while True:
            got_kind, got_stream, payload = self.frame()
            if got_kind == wire.WINDOW and kind != wire.WINDOW:
                continue
            assert (got_kind, got_stream) == (kind, stream), payload
            return payload

    def sync(self, version: int = wire.VERSION) -> tuple[int, bytes]:
        """Padding and a HELLO, then the ack's (version, nonce)."""
        self.sock.sendall(bytes(wire.PADDING) + wire.hello(wire.HELLO, version, NONCE))
        while True:
            kind, _, payload = self.frame()
            if kind == wire.HELLO_ACK:
                parsed = wire.parse_hello(payload)
                assert parsed is not None
                return parsed


@pytest.fixture
def host() -> Iterator[Host]:
    ours, theirs = socket.socketpair()
    thread = threading.Thread(target=channel.serve_socket, args=(theirs, TARGETS), daemon=True)
    thread.start()
    yield Host(ours)
    ours.close()  # EOF: serve_socket returns
    thread.join(timeout=30)
    assert not thread.is_alive()
    theirs.close()


def test_a_new_guest_asks_for_a_hello_then_acks_it(host: Host) -> None:
    assert host.frame() == (wire.LOST, 0, b"")  # the padding, which a synced host takes as lost sync
    kind, stream, _ = host.frame()
    assert (kind, stream) == (wire.RESET, 0)
    # stale bytes and half a frame of an earlier host come before this host's HELLO
    host.sock.sendall(b"stale" + wire.encode(wire.DATA, 9, b"x" * 1000)[:300])
    assert host.sync() == (wire.VERSION, NONCE)


def test_another_version_is_answered_with_the_guests_and_nothing_is_served(host: Host) -> None:
    assert host.sync(version=wire.VERSION + 1) == (wire.VERSION, NONCE)
    host.send(wire.OPEN, 1, wire.U32.pack(53))  # ignored: the guest is not in sync
    host.sock.sendall(bytes(wire.PADDING) + wire.hello(wire.HELLO, wire.VERSION, NONCE))
    kind, _, payload = host.frame()  # nothing answered the OPEN before this ack
    assert (kind, wire.parse_hello(payload)) == (wire.HELLO_ACK, (wire.VERSION, NONCE))


def test_a_guest_that_lost_sync_asks_for_a_hello(host: Host) -> None:
    host.sync()
    host.sock.sendall(b"garbage that is no frame")
    host.send(wire.OPEN, 1, wire.U32.pack(53))
    assert host.expect(wire.RESET, 0) == b"the guest lost sync"


def test_open_fails_for_a_missing_or_refusing_target(host: Host) -> None:
    host.sync()
    host.send(wire.OPEN, 1, wire.U32.pack(99))
    assert host.expect(wire.OPEN_FAIL, 1) == b"nothing listens on port 99"
    host.send(wire.OPEN, 2, wire.U32.pack(55))
    assert host.expect(wire.OPEN_FAIL, 2) == b"the target refused"


def test_half_close_both_ways(host: Host) -> None:
    host.sync()
    host.send(wire.OPEN, 1, wire.U32.pack(53))
    host.expect(wire.OPEN_OK, 1)
    host.send(wire.DATA, 1, b"abc")
    host.send(wire.DATA, 1, b"def")
    host.send(wire.CLOSE, 1)  # the handler sees EOF only now, then answers
    assert host.expect(wire.DATA, 1) == b"ABCDEF"
    host.expect(wire.CLOSE, 1)


def test_the_guest_never_sends_beyond_its_credit(host: Host) -> None:
    host.sync()
    host.send(wire.OPEN, 1, wire.U32.pack(54))
    host.expect(wire.OPEN_OK, 1)
    granted = received = 0
    credit = wire.INITIAL_WINDOW
    while received < 4 * wire.INITIAL_WINDOW:
        kind, stream, payload = host.frame()
        if kind != wire.DATA:
            continue
        assert stream == 1 and len(payload) <= wire.MAX_PAYLOAD
        received += len(payload)
        assert received <= credit, "data beyond the credit granted"
        if received == credit:  # the guest must now wait: grant a little more
            host.send(wire.WINDOW, 1, wire.U32.pack(50_000))
            credit += 50_000
            granted += 1
    assert granted >= 4
    host.send(wire.RESET, 1)


def test_data_beyond_the_credit_resets_the_stream(host: Host) -> None:
    host.sync()
    host.send(wire.OPEN, 1, wire.U32.pack(54))  # a target that never reads
    host.expect(wire.OPEN_OK, 1)
    chunk = wire.encode(wire.DATA, 1, bytes(wire.MAX_PAYLOAD))
    host.sock.sendall(chunk * (8 * wire.INITIAL_WINDOW // wire.MAX_PAYLOAD))  # more than any buffer
    while (frame := host.frame())[:2] != (wire.RESET, 1):
        assert frame[0] in (wire.WINDOW, wire.DATA)  # what the socket took; the target's bytes
    host.send(wire.OPEN, 2, wire.U32.pack(53))  # the channel itself is fine
    host.expect(wire.OPEN_OK, 2)


def test_a_new_hello_drops_every_stream(host: Host) -> None:
    host.sync()
    host.send(wire.OPEN, 1, wire.U32.pack(53))
    host.expect(wire.OPEN_OK, 1)
    host.sync()
    host.send(wire.CLOSE, 1)  # stream 1 is gone: nothing comes back for it
    host.send(wire.OPEN, 1, wire.U32.pack(53))  # the number may be used again
    host.expect(wire.OPEN_OK, 1)
    host.send(wire.DATA, 1, b"new")
    host.send(wire.CLOSE, 1)
    assert host.expect(wire.DATA, 1) == b"NEW"


def test_serve_listener_relays_each_connection_to_a_fresh_target() -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(f"\0dnah-channel-test-{os.getpid()}")
    listener.listen()
    threading.Thread(target=channel.serve_listener, args=(listener, TARGETS[53]), daemon=True).start()
    for word in (b"one", b"two"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(30)
            client.connect(listener.getsockname())
            client.sendall(word)
            client.shutdown(socket.SHUT_WR)
            assert client.makefile("rb").read() == word.upper()


def _vsock_loopback() -> str | None:
    """None when AF_VSOCK can connect to this machine, else why not."""
    if not hasattr(socket, "AF_VSOCK"):
        return "this Python has no AF_VSOCK"
    try:
        with socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM) as probe:
            probe.settimeout(1)
            probe.bind((socket.VMADDR_CID_ANY, socket.VMADDR_PORT_ANY))
            probe.listen()
            port = probe.getsockname()[1]
            with socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM) as client:
                client.settimeout(1)
                client.connect((1, port))  # VMADDR_CID_LOCAL
    except OSError as exc:
        return f"AF_VSOCK cannot reach this machine (no vsock loopback transport): {exc!r}"
    return None


VSOCK_MISSING = _vsock_loopback()


@pytest.mark.skipif(VSOCK_MISSING is not None, reason=VSOCK_MISSING or "")
def test_serve_vsock_relays_a_vsock_connection() -> None:
    port = 50_000 + os.getpid() % 10_000
    threading.Thread(target=channel.serve_vsock, args=(port, TARGETS[53]), daemon=True).start()
    with socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM) as client:
        client.settimeout(30)
        for _ in range(300):  # the listener starts in its thread
            try:
                client.connect((1, port))
                break
            except ConnectionResetError:
                continue
        client.sendall(b"vsock")
        client.shutdown(socket.SHUT_WR)
        assert client.makefile("rb").read() == b"VSOCK"
