"""Identity refresh: a VM restored or forked from a memory snapshot becomes a machine of its own.

All restores of one snapshot wake with the same RNG state, boot id, hostname and machine id,
and a clock that stood still while the snapshot was stored. ``refresh_identity`` sends vminit
(``guest/identity.py``) new values right after ``cont``, before anything else reaches the
guest; ``new_identity`` draws them.
"""

from __future__ import annotations

import secrets
import time
import uuid
from pathlib import Path

from contracts.vm import ENTROPY_MIN_BYTES, IdentityRefresh
from hosts.vm import control


async def refresh_identity(agent_socket: Path, refresh: IdentityRefresh) -> None:
    """Apply ``refresh`` in the VM behind ``agent_socket`` (see ``hosts.vm.control.send``)."""
    await control.send(agent_socket, refresh)


def new_identity(hostname: str, *, address: str | None = None, gateway: str | None = None) -> IdentityRefresh:
    """Fresh random ids and entropy, this host's clock now, and ``hostname`` (plus a new
    address when the VM moved)."""
    return IdentityRefresh(
        hostname=hostname,
        machine_id=secrets.token_hex(16),
        boot_id=str(uuid.uuid4()),
        entropy=secrets.token_hex(2 * ENTROPY_MIN_BYTES),
        unix_time_ns=time.time_ns(),
        address=address,
        gateway=gateway,
    )
