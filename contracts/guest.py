"""hostd ↔ guest agent: the framed protocol spoken on a sandbox's agent channel.

Transport. The host opens the sandbox's agent socket (a Unix socket) and performs Cloud
Hypervisor's hybrid-vsock handshake: it writes ``CONNECT <AGENT_PORT>\\n`` and reads back
``OK <n>\\n``. Under Cloud Hypervisor the VMM answers the handshake and the agent listens on
AF_VSOCK; under the namespace runtime the agent answers it itself. After the handshake the
stream carries frames, in both directions, for as long as the connection lives.

Framing. Each frame is a 4-byte big-endian header followed by a payload. Bit 31 of the header
is the *binary* flag, bits 0–30 the payload length. A JSON frame (flag clear) is one UTF-8 JSON
object with an integer ``id`` (chosen by the host, echoed by the agent) and a type tag ``t``.
A binary frame (flag set) carries raw bytes that belong to the JSON frame sent just before it
on the same connection, so bulk data (file streams, PTY output) never goes through base64.
Several requests may be in flight on one connection; replies are matched by ``id``, and a
request may be answered by several frames (streams end with a final typed frame).

The guest agent is stdlib-only Python, so it does not import this module: it encodes the same
JSON by hand, and ``tests/contracts/test_guest_wire.py`` proves both ends agree byte for byte.
"""

from __future__ import annotations

import msgspec

AGENT_PORT = 52
"""The vsock port the agent listens on (the ``CONNECT`` argument)."""

PROTOCOL_VERSION = 1
"""Bumped on every change to the messages below; the agent reports it in ``pong``."""

BINARY_FLAG = 0x8000_0000
LENGTH_MASK = 0x7FFF_FFFF
MAX_JSON_FRAME = 16 * 1024 * 1024
"""Largest JSON frame either end accepts; bigger data goes in binary frames."""


class _Msg(msgspec.Struct, frozen=True, kw_only=True, tag_field="t"):
    id: int


# host → guest -------------------------------------------------------------------------------


class Ping(_Msg, frozen=True, tag="ping"):
    """Liveness and version check; answered with ``Pong``."""


class Exec(_Msg, frozen=True, tag="exec"):
    """Run ``argv`` to completion. ``env`` is added to the agent's base environment.

    On timeout the agent kills the command's whole process group and answers with
    ``timed_out=True`` and ``exit_code=-9``.
    """

    argv: list[str]
    env: dict[str, str] = {}
    cwd: str | None = None
    timeout_ms: int = 60_000


# guest → host -------------------------------------------------------------------------------


class Pong(_Msg, frozen=True, tag="pong"):
    version: int
    agent: str


class ExecResult(_Msg, frozen=True, tag="exec.result"):
    stdout: str
    stderr: str
    exit_code: int
    duration_ms: float
    timed_out: bool = False


class Error(_Msg, frozen=True, tag="error"):
    """A request failed inside the agent. ``code`` is one of ``bad_request``, ``not_found``,
    ``unsupported``, ``internal``."""

    code: str
    message: str


HostToGuest = Ping | Exec
GuestToHost = Pong | ExecResult | Error

_host_decoder = msgspec.json.Decoder(HostToGuest)
_guest_decoder = msgspec.json.Decoder(GuestToHost)
_encoder = msgspec.json.Encoder()


def encode(msg: msgspec.Struct) -> bytes:
    """Return ``msg`` as one JSON frame (header included)."""
    payload = _encoder.encode(msg)
    return len(payload).to_bytes(4, "big") + payload


def decode_from_guest(payload: bytes) -> GuestToHost:
    """Decode a JSON frame payload the agent sent."""
    return _guest_decoder.decode(payload)


def decode_from_host(payload: bytes) -> HostToGuest:
    """Decode a JSON frame payload the host sent (used by contract tests)."""
    return _host_decoder.decode(payload)


def parse_header(header: bytes) -> tuple[int, bool]:
    """Split a 4-byte frame header into ``(length, is_binary)``."""
    value = int.from_bytes(header, "big")
    return value & LENGTH_MASK, bool(value & BINARY_FLAG)
