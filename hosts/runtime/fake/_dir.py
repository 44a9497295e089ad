"""A fake sandbox's directory, and the records kept in it.

``<state_dir>/sandboxes/<id>/``::

    spec.json     the SandboxSpec it was last created, started or resized with
    base.json     DiskBase: the (fake) template its disk was made on
    agent.json    AgentRecord, present exactly while the sandbox is booted
    paused        present while the sandbox is paused
    archived      present once its disk is (being) dropped for an archive
    disk/         the sandbox's "disk": the agent's working directory and HOME
    disk/tmp/     its TMPDIR, so temporary files stay inside the directory too
    agent.sock    the agent's socket
    console.log   the agent's stdout and stderr

Everything a later hostd needs to adopt or clean up a sandbox is in here (see ``recover``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

import msgspec

from contracts.host import SandboxSpec
from hosts.errors import SandboxConflict
from hosts.runtime._layout import DiskBase
from hosts.runtime._mounts import remove_tree
from hosts.runtime.fake._procs import AgentRecord

PAUSED = "paused"
ARCHIVED = "archived"


class FakeDir:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.disk = path / "disk"
        self.agent_socket = path / "agent.sock"
        self.console = path / "console.log"
        self._spec = path / "spec.json"
        self._base = path / "base.json"
        self._agent = path / "agent.json"

    def claim(self) -> None:
        """Create the directory itself: the atomic step that makes the id ours.

        Raises:
            SandboxConflict: the directory exists.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.path.mkdir(mode=0o700)
        except FileExistsError:
            raise SandboxConflict(f"sandbox {self.path.name} already exists") from None

    def populate(self, spec: SandboxSpec, base: DiskBase) -> None:
        """Lay out an empty disk and the records in the claimed directory."""
        self.disk.mkdir(mode=0o755)
        (self.disk / "tmp").mkdir(mode=0o700)
        _write(self._base, base)
        self.write_spec(spec)

    def read_spec(self) -> SandboxSpec:
        return msgspec.json.decode(self._spec.read_bytes(), type=SandboxSpec)

    def write_spec(self, spec: SandboxSpec) -> None:
        _write(self._spec, spec)

    def read_base(self) -> DiskBase:
        return msgspec.json.decode(self._base.read_bytes(), type=DiskBase)

    def read_agent(self) -> AgentRecord | None:
        try:
            return msgspec.json.decode(self._agent.read_bytes(), type=AgentRecord)
        except (FileNotFoundError, msgspec.DecodeError):
            return None

    def write_agent(self, record: AgentRecord) -> None:
        _write(self._agent, record)

    def clear_boot(self) -> None:
        """Forget the boot: the agent record, the pause marker and the dead agent's socket."""
        for path in (self._agent, self.path / PAUSED, self.agent_socket):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def marked(self, marker: str) -> bool:
        return (self.path / marker).exists()

    def mark(self, marker: str, on: bool) -> None:
        if on:
            (self.path / marker).touch()
        else:
            (self.path / marker).unlink(missing_ok=True)

    def console_tail(self) -> str:
        try:
            return self.console.read_bytes()[-2000:].decode(errors="replace").strip()
        except FileNotFoundError:
            return ""

    def replace_disk(self, fill: Callable[[Path], None]) -> None:
        """Swap the disk (present or not) for one that ``fill`` writes into an empty directory.
        The old disk is moved aside before the new one takes its place, so a crash leaves a
        whole disk for ``repair``."""
        staging, old = self.path / "disk.new", self.path / "disk.old"
        remove_tree(staging)
        staging.mkdir(mode=0o755)
        fill(staging)
        (staging / "tmp").mkdir(mode=0o700, exist_ok=True)
        if self.disk.exists():
            os.rename(self.disk, old)
        os.rename(staging, self.disk)
        remove_tree(old)

    def drop_disk(self) -> None:
        for path in (self.path / "disk.new", self.path / "disk.old", self.disk):
            remove_tree(path)

    def repair(self) -> None:
        """Finish or roll back a ``replace_disk`` that a crash interrupted."""
        staging, old = self.path / "disk.new", self.path / "disk.old"
        if not self.disk.exists() and old.exists():
            os.rename(old, self.disk)
        remove_tree(staging)
        remove_tree(old)


def _write(path: Path, record: msgspec.Struct) -> None:
    """Write ``record`` as JSON so that a reader sees the old file or the new, never half."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(msgspec.json.encode(record))
    os.replace(tmp, path)
