"""Identity refresh: a VM restored or forked from a memory snapshot becomes a machine of its own.

All restores of one snapshot wake with the same RNG state, boot id, hostname, machine id and
MAC, and a clock that stood still while the snapshot was stored. ``refresh_identity`` sends
vminit (``guest/identity.py``) new values once the restored guest answers, before anything
else reaches it; ``new_identity`` draws them. ``set_clock`` sets only the clock: after every
resume, and last in a restore.
"""

from __future__ import annotations

import secrets
import time
import uuid
from pathlib import Path

from contracts.vm import ENTROPY_MIN_BYTES, IdentityRefresh, SetClock
from hosts.vm import control


async def refresh_identity(agent_socket: Path, refresh: IdentityRefresh) -> None:
    """Apply ``refresh`` in the VM behind ``agent_socket`` (see ``hosts.vm.control.send``)."""
    await control.send(agent_socket, refresh)


def new_identity(
    hostname: str, *, address: str | None = None, gateway: str | None = None, mac: str | None = None
) -> IdentityRefresh:
    """Fresh random ids and entropy, this host's clock now, and ``hostname`` (plus a new
    address when the VM moved, and its own MAC)."""
    return IdentityRefresh(
        hostname=hostname,
        machine_id=secrets.token_hex(16),
        boot_id=str(uuid.uuid4()),
        entropy=secrets.token_hex(2 * ENTROPY_MIN_BYTES),
        unix_time_ns=time.time_ns(),
        address=address,
        gateway=gateway,
        mac=mac,
    )


async def set_clock(agent_socket: Path, *, timeout: float = control.DEFAULT_TIMEOUT) -> None:  # noqa: ASYNC109
    """Set the guest's clock to this host's, read at the last moment (``SetClock``): after a
    resume (the clock stood still while the VM was paused) and after a restore's refresh
    (whose clock was read before it could be delivered)."""
    await control.send(agent_socket, SetClock(unix_time_ns=time.time_ns()), timeout=timeout)
