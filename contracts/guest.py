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

Requests and their replies:

==============  ======================  ===================================================
request ``t``   reply ``t``             what
==============  ======================  ===================================================
``ping``        ``pong``                liveness and protocol version
``exec``        ``exec.result``         run an argv to completion
``code.run``    ``exec.result``         run a code snippet with the language's interpreter
``dirs``        ``dirs.result``         the home, working and project directories
``metrics``     ``metrics.result``      CPU and memory limits and use, load
==============  ======================  ===================================================

Any request may instead be answered with ``error`` (``REPLIES`` maps each request type to its
reply type). hostd's generic relay (``POST /sandboxes/{id}/agent``, see ``contracts/host.py``)
carries any of these requests from the core to the agent and the reply back, so a new
operation is a new pair of messages here, a handler in the agent and a method in the core.
"""

from __future__ import annotations

from typing import Literal

import msgspec

AGENT_PORT = 52
"""The vsock port the agent listens on (the ``CONNECT`` argument)."""

PROTOCOL_VERSION = 2
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


Language = Literal["python", "bash", "javascript", "typescript"]


class CodeRun(_Msg, frozen=True, tag="code.run"):
    """Run ``code`` with the language's interpreter; answered with ``ExecResult``.

    ``python`` runs ``python3 -c code argv...``, ``bash`` runs ``bash -c code bash argv...``,
    ``javascript`` runs ``node -e code -- argv...``. ``typescript`` runs the same way as
    ``javascript``: the template's Node cannot strip types, so TypeScript-only syntax (type
    annotations, interfaces) fails with Node's ``SyntaxError`` and exit code 1. Code too long
    for one argument (``CODE_ARG_MAX`` bytes) is written to a private temporary file that the
    interpreter runs instead and that is removed afterwards. Timeouts behave as in ``Exec``.
    """

    language: Language
    code: str
    argv: list[str] = []
    env: dict[str, str] = {}
    cwd: str | None = None
    timeout_ms: int = 60_000


class Dirs(_Msg, frozen=True, tag="dirs"):
    """The sandbox's directories; answered with ``DirsResult``."""


class Metrics(_Msg, frozen=True, tag="metrics"):
    """What the sandbox sees of its limits and use; answered with ``MetricsResult``."""


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


class DirsResult(_Msg, frozen=True, tag="dirs.result"):
    """``home``: the sandbox user's home. ``work``: the agent's working directory, where
    commands without a ``cwd`` start (the runtime starts the agent in the home).
    ``project``: ``/workspace`` if it is a directory, else the home."""

    home: str
    work: str
    project: str


class MetricsResult(_Msg, frozen=True, tag="metrics.result"):
    """Read from the cgroup the sandbox sees at /sys/fs/cgroup (v1 or v2); where it sets no
    limit (a VM has none inside), the machine's own figures stand in.

    ``cpus``: CFS quota / period (3 decimals), else the CPUs the agent may run on.
    ``mem_limit_bytes``: the memory limit, never more than the kernel's MemTotal.
    ``mem_used_bytes``: the cgroup's memory use minus its inactive file cache (what
    ``docker stats`` reports), else MemTotal - MemAvailable.
    ``load_1m``: /proc/loadavg's first figure, as the sandbox sees it: a VM's own load, but
    the shared kernel's under the namespace runtime (load averages are not namespaced).
    """

    cpus: float
    mem_limit_bytes: int
    mem_used_bytes: int
    load_1m: float


class Error(_Msg, frozen=True, tag="error"):
    """A request failed inside the agent. ``code`` is one of ``bad_request``, ``not_found``,
    ``unsupported``, ``internal``."""

    code: str
    message: str


HostToGuest = Ping | Exec | CodeRun | Dirs | Metrics
GuestToHost = Pong | ExecResult | DirsResult | MetricsResult | Error

REPLIES: dict[type[HostToGuest], type[GuestToHost]] = {
    Ping: Pong,
    Exec: ExecResult,
    CodeRun: ExecResult,
    Dirs: DirsResult,
    Metrics: MetricsResult,
}
"""The reply type of each request type (besides ``Error``, which answers any of them)."""

CODE_ARG_MAX = 100_000
"""Bytes of ``CodeRun.code`` passed as an argument; longer code goes through a file, because
Linux limits one argument to 128 KiB (``MAX_ARG_STRLEN``)."""

_host_decoder = msgspec.json.Decoder(HostToGuest)
_any_decoder = msgspec.json.Decoder()
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


def decode_relayed(payload: bytes) -> HostToGuest:
    """Decode the body of hostd's relay route: one host → guest message, its ``id`` optional
    and ignored (hostd numbers the frames of its connection itself). An unknown ``t`` or a
    malformed message raises ``msgspec.ValidationError``; invalid JSON ``msgspec.DecodeError``
    (its parent)."""
    message = _any_decoder.decode(payload)
    if not isinstance(message, dict):
        raise msgspec.ValidationError("a message must be a JSON object")
    message["id"] = 0
    return msgspec.convert(message, HostToGuest)


def parse_header(header: bytes) -> tuple[int, bool]:
    """Split a 4-byte frame header into ``(length, is_binary)``."""
    value = int.from_bytes(header, "big")
    return value & LENGTH_MASK, bool(value & BINARY_FLAG)
