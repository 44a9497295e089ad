"""Run one command to completion for an ``exec`` request.

The command gets its own session (``start_new_session=True``), hence its own process group, so
a timeout can kill everything it started with one ``killpg`` — shells, pipelines and
background jobs included. Only processes that create a new session themselves escape.

Output is read from both pipes with a selector in the calling thread, which keeps the design
to one thread per request. Three things end the read loop:

* both pipes reach EOF — the usual case, with no added latency;
* the deadline passes — the group is killed and the result says ``timed_out``;
* the command has exited but something it left in the background still holds the pipes
  (``sh -c 'server &'``). Waiting for EOF would block until that child dies, so after the
  main process exits the agent reads for ``EXIT_GRACE`` more seconds, then stops and closes
  its ends of the pipes. The background child keeps running; a later write of its to the
  closed pipe gets SIGPIPE, as it would if a shell had hung up.

Each stream keeps at most ``OUTPUT_LIMIT`` bytes; the rest is read and dropped so the command
never blocks on a full pipe. The cap keeps the ``exec.result`` frame below the protocol's
``MAX_JSON_FRAME`` even in JSON's worst case (six bytes per escaped control byte).
"""

from __future__ import annotations

import errno
import os
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass

OUTPUT_LIMIT = 1024 * 1024
EXIT_GRACE = 0.1
"""Seconds to keep reading after the main process exits while its pipes are still open."""
EXIT_POLL = 0.05
"""How often the read loop checks whether the main process has exited while pipes stay open.
Only the background-child case waits on this; EOF wakes the loop at once otherwise."""
READ_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Outcome:
    stdout: str
    stderr: str
    exit_code: int
    duration_ms: float
    timed_out: bool
    truncated: bool = False
    """Output past ``OUTPUT_LIMIT`` on either stream was dropped (the command ran on)."""


def run(argv: list[str], *, env: dict[str, str], cwd: str | None, timeout_ms: int) -> Outcome:
    """Run ``argv`` and return what it printed and how it ended.

    A command that cannot be started (missing binary or cwd, no permission) is reported the way
    a shell reports it — exit code 127 or 126 with the reason on stderr — because to the
    caller it is a failed command, not a broken agent. Arguments Popen refuses outright
    (a NUL byte, ``=`` in an env name) raise ``ValueError`` and are the caller's bad request.
    """
    started = time.monotonic()
    deadline = started + timeout_ms / 1000
    try:
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except OSError as exc:
        return Outcome(
            stdout="",
            stderr=f"{exc.filename or argv[0]}: {exc.strerror}\n",
            exit_code=127 if exc.errno == errno.ENOENT else 126,
            duration_ms=_elapsed_ms(started),
            timed_out=False,
        )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        stdout, stderr, truncated = _collect(proc, (proc.stdout.fileno(), proc.stderr.fileno()), deadline)
        timed_out = not _wait_until(proc, deadline)
    finally:
        if proc.returncode is None:
            _kill_group(proc)
        proc.stdout.close()
        proc.stderr.close()
    return Outcome(
        stdout=stdout.decode("utf-8", "replace"),
        stderr=stderr.decode("utf-8", "replace"),
        exit_code=-signal.SIGKILL if timed_out else proc.returncode,
        duration_ms=_elapsed_ms(started),
        timed_out=timed_out,
        truncated=truncated,
    )


def _collect(
    proc: subprocess.Popen[bytes], fds: tuple[int, int], deadline: float
) -> tuple[bytes, bytes, bool]:
    """Read the ``(stdout, stderr)`` pipes until EOF, the deadline, or the post-exit grace
    ends; the flag says whether output past the cap was dropped."""
    captured = {fd: bytearray() for fd in fds}
    truncated = False
    stop_at = deadline
    exited = False
    with selectors.DefaultSelector() as selector:
        for fd in captured:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            now = time.monotonic()
            if not exited and proc.poll() is not None:
                exited = True
                stop_at = min(deadline, now + EXIT_GRACE)
            if now >= stop_at:
                break
            wait = stop_at - now if exited else min(stop_at - now, EXIT_POLL)
            for key, _ in selector.select(wait):
                chunk = os.read(key.fd, READ_CHUNK)
                if not chunk:
                    selector.unregister(key.fd)
                    continue
                buffer = captured[key.fd]
                room = max(0, OUTPUT_LIMIT - len(buffer))
                truncated = truncated or len(chunk) > room
                buffer += chunk[:room]
    return bytes(captured[fds[0]]), bytes(captured[fds[1]]), truncated


def _wait_until(proc: subprocess.Popen[bytes], deadline: float) -> bool:
    """Reap the main process if it exits before ``deadline``; False if it is still running.

    Needed when a command closes its pipes but keeps running (``exec >&-; sleep 100``).
    """
    try:
        proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return False
    return True


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the command's whole process group, then reap the leader.

    The leader is not reaped yet (at worst it is a zombie), so its pid still names the group,
    cannot have been reused, and ``killpg`` cannot fail with ESRCH.
    """
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _elapsed_ms(started: float) -> float:
    return (time.monotonic() - started) * 1000
