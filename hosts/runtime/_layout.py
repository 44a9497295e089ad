"""A sandbox's directory on the host, and the records kept in it.

``<state_dir>/sandboxes/<id>/`` (mode 0700, root)::

    spec.json     the SandboxSpec it was last created or started with
    base.json     DiskBase: the template build the disk was made on
    boot.json     BootRecord, present exactly while the sandbox is booted (written before
                  its first process starts, removed after its last one is gone)
    bundle/       the OCI bundle: config.json, rewritten at every boot
    sys/          a sysfs of the sandbox's network namespace, mounted while it is booted
                  (bound read-only at /sys inside)
    hosts         bound read-only at /etc/hosts: localhost and the sandbox's hostname
    run/          bound at /run/dnah inside; owned by the sandbox user; holds agent.sock
    console.log   runc's and the agent's stdout/stderr (runc's log lines are JSON)

The disk itself is a subvolume of the storage pool (``hosts/storage``), not in here.

Recovery reads ``spec.json``, ``base.json`` and ``boot.json`` back, so everything a later
hostd needs to adopt or clean up a sandbox is in this directory.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import msgspec

from contracts.host import SandboxSpec
from hosts.errors import SandboxConflict

_CONSOLE_TAIL = 2000


class DiskBase(msgspec.Struct, frozen=True, kw_only=True):
    """The lower layer a disk was created on; its upper layer only makes sense over it."""

    template: str
    content_hash: str


class BootRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What a booted sandbox holds besides its cgroup: the network slot (address and veth)."""

    slot: int


class SandboxDir:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.bundle = path / "bundle"
        self.sysfs = path / "sys"
        self.hosts = path / "hosts"
        self.run = path / "run"
        self.agent_socket = self.run / "agent.sock"
        self.console = path / "console.log"
        self._spec = path / "spec.json"
        self._base = path / "base.json"
        self._boot = path / "boot.json"

    @property
    def sandbox_id(self) -> str:
        return self.path.name

    def claim(self) -> None:
        """Create the directory itself; the atomic step that makes the id ours.

        Raises:
            SandboxConflict: the directory exists (the id is taken, on disk at least).
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.path.mkdir(mode=0o700)
        except FileExistsError:
            raise SandboxConflict(f"sandbox {self.sandbox_id} already exists") from None

    def populate(self, spec: SandboxSpec, base: DiskBase, uid: int, gid: int) -> None:
        """Lay out the claimed directory; ``uid``/``gid`` (host ids) own the agent's ``run/``."""
        for directory in (self.bundle, self.sysfs, self.run):
            directory.mkdir(mode=0o755)
        os.chown(self.run, uid, gid)
        os.chmod(self.run, 0o700)
        self.hosts.write_text(f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n127.0.1.1\t{spec.id}\n")
        os.chmod(self.hosts, 0o644)
        _write(self._base, base)
        self.write_spec(spec)

    def read_spec(self) -> SandboxSpec:
        return msgspec.json.decode(self._spec.read_bytes(), type=SandboxSpec)

    def write_spec(self, spec: SandboxSpec) -> None:
        _write(self._spec, spec)

    def read_base(self) -> DiskBase:
        return msgspec.json.decode(self._base.read_bytes(), type=DiskBase)

    def read_boot(self) -> BootRecord | None:
        try:
            return msgspec.json.decode(self._boot.read_bytes(), type=BootRecord)
        except (FileNotFoundError, msgspec.DecodeError):
            return None

    def write_boot(self, record: BootRecord) -> None:
        _write(self._boot, record)

    def clear_boot(self) -> None:
        """Forget the boot: the record, and the socket the dead agent left behind."""
        for path in (self._boot, self.agent_socket):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def console_tail(self) -> str:
        """The end of the console log, for error messages about a failed boot."""
        try:
            with open(self.console, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - _CONSOLE_TAIL))
                return f.read().decode(errors="replace").strip()
        except FileNotFoundError:
            return ""


def _write(path: Path, record: msgspec.Struct) -> None:
    """Write ``record`` as JSON so that a reader sees the old file or the new, never half."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(msgspec.json.encode(record))
    os.replace(tmp, path)
