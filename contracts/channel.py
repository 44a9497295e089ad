"""hostd ↔ guest: the multiplexed agent channel, carried over one byte stream.

Why. Under QEMU on this machine the only host ↔ guest channel is one virtio-serial port (no
vhost-vsock), while hostd opens one agent connection per stream (file transfers, terminals)
besides the shared request connection. The channel multiplexes those connections over the
port: hostd's ``SerialMuxer`` (``hosts/runtime/_channel.py``) plays the part Cloud
Hypervisor's vsock muxer plays, and the guest's ``Demux`` (``guest/channel.py``) relays each
stream to a local target (the agent's Unix socket, an in-process handler). docs/runtimes.md,
"Agent channel", tells the whole story.

This file exists twice, byte for byte: ``contracts/channel.py`` (hostd imports it) and
``guest/channel_wire.py`` (the guest, which imports nothing outside ``guest/``);
``tests/contracts/test_channel.py`` proves the two are identical. So it is stdlib-only and
sans-I/O: the frame codec and the resynchronising reader, nothing that blocks.

Frames. A 16-byte big-endian header (``HEADER``) then ``length`` payload bytes:
``magic`` (``MAGIC``), ``kind``, ``flags`` (zero), ``stream``, ``length`` and ``crc``, the
CRC-32 of the first 12 header bytes and the payload. A frame is accepted only when all of it
checks out, so garbage, a frame cut short by a reconnect or an oversized header is never
mistaken for data: the reader reports the loss once (``LOST``) and hunts for the next magic.

Resync. The host may (re)connect at any byte offset: hostd restarts, and a memory snapshot
restored into a new QEMU resumes the guest in the middle of a frame, its blocked writes
completing to the new host. So every host connection starts with ``PADDING`` zero bytes
(enough to complete any frame the guest was in the middle of, which then fails its CRC) and a
``HELLO`` carrying ``VERSION`` and a random nonce. The guest drops every stream and answers
``HELLO_ACK`` with its own version and the same nonce; the host discards everything before
that ack, which it finds by searching for its nonce (``ACK_NONCE_AT``), so no stale byte of
the old connection can ever be taken for a frame of the new one. The layout of ``HELLO`` and
``HELLO_ACK`` never changes between versions, so a mismatch is always understood and reported.
"""

from __future__ import annotations

import binascii
import struct

VERSION = 1
"""The channel protocol's version, sent in ``HELLO`` and ``HELLO_ACK``; both ends must agree."""

MAGIC = b"\xda\x7a"
"""The first two bytes of every frame: what the reader hunts for after a loss of sync."""

HEADER = struct.Struct(">2sBBIII")
"""magic, kind, flags, stream, length, crc32."""
HEADER_SIZE = HEADER.size
_PREFIX = struct.Struct(">2sBBII")
"""The header without its CRC: what the CRC covers, with the payload."""

MAX_PAYLOAD = 32 * 1024
"""Largest payload of any frame. Small enough that the resync padding stays cheap (it must
outlast one whole frame) and one stream's frame never holds the port for long."""

INITIAL_WINDOW = 256 * 1024
"""Bytes each end may send on a new stream before the other returns credit with ``WINDOW``:
the most a stalled reader can leave buffered at the other end, per stream."""

PADDING = HEADER_SIZE + MAX_PAYLOAD
"""Zero bytes sent before every ``HELLO``. Zero bytes are never a frame (the magic is not
zero), and this many complete any frame or candidate header the guest is in the middle of."""

RESYNC_MAGIC = b"dnah-mux"
"""The first bytes of a ``HELLO``/``HELLO_ACK`` payload: a frame of that kind without it is
not one."""

NONCE_SIZE = 16
_HELLO = struct.Struct(">8sH16s")
"""``HELLO``/``HELLO_ACK`` payload: RESYNC_MAGIC, version, nonce. Fixed for every version."""
ACK_NONCE_AT = HEADER_SIZE + len(RESYNC_MAGIC) + 2
"""Offset of the nonce from the start of a ``HELLO_ACK`` frame (the host's hunt finds the
nonce, then parses the frame that starts this many bytes earlier)."""

U32 = struct.Struct(">I")
"""The payload of ``OPEN`` (port) and ``WINDOW`` (credit)."""

REASON_MAX = 200
"""Longest reason (UTF-8) in an ``OPEN_FAIL`` or ``RESET`` payload."""

