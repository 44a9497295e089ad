"""A VM sandbox's directory on the host, and the records kept in it.

``<state_dir>/sandboxes/<id>/`` (mode 0700, root)::

    spec.json      the SandboxSpec it was last created, started or resized with
    base.json      DiskBase: the template build its disk was made from
    boot.json      BootRecord (the network slot), present exactly while it is booted
    machine.json   Machine: the VM shape of the current (or last) boot
    archived       marker: the disk was dropped for an archive
    held           marker: a snapshot or export stopped the vCPUs (a recovering hostd resumes it)
    run/           QEMU's sockets and logs (``launcher.RunFiles``), vmm.json while booted

The disk is in the storage pool (``hosts/vm/disk.py``). Recovery reads these back, so a
restarted hostd can adopt or clean up every sandbox from here.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import msgspec

from contracts.host import SandboxSpec
from hosts.errors import SandboxConflict
from hosts.runtime._layout import BootRecord, DiskBase
from hosts.runtime.qemu.launcher import Machine, RunFiles
from hosts.runtime.qemu.process import VmmRecord

ARCHIVED = "archived"
HELD = "held"
_CONSOLE_TAIL = 2000
_RECORDS = (msgspec.DecodeError, FileNotFoundError)


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
        """Forget the boot: its records and the sockets the dead VM and muxer left."""
        files = self.files
        for path in (self._boot, files.vmm, files.qmp, files.serial, files.agent):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def console_tail(self) -> str:
        """The end of the guest's console and of QEMU's own messages, for boot failures."""
        parts = []
        for path in (self.files.console, self.files.stderr):
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
