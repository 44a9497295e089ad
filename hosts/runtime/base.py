"""The runtime-backend interface, shaped for Cloud Hypervisor.

A backend boots a sandbox from a template, pauses and resumes it, snapshots it to a
directory and restores it from one, and destroys it. Every backend exposes the agent the
same way: a Unix socket speaking Cloud Hypervisor's hybrid-vsock handshake (see
``contracts.guest``), so hostd's agent client is identical whatever runs the sandbox.

Backends: OCI (``oci/``, runc containers), QEMU (``qemu/``) and Cloud Hypervisor
(``cloud_hypervisor/``) microVMs, and the fake one for tests; ``factory.py`` builds the one
configured. What each can do differs (``Capabilities``), and the core is told.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from contracts.host import Capabilities, SandboxInfo, SandboxSpec

if TYPE_CHECKING:
    from hosts.templates import Template

__all__ = ["Capabilities", "PortEndpoint", "SandboxRuntime"]


@dataclass(frozen=True)
class PortEndpoint:
    """Where a TCP connection to one of a sandbox's ports goes (``hosts/ports/``).

    hostd creates the socket inside ``netns`` (``None``: hostd's own) and connects it to
    ``address`` and the port; nothing is ever published on the host for it."""

    netns: Path | None
    address: str


class SandboxRuntime(Protocol):
    kind: str
    """The runtime's name, as ``DNAH_HOST_RUNTIME`` spells it; recorded in every manifest."""
    capabilities: Capabilities
    """What it can do (``contracts.host.Capabilities``), reported to the core at registration."""

    async def recover(self) -> list[SandboxInfo]:
        """Called once at hostd start: adopt what a previous hostd left, return the inventory."""
        ...

    async def prepare(self, template: Template) -> None:
        """Do now, once, the work the first sandbox of ``template`` would otherwise wait for
        (import it into storage, build its image); idempotent, safe beside creates."""
        ...

    async def create(self, spec: SandboxSpec, snapshot: Path | None = None) -> SandboxInfo:
        """Create and boot a sandbox; return when its agent answers. On any failure, everything
        created so far is removed before the error propagates. With ``snapshot`` (a directory
        ``snapshot`` wrote, verified again here), the new disk is that snapshot's: a clone."""
        ...

    async def start(self, spec: SandboxSpec) -> SandboxInfo:
        """Boot a stopped sandbox on its existing disk."""
        ...

    async def stop(self, sandbox_id: str) -> SandboxInfo:
        """Kill the sandbox's processes and free CPU/memory; the disk is kept."""
        ...

    async def pause(self, sandbox_id: str) -> SandboxInfo: ...

    async def resume(self, sandbox_id: str) -> SandboxInfo: ...

    async def snapshot(self, sandbox_id: str, directory: Path) -> None:
        """Write the sandbox's state (filesystem, and memory if ``capabilities.memory_snapshot``)
        into ``directory``, in the backend's snapshot kind (``hosts/runtime/manifest.py``): a
        host-local one, which may need ``directory`` on the backend's own storage (the pool)."""
        ...

    async def export(self, sandbox_id: str, directory: Path) -> None:
        """Write the sandbox's disk into ``directory`` (any filesystem) as a portable,
        content-hashed ``archive`` (tar + zstd); what archives are made of."""
        ...

    async def restore(self, sandbox_id: str, directory: Path) -> SandboxInfo:
        """Replace the sandbox's state with the snapshot in ``directory`` and boot it."""
        ...

    async def resize(self, sandbox_id: str, cpu: int, ram_mb: int, disk_gb: int) -> SandboxInfo:
        """Set new limits, live when booted (``capabilities.live_resize``)."""
        ...

    async def archive(self, sandbox_id: str) -> SandboxInfo:
        """Drop a stopped sandbox's disk, which the caller holds a copy of; state "archived"."""
        ...

    async def unarchive(self, sandbox_id: str, directory: Path) -> SandboxInfo:
        """Put an archived sandbox's disk back from the archive ``export`` wrote in
        ``directory`` (verified first); stopped."""
        ...

    async def destroy(self, sandbox_id: str) -> None:
        """Remove every trace of the sandbox. Idempotent."""
        ...

    async def disk_used_bytes(self, sandbox_id: str) -> int:
        """Bytes allocated to the sandbox's own data (its writable layer or disk image), in
        any state. Raises ``SandboxNotFound`` for a sandbox the runtime does not hold."""
        ...

    def list(self) -> list[SandboxInfo]: ...

    async def remove_host_setup(self) -> None:
        """Remove what this instance set up host-wide (bridge, firewall table, parent cgroups),
        for ``dnah down`` and test teardown. ``SandboxConflict`` while sandboxes exist."""
        ...

    def spec(self, sandbox_id: str) -> SandboxSpec:
        """The spec the sandbox runs with now (resizes included); ``SandboxNotFound`` if absent."""
        ...

    def agent_socket(self, sandbox_id: str) -> Path:
        """The Unix socket on which ``CONNECT <port>`` reaches the sandbox's agent."""
        ...

    def port_endpoint(self, sandbox_id: str) -> PortEndpoint:
        """Where hostd connects to reach a port of the running sandbox (servers in it listen
        there). ``SandboxNotFound`` if absent, ``SandboxConflict`` unless running."""
        ...
