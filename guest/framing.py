"""The agent's half of the hostd ↔ guest wire protocol, written with the stdlib only.

``contracts/guest.py`` is the source of truth. The agent cannot import it (the template's
python3 has no msgspec), so this module restates the constants, the frame header and the
message shapes by hand. ``tests/contracts/test_guest_wire.py`` proves both ends agree byte for
byte, which is why the reply builders below fix the key order msgspec uses: the ``t`` tag first,
then the message's own fields in the order ``contracts.guest`` declares them, then ``id``
(msgspec puts the keyword-only fields inherited from ``_Msg`` after the subclass's fields).

Only JSON frames are produced here. No request takes binary data yet, but the header parser
recognises binary frames so the agent can skip one without losing its place in the stream.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeGuard

AGENT_PORT = 52
PROTOCOL_VERSION = 2
BINARY_FLAG = 0x8000_0000
LENGTH_MASK = 0x7FFF_FFFF
MAX_JSON_FRAME = 16 * 1024 * 1024
HEADER_SIZE = 4

DEFAULT_TIMEOUT_MS = 60_000
LANGUAGES = ("python", "bash", "javascript", "typescript")


class BadRequest(Exception):
    """A JSON frame that is not a valid request. ``request_id`` is 0 when no id could be read,
    so the host still gets an ``error`` frame it can log."""

    def __init__(self, request_id: int, message: str) -> None:
        super().__init__(message)
        self.request_id = request_id


@dataclass(frozen=True)
class PingRequest:
    id: int


@dataclass(frozen=True)
class ExecRequest:
    id: int
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    timeout_ms: int = DEFAULT_TIMEOUT_MS


@dataclass(frozen=True)
class CodeRunRequest:
    id: int
    language: str
    code: str
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    timeout_ms: int = DEFAULT_TIMEOUT_MS


@dataclass(frozen=True)
class DirsRequest:
    id: int


@dataclass(frozen=True)
class MetricsRequest:
    id: int


Request = PingRequest | ExecRequest | CodeRunRequest | DirsRequest | MetricsRequest


def parse_header(header: bytes) -> tuple[int, bool]:
    """Split a 4-byte frame header into ``(length, is_binary)``."""
    value = int.from_bytes(header, "big")
    return value & LENGTH_MASK, bool(value & BINARY_FLAG)


def encode(message: Mapping[str, object]) -> bytes:
    """Return ``message`` as one JSON frame, header included.

    Compact separators and raw UTF-8 (no ``\\u`` escapes for non-ASCII) are what msgspec emits.
    Floats must be finite and written in fixed notation to match msgspec, which is why
    ``exec_result`` rounds ``duration_ms`` to whole microseconds.
    """
    payload = json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    return len(payload).to_bytes(HEADER_SIZE, "big") + payload


def pong(request_id: int, agent: str) -> dict[str, object]:
    return {"t": "pong", "version": PROTOCOL_VERSION, "agent": agent, "id": request_id}


def exec_result(
    request_id: int, *, stdout: str, stderr: str, exit_code: int, duration_ms: float, timed_out: bool
) -> dict[str, object]:
    return {
        "t": "exec.result",
        "stdout": stdout,
        "stderr": stderr,
        "exit_code": exit_code,
        "duration_ms": round(duration_ms, 3),
        "timed_out": timed_out,
        "id": request_id,
    }


def dirs_result(request_id: int, *, home: str, work: str, project: str) -> dict[str, object]:
    return {"t": "dirs.result", "home": home, "work": work, "project": project, "id": request_id}


def metrics_result(
    request_id: int, *, cpus: float, mem_limit_bytes: int, mem_used_bytes: int, load_1m: float
) -> dict[str, object]:
    """Floats are rounded to 3 decimals for the same reason as ``exec_result``'s duration."""
    return {
        "t": "metrics.result",
        "cpus": round(cpus, 3),
        "mem_limit_bytes": mem_limit_bytes,
        "mem_used_bytes": mem_used_bytes,
        "load_1m": round(load_1m, 3),
        "id": request_id,
    }


def error(request_id: int, code: str, message: str) -> dict[str, object]:
    return {"t": "error", "code": code, "message": message, "id": request_id}


def parse_request(payload: bytes) -> Request:
    """Decode and validate one JSON frame from the host.

    Unknown fields are ignored, as msgspec does, so a newer host can add optional fields
    without breaking an older agent. Anything else that ``contracts.guest`` would reject
    raises ``BadRequest``.
    """
    try:
        message = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(0, f"malformed JSON: {exc}") from None
    if not isinstance(message, dict):
        raise BadRequest(0, "a frame must be a JSON object")
    request_id = message.get("id")
    if not _is_int(request_id):
        raise BadRequest(0, "'id' must be an integer")
    kind = message.get("t")
    if kind == "ping":
        return PingRequest(request_id)
    if kind == "exec":
        return _parse_exec(request_id, message)
    if kind == "code.run":
        return _parse_code_run(request_id, message)
    if kind == "dirs":
        return DirsRequest(request_id)
    if kind == "metrics":
        return MetricsRequest(request_id)
    raise BadRequest(request_id, f"unknown message type {kind!r}")


def _parse_exec(request_id: int, message: dict[str, object]) -> ExecRequest:
    argv = message.get("argv")
    if not _is_str_list(argv) or not argv:
        raise BadRequest(request_id, "'argv' must be a non-empty list of strings")
    env, cwd, timeout_ms = _parse_run_options(request_id, message)
    return ExecRequest(request_id, argv=argv, env=env, cwd=cwd, timeout_ms=timeout_ms)


def _parse_code_run(request_id: int, message: dict[str, object]) -> CodeRunRequest:
    language = message.get("language")
    if language not in LANGUAGES:
        raise BadRequest(request_id, f"'language' must be one of {', '.join(LANGUAGES)}")
    assert isinstance(language, str)
    code = message.get("code")
    if not isinstance(code, str):
        raise BadRequest(request_id, "'code' must be a string")
    argv = message.get("argv", [])
    if not _is_str_list(argv):
        raise BadRequest(request_id, "'argv' must be a list of strings")
    env, cwd, timeout_ms = _parse_run_options(request_id, message)
    return CodeRunRequest(
        request_id, language=language, code=code, argv=argv, env=env, cwd=cwd, timeout_ms=timeout_ms
    )


def _parse_run_options(request_id: int, message: dict[str, object]) -> tuple[dict[str, str], str | None, int]:
    """The ``env``, ``cwd`` and ``timeout_ms`` that ``exec`` and ``code.run`` share."""
    env = message.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(value, str) for value in env.values()):
        raise BadRequest(request_id, "'env' must map strings to strings")
    cwd = message.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        raise BadRequest(request_id, "'cwd' must be a string or null")
    timeout_ms = message.get("timeout_ms", DEFAULT_TIMEOUT_MS)
    if not _is_int(timeout_ms) or timeout_ms <= 0:
        raise BadRequest(request_id, "'timeout_ms' must be a positive integer")
    return env, cwd, timeout_ms


def _is_str_list(value: object) -> TypeGuard[list[str]]:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _is_int(value: object) -> TypeGuard[int]:
    """JSON integers only: Python's ``bool`` is an ``int`` but ``true`` is not a valid id."""
    return isinstance(value, int) and not isinstance(value, bool)