# Frame kinds. Stream 0 is the channel itself; streams are numbered by the host.
HELLO = 1
"""host → guest, stream 0: start of a session; the guest drops every stream and acks."""
HELLO_ACK = 2
"""guest → host, stream 0: the guest's version and the host's nonce (the end of the hunt)."""
OPEN = 3
"""host → guest: open stream ``stream`` to the guest's target for port ``U32`` (the
``CONNECT <port>`` of the hybrid-vsock handshake)."""
OPEN_OK = 4
"""guest → host: the target accepted; data may flow (the host then answers ``OK <port>``)."""
OPEN_FAIL = 5
"""guest → host: no target on that port, or it refused (reason); the host closes the
connection, as Cloud Hypervisor's muxer does for a port nobody listens on."""
DATA = 6
"""Either way: 1..MAX_PAYLOAD bytes of the stream, within the sender's credit."""
WINDOW = 7
"""Either way: ``U32`` more bytes of credit, sent once the receiver has handed data on to its
local socket. Per-stream credit is what keeps a stalled reader from blocking other streams."""
CLOSE = 8
"""Either way: the sender's direction is over (its local socket hit EOF); the receiver
shuts down the write side of its local socket once its buffered data is out (half-close)."""
RESET = 9
"""Either way: abort the stream, both directions, at once (reason). On stream 0, guest →
host: the guest lost sync with the host's bytes and asks for a new ``HELLO``."""

KINDS = frozenset({HELLO, HELLO_ACK, OPEN, OPEN_OK, OPEN_FAIL, DATA, WINDOW, CLOSE, RESET})
LOST = 0
"""Not a frame kind: what ``FrameReader.next`` returns once for each run of bytes that are
not frames (garbage, a cut frame, a bad CRC, padding)."""

_COMPACT = 64 * 1024


def encode(kind: int, stream: int, payload: bytes = b"") -> bytes:
    """One frame. ``payload`` must be at most ``MAX_PAYLOAD`` bytes."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"a frame carries at most {MAX_PAYLOAD} bytes")
    prefix = _PREFIX.pack(MAGIC, kind, 0, stream, len(payload))
    crc = binascii.crc32(payload, binascii.crc32(prefix))
    return prefix + U32.pack(crc) + payload


def hello(kind: int, version: int, nonce: bytes) -> bytes:
    """A ``HELLO`` or ``HELLO_ACK`` frame."""
    return encode(kind, 0, _HELLO.pack(RESYNC_MAGIC, version, nonce))


def parse_hello(payload: bytes) -> tuple[int, bytes] | None:
    """``(version, nonce)`` of a ``HELLO``/``HELLO_ACK`` payload, or None if it is not one."""
    if len(payload) != _HELLO.size:
        return None
    magic, version, nonce = _HELLO.unpack(payload)
    return (version, nonce) if magic == RESYNC_MAGIC else None


def reason(text: str) -> bytes:
    """An ``OPEN_FAIL``/``RESET`` payload: ``text`` in UTF-8, cut to ``REASON_MAX`` bytes."""
    return text.encode("utf-8", "replace")[:REASON_MAX]


class FrameReader:
    """Splits a byte stream into checked frames, skipping whatever is not one.

    Feed it bytes with ``feed``; ``next`` returns ``(kind, stream, payload)`` for each valid
    frame, ``(LOST, 0, b"")`` once at the start of each run of invalid bytes, and None when it
    needs more bytes. It buffers at most one frame besides what it was last fed.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._lost = False

    def feed(self, data: bytes) -> None:
        if self._pos >= _COMPACT:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next(self) -> tuple[int, int, bytes] | None:
        buf = self._buf
        while True:
            pos = self._pos
            available = len(buf) - pos
            if available <= 0:
                return None
            if buf[pos] == MAGIC[0] and (available < 2 or buf[pos + 1] == MAGIC[1]):
                if available < HEADER_SIZE:
                    return None
                _, kind, flags, stream, length, crc = HEADER.unpack_from(buf, pos)
                if kind in KINDS and flags == 0 and length <= MAX_PAYLOAD:
                    end = pos + HEADER_SIZE + length
                    if len(buf) < end:
                        return None
                    payload = bytes(buf[pos + HEADER_SIZE : end])
                    if binascii.crc32(payload, binascii.crc32(buf[pos : pos + 12])) == crc:
                        self._pos = end
                        self._lost = False
                        return kind, stream, payload
            found = buf.find(MAGIC, pos + 1)
            self._pos = found if found >= 0 else len(buf) - (buf[-1] == MAGIC[0])
            if not self._lost:
                self._lost = True
                return LOST, 0, b""

    def seek(self, marker: bytes, back: int) -> bool:
        """Move to ``back`` bytes before the next occurrence of ``marker`` and return True, or
        drop every byte that cannot be part of such a match and return False (the host's hunt
        for its ``HELLO_ACK``: ``seek(nonce, ACK_NONCE_AT)``)."""
        found = self._buf.find(marker, self._pos + back)
        if found >= 0:
            self._pos = found - back
            return True
        self._pos = max(self._pos, len(self._buf) - (back + len(marker) - 1))
        return False
