"""The official Daytona SDK's PTY API, unmodified, against one sandbox; prints a JSON report.

Run by ``test_daytona_pty.py`` with the SDK's own virtualenv, like ``daytona_flow.py``:
configured with ``DAYTONA_API_URL`` and ``DAYTONA_API_KEY`` only, importing nothing of the
project. Covers ``create_pty_session`` (create-connect WebSocket, envs subprotocol),
``send_input``, output by iteration and ``wait``, ``resize``, ``get_pty_session_info``,
``list_pty_sessions``, ``connect_pty_session`` (a second client), the exit code, ``kill``,
and the typed errors for a missing or duplicate session.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from daytona import Daytona, PtySize


def read_until(handle: Any, marker: bytes, timeout: float = 20.0) -> bytes:
    """Output of ``handle`` until ``marker`` shows up (``wait`` with a timeout returns with the
    session still connected, so it can be called again)."""
    seen = bytearray()
    deadline = time.monotonic() + timeout
    while marker not in seen:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{marker!r} not seen in {bytes(seen)!r}")
        handle.wait(on_data=seen.extend, timeout=0.5)
    return bytes(seen)


def info_of(info: Any) -> dict[str, Any]:
    return {
        "id": info.id,
        "cols": info.cols,
        "rows": info.rows,
        "cwd": info.cwd,
        "envs": info.envs,
        "active": info.active,
        "lazy_start": info.lazy_start,
        "has_created_at": bool(info.created_at),
    }


def main() -> int:
    report: dict[str, Any] = {}
    daytona = Daytona()
    sandbox = daytona.create()
    process = sandbox.process
    try:
        pty = process.create_pty_session(
            id="term", cwd="/tmp", envs={"GREETING": "hello"}, pty_size=PtySize(rows=25, cols=100)
        )
        report["connected"] = pty.is_connected()
        pty.send_input("echo $GREETING-$((6*7)); pwd; stty size; echo MARK''ER1\n")
        out = read_until(pty, b"MARKER1").decode(errors="replace")
        report["first_output"] = {
            "greeting": "hello-42" in out,
            "cwd": "/tmp" in out,
            "size": "25 100" in out,
        }
        report["info"] = info_of(process.get_pty_session_info("term"))

        resized = pty.resize(PtySize(rows=40, cols=120))
        report["resized"] = [resized.cols, resized.rows]
        pty.send_input("stty size; echo MARK''ER2\n")
        report["size_after_resize"] = "40 120" in read_until(pty, b"MARKER2").decode(errors="replace")
        report["listed"] = [s.id for s in process.list_pty_sessions()]

        second = process.connect_pty_session("term")
        second.send_input("echo from-$((1+1))-second\n")
        report["second_sees"] = b"from-2-second" in read_until(second, b"from-2-second")
        report["first_sees"] = b"from-2-second" in read_until(pty, b"from-2-second")
        second.disconnect()

        pty.send_input("exit 7\n")
        result = pty.wait(timeout=20)
        report["exit"] = {
            "exit_code": result.exit_code,
            "error": result.error,
            "connected": pty.is_connected(),
        }
        pty.disconnect()
        report["listed_after_exit"] = [s.id for s in process.list_pty_sessions()]

        doomed = process.create_pty_session(id="doomed")
        try:
            process.create_pty_session(id="doomed")
            report["duplicate"] = "no error"
        except Exception as exc:
            report["duplicate"] = type(exc).__name__
        doomed.send_input("sleep 1000\n")
        doomed.kill()
        killed = doomed.wait(timeout=20)
        report["killed"] = {"exit_code": killed.exit_code, "connected": doomed.is_connected()}
        doomed.disconnect()
        report["listed_after_kill"] = [s.id for s in process.list_pty_sessions()]

        try:
            process.get_pty_session_info("missing")
            report["missing"] = "no error"
        except Exception as exc:
            report["missing"] = type(exc).__name__
        try:
            process.connect_pty_session("missing")
            report["connect_missing"] = "no error"
        except Exception as exc:  # the sync SDK does not type this one: its message has the status
            report["connect_missing"] = f"{type(exc).__name__}: {exc}"
    finally:
        daytona.delete(sandbox)
    json.dump(report, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
