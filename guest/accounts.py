"""Running a process as another account of the sandbox (a template's service, a ``proc.start``
with ``user``): through ``sudo -n -u``, which every template's agent account may use without a
password.

sudo resets the environment, so the process's own is set again after it by ``env -i``; the
working directory is entered by ``env -C`` once the account is switched, as the agent's
account may not enter that account's home (``/root``). A process started this way is a child
of sudo, which keeps the agent's real uid: a signal from the agent reaches sudo, which relays
it, but not a SIGKILL, which sudo cannot relay, and the agent may not signal the child itself.
``signal_as_root`` sends such a signal through sudo too.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
from dataclasses import dataclass

SIGNAL_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Account:
    """What a process of ``name`` starts with: its ``HOME``, ``USER`` and ``LOGNAME``, and its
    home as the default working directory. ``own``: the agent's own account (no sudo)."""

    name: str
    home: str
    own: bool

    def env(self) -> dict[str, str]:
        return {"HOME": self.home, "USER": self.name, "LOGNAME": self.name}


def lookup(name: str) -> Account:
    """The account ``name``; raises ``KeyError`` when the sandbox has none."""
    entry = pwd.getpwnam(name)
    return Account(entry.pw_name, entry.pw_dir, entry.pw_uid == os.getuid())


def command(account: Account, argv: list[str], env: dict[str, str], cwd: str) -> tuple[list[str], str]:
    """(argv, working directory for ``Popen``) that run ``argv`` as ``account`` with exactly
    ``env`` in ``cwd``; unchanged for the agent's own account. The caller passes its own
    environment to ``Popen`` (sudo's)."""
    if account.own:
        return argv, cwd
    assignments = [f"{name}={value}" for name, value in env.items()]
    switched = ["sudo", "-n", "-u", account.name, "--", "/usr/bin/env", "-i", "-C", cwd, *assignments, *argv]
    return switched, "/"


def signal_as_root(pids: list[int], signum: int) -> None:
    """Send ``signum`` to ``pids``, which the agent's account may not signal, through sudo
    (best effort: a sandbox without sudo has no other accounts' processes to signal)."""
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run(
            ["sudo", "-n", "/bin/kill", "-s", str(signum), *map(str, pids)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=SIGNAL_TIMEOUT_S,
            check=False,
        )
