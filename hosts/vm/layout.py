"""A VM sandbox's directory on the host, the records kept in it, and the VM shape it booted with.

``<state_dir>/sandboxes/<id>/`` (mode 0700, root)::

    spec.json      the SandboxSpec it was last created, started or resized with
    base.json      DiskBase: the template build its disk was made from
    boot.json      BootRecord (the network slot), present exactly while it is booted
    machine.json   Machine: the VM shape of the current (or last) boot
    archived       marker: the disk was dropped for an archive
    held           marker: a snapshot or export paused the VM (a recovering hostd resumes it)
    run/           the VMM's sockets and logs (``RunFiles``), vmm.json while booted

The disk is in the storage pool (``hosts/vm/disk.py``). Recovery reads these back, so a
restarted hostd can adopt or clean up every sandbox from here, whichever the VMM.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Literal

import msgspec

from contracts.host import SandboxSpec
from hosts.errors import SandboxConflict
from hosts.runtime._layout import BootRecord, DiskBase
from hosts.runtime._mounts import remove_tree
from hosts.vm.process import VmmRecord

ARCHIVED = "archived"
HELD = "held"
_CONSOLE_TAIL = 2000
_RECORDS = (msgspec.DecodeError, FileNotFoundError)


class Machine(msgspec.Struct, frozen=True, kw_only=True):
    """The VM's shape and devices: what a memory snapshot depends on, so a restore uses the same."""

    cpu: int
    ram_mb: int
    kernel: str
    initrd: str
    mac: str
    accel: str
    """``kvm`` or ``tcg``."""
    channel: Literal["serial", "vsock"] = "serial"
    """The agent channel's device (``BootParams.channel``): a restarted hostd serves the VM
    over the channel it booted with (records from before this field are ``serial``)."""


class RunFiles:
    """The files every VMM has in the sandbox's run directory; a backend keeps its own sockets
    there too (QEMU's QMP and serial port, Cloud Hypervisor's API), all removed with the boot."""

    def __init__(self, run: Path) -> None:
        self.run = run
        self.agent = run / "agent.sock"
        """What ``agent_socket`` returns: hostd's muxer (QEMU) or the VMM's hybrid vsock."""
        self.console = run / "console.log"
        """The guest's serial console."""
        self.stderr = run / "vmm.log"
        """The VMM's own output."""
        self.vmm = run / "vmm.json"
        """``VmmRecord`` of the running VMM, for a restarted hostd."""

    @property
    def logs(self) -> tuple[Path, Path]:
        return self.console, self.stderr


class VmDir:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.files = RunFiles(path / "run")
        self.archived = path / ARCHIVED
        self.held = path / HELD
        self._spec = path / "spec.json"
        self._base = path / "base.json"
        self._boot = path / "boot.json"
        self._machine = path / "machine.json"

    def claim(self) -> None:
        """Create the directory; the atomic step that makes the id ours.

        Raises:
            SandboxConflict: it exists.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.path.mkdir(mode=0o700)
        except FileExistsError:
            raise SandboxConflict(f"sandbox {self.path.name} already exists") from None
        self.files.run.mkdir(mode=0o700)

    def populate(self, spec: SandboxSpec, base: DiskBase) -> None:
        _write(self._base, base)
        self.write_spec(spec)

    def read_spec(self) -> SandboxSpec:
        return msgspec.json.decode(self._spec.read_bytes(), type=SandboxSpec)

    def write_spec(self, spec: SandboxSpec) -> None:
        _write(self._spec, spec)

    def read_base(self) -> DiskBase:
        return msgspec.json.decode(self._base.read_bytes(), type=DiskBase)

    def read_boot(self) -> BootRecord | None:
        with contextlib.suppress(*_RECORDS):
            return msgspec.json.decode(self._boot.read_bytes(), type=BootRecord)
        return None

    def write_boot(self, record: BootRecord) -> None:
        _write(self._boot, record)

    def read_machine(self) -> Machine | None:
        with contextlib.suppress(*_RECORDS):
            return msgspec.json.decode(self._machine.read_bytes(), type=Machine)
        return None

    def write_machine(self, machine: Machine) -> None:
        _write(self._machine, machine)

    def read_vmm(self) -> VmmRecord | None:
        with contextlib.suppress(*_RECORDS):
            return msgspec.json.decode(self.files.vmm.read_bytes(), type=VmmRecord)
        return None

    def write_vmm(self, record: VmmRecord) -> None:
        _write(self.files.vmm, record)

    def clear_boot(self) -> None:
        """Forget the boot: its record, and everything in ``run/`` but the logs (the VMM's
        record, the sockets the dead VMM and muxer left, a restore's staging directory)."""
        with contextlib.suppress(FileNotFoundError):
            self._boot.unlink()
        run = self.files.run
        if not run.is_dir():
            return
        for entry in run.iterdir():
            if entry in self.files.logs:
                continue
            if entry.is_dir() and not entry.is_symlink():
                remove_tree(entry)
            else:
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()

    def console_tail(self) -> str:
        """The end of the guest's console and of the VMM's own messages, for boot failures."""
        parts = []
        for path in self.files.logs:
            try:
                with open(path, "rb") as f:
                    f.seek(max(0, f.seek(0, os.SEEK_END) - _CONSOLE_TAIL))
                    parts.append(f.read().decode(errors="replace").strip())
            except FileNotFoundError:
                continue
        return "\n".join(p for p in parts if p)


def _write(path: Path, record: msgspec.Struct) -> None:
    """Write ``record`` as JSON so that a reader sees the old file or the new, never half."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(msgspec.json.encode(record))
    os.replace(tmp, path)
