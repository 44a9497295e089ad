"""Jupyter kernel messages as the NDJSON lines of E2B's ``POST /execute`` stream.

Pure functions over message dicts, so the wire shape is testable without a kernel. The shape
is what ``e2b_code_interpreter`` 2.11.5 parses (``models.py``: ``_parse_output``), one JSON
object per line with a ``type``:

- ``stdout`` / ``stderr``: ``{text, timestamp}`` (nanoseconds since the epoch), one per
  ``stream`` message, in order;
- ``result``: the MIME bundle spread into E2B's fields (``text``, ``html``, ``markdown``,
  ``svg``, ``png``, ``jpeg``, ``pdf``, ``latex``, ``json``, ``javascript``; images stay
  base64 as the kernel sends them), other MIME types under ``extra``, and ``is_main_result``:
  true for the cell's value (``execute_result``), false for ``display_data`` (a matplotlib
  figure, ``display(...)``);
- ``error``: ``{name, value, traceback}``, the traceback's lines joined by newlines;
- ``number_of_executions``: ``{execution_count}``, once, after the cell;
- ``end_of_execution``: the last line of a completed execution (the SDK ignores types it
  does not know; a client reading the stream itself can tell a finished cell from a cut one).
"""

from __future__ import annotations

import json
import time
from typing import Any

MIME_FIELDS = {
    "text/plain": "text",
    "text/html": "html",
    "text/markdown": "markdown",
    "image/svg+xml": "svg",
    "image/png": "png",
    "image/jpeg": "jpeg",
    "application/pdf": "pdf",
    "text/latex": "latex",
    "application/json": "json",
    "application/javascript": "javascript",
}
"""Kernel MIME type → the field of E2B's ``Result`` that carries it."""


def line(event: dict[str, Any]) -> bytes:
    """One NDJSON line."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def from_message(msg: dict[str, Any]) -> dict[str, Any] | None:
    """The event for one iopub message of the running cell, or None for messages that are
    not output (status, execute_input, clear_output, comms...)."""
    kind = msg["header"]["msg_type"]
    content = msg["content"]
    if kind == "stream":
        name = "stderr" if content.get("name") == "stderr" else "stdout"
        return {"type": name, "text": content.get("text", ""), "timestamp": time.time_ns()}
    if kind in ("execute_result", "display_data"):
        return result(content.get("data", {}), is_main_result=kind == "execute_result")
    if kind == "error":
        return {
            "type": "error",
            "name": content.get("ename", ""),
            "value": content.get("evalue", ""),
            "traceback": "\n".join(content.get("traceback", [])),
        }
    return None


def result(bundle: dict[str, Any], *, is_main_result: bool) -> dict[str, Any]:
    """A ``result`` event from a MIME bundle."""
    event: dict[str, Any] = {"type": "result", "is_main_result": is_main_result}
    extra: dict[str, Any] = {}
    for mime, value in bundle.items():
        field = MIME_FIELDS.get(mime)
        if field is None:
            extra[mime] = value
        else:
            event[field] = value
    if extra:
        event["extra"] = extra
    return event


def number_of_executions(count: int) -> dict[str, Any]:
    return {"type": "number_of_executions", "execution_count": count}


def end_of_execution() -> dict[str, Any]:
    return {"type": "end_of_execution"}


def error(name: str, value: str) -> dict[str, Any]:
    """An ``error`` event the server itself reports (the kernel died, it was interrupted)."""
    return {"type": "error", "name": name, "value": value, "traceback": f"{name}: {value}"}
