"""Bringing a var/ left by the namespace runtime over to the OCI runtime, at hostd start.

The namespace runtime (commit f77177d and earlier) kept a sandbox's disk as an overlayfs
upper layer in ``<state dir>/sandboxes/<id>/upper`` over the template's rootfs, owned by the
sandbox's own uids (no user namespace). The OCI runtime keeps it as a pool subvolume owned by
the shifted ids, and a different set of files in the directory (``_layout``). A directory
with an ``upper/`` is therefore an old sandbox; one with ``rootfs/`` and no ``bundle/`` is an
old sandbox whose disk was archived away.

For each old sandbox with a disk, ``migrate``:

1. stops it if the old runtime left it running (its cgroup is thawed and emptied by SIGKILL):
   its disk must be still to be copied, and the OCI runtime could not adopt its processes;
2. checks that the exact template build it was made on is cached (``base.json``); without it
   the upper layer means nothing, so the sandbox cannot be brought over;
3. makes the pool disk: a writable copy of that template, the upper layer replayed onto it
   with owners shifted (``overlay_upper.apply``), under a staging name renamed into place;
4. lays the directory out as the OCI runtime does (``SandboxDir.populate``);
5. moves the old ``run/``, ``work/`` and, last, ``upper/`` to ``<state dir>/legacy/<id>/``.
   Moving ``upper/`` is the commit: until then the directory is old-format and the next run
   deletes whatever disk an interrupted attempt made and starts over. Nothing in legacy/ is
   ever deleted here.

A sandbox that cannot be brought over keeps every file as it was, but its whole directory is
moved to ``legacy/<id>/``: left in ``sandboxes/``, the OCI runtime would adopt it as a sandbox
without a disk, fail to boot it, and destroy it (old data included) when the core asks. Each
run tries those again (a template build restored to the cache makes them migratable), so
putting the build back and restarting hostd is all a retry needs.

Snapshots and archives the namespace runtime wrote hold an upper layer, not a disk; a
snapshot's signature (the core's) covers its manifest, which a re-made snapshot would change,
so they are reported, not converted, and left untouched in their stores (``legacy_entries``).

Everything found is returned in a ``Report`` and logged; ``dnah up`` prints it. Blocking
throughout: run it in a thread.
"""

from __future__ import annotations

import contextlib
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import msgspec
import structlog
import zstandard

from hosts.config import HostdConfig
from hosts.errors import HostError, TemplateNotFound
from hosts.runtime._layout import DiskBase, SandboxDir
from hosts.runtime.oci import _host
from hosts.runtime.oci.bundle import AGENT_UID, ID_COUNT
from hosts.storage import overlay_upper
from hosts.storage.pool import PoolConfig, StoragePool
from hosts.templates import Template, TemplateStore

log = structlog.get_logger("hosts.migrate")

_GB = 2**30
_STAGING = ".migrating"
"""Suffix of a pool disk being made; deleted by the next run if the migration was cut short."""
_OLD_ENTRIES = ("run", "work", "upper.new", "upper.old", "upper")
"""What moves to legacy/<id>/, in this order: ``upper`` last, as the commit."""
_NEW_ENTRIES = ("bundle", "sys", "hosts")
"""What ``populate`` creates that an old directory never has (beside ``run``)."""


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """One thing found in the old format."""

    kind: Literal["sandbox", "snapshot", "archive"]
    id: str
    migrated: bool
    kept: str
    """Where the old data is now (moved aside, or where it always was)."""
    reason: str = ""
    """Why it was not brought over; empty when it was."""


class Report(msgspec.Struct, frozen=True, kw_only=True):
    outcomes: list[Outcome]

    @property
    def migrated(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.migrated]

    @property
    def not_migrated(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.migrated]


@dataclass(frozen=True, kw_only=True)
class Target:
    """Where the old data is and what the OCI runtime needs (the fields of its ``OciConfig``)."""

    state_dir: Path
    templates: TemplateStore
    pool: PoolConfig
    uid_base: int
    cgroup_parent: str
    snapshot_dirs: tuple[Path, ...]
    """Where snapshots may be: the store now, and where the namespace runtime kept it."""
    archive_dir: Path

    @classmethod
    def from_hostd(cls, config: HostdConfig, templates: TemplateStore) -> Target:
        return cls(
            state_dir=config.state_dir,
            templates=templates,
            pool=PoolConfig.from_hostd(config),
            uid_base=config.sandbox_uid_base,
            cgroup_parent=config.cgroup,
            snapshot_dirs=tuple(dict.fromkeys((config.snapshot_dir, config.var_dir / "snapshots"))),
            archive_dir=config.archive_dir,
        )

    @property
    def legacy(self) -> Path:
        return self.state_dir / "legacy"


class _CannotMigrate(Exception):
    """This sandbox cannot be brought over; the message says why."""


def migrate(target: Target) -> Report:
    """Bring every old sandbox over, report old snapshots and archives (see the module doc).
    Safe to run again at any point, including after a crash half-way."""
    outcomes: list[Outcome] = []
    pool: StoragePool | None = None
    for sandbox_id, path in _old_sandboxes(target):
        if pool is None:
            pool = StoragePool.open(target.pool)
        outcomes.append(_migrate_one(target, pool, sandbox_id, path))
    for snapshot_dir in target.snapshot_dirs:
        outcomes += legacy_entries(snapshot_dir, "snapshot")
    outcomes += legacy_entries(target.archive_dir, "archive")
    for o in outcomes:
        (log.info if o.migrated else log.warning)(
            "namespace-runtime data", kind=o.kind, id=o.id, migrated=o.migrated, kept=o.kept, reason=o.reason
        )
    return Report(outcomes=outcomes)


def legacy_entries(root: Path, kind: Literal["snapshot", "archive"]) -> list[Outcome]:
    """Entries of a snapshot or archive store that the namespace runtime wrote: their archive
    holds an overlay upper layer, whose root directory is owned by a host id below 65536 (a
    pool disk's root is owned by the shifted root). Reported, never changed."""
    found: list[Outcome] = []
    if not root.is_dir():
        return found
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or not (entry / "manifest.json").is_file():
            continue
        owner = _archive_root_owner(entry / "rootfs.tar.zst")
        if owner is not None and owner < ID_COUNT:
            reason = (
                f"the namespace runtime's {kind} holds an overlay upper layer, which this runtime cannot "
                + (
                    "restore, and re-making it would void the core's signature"
                    if kind == "snapshot"
                    else "unarchive"
                )
            )
            found.append(Outcome(kind=kind, id=entry.name, migrated=False, kept=str(entry), reason=reason))
    return found


# sandboxes -----------------------------------------------------------------------------------


def _old_sandboxes(target: Target) -> Iterator[tuple[str, Path]]:
    """(id, directory) of every old sandbox: in ``sandboxes/``, and whole old directories that
    an earlier run moved to ``legacy/`` (unless the id has a sandbox again)."""
    sandboxes = target.state_dir / "sandboxes"
    seen = set()
    if sandboxes.is_dir():
        for path in sorted(sandboxes.iterdir()):
            if _is_old(path):
                seen.add(path.name)
                yield path.name, path
            elif (path / "bundle").is_dir() and (path / "rootfs").is_dir():
                # committed, but cut short before the old mount point went
                with contextlib.suppress(OSError):
                    (path / "rootfs").rmdir()
    if target.legacy.is_dir():
        for path in sorted(target.legacy.iterdir()):
            if path.name not in seen and _is_old(path) and not (sandboxes / path.name).exists():
                yield path.name, path


def _is_old(path: Path) -> bool:
    """A whole namespace-runtime sandbox directory (not merely its upper/ kept in legacy/)."""
    if not (path / "spec.json").is_file() or not (path / "base.json").is_file():
        return False
    return (path / "upper").is_dir() or ((path / "rootfs").is_dir() and not (path / "bundle").exists())


def _migrate_one(target: Target, pool: StoragePool, sandbox_id: str, path: Path) -> Outcome:
    home = target.state_dir / "sandboxes" / sandbox_id
    aside = target.legacy / sandbox_id
    try:
        _stop(target.cgroup_parent, sandbox_id)
        if path != home:  # a retry of one an earlier run could not bring over
            home.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.rename(path, home)
        _bring_over(target, pool, SandboxDir(home), aside)
    except (_CannotMigrate, HostError, OSError, msgspec.DecodeError) as exc:
        reason = str(exc)
        if (home / "upper").is_dir():  # not committed: a disk made meanwhile is ours, and junk
            with contextlib.suppress(HostError, OSError):
                pool.delete(_staging(pool, sandbox_id))
                pool.delete(pool.disk(sandbox_id))
        kept = str(home if home.exists() else path)
        if home.exists() and not aside.exists():
            # out of the OCI runtime's sight, every file as it was (see the module doc)
            target.legacy.mkdir(mode=0o700, exist_ok=True)
            os.rename(home, aside)
            kept = str(aside)
        return Outcome(kind="sandbox", id=sandbox_id, migrated=False, kept=kept, reason=reason)
    log.info("sandbox migrated from the namespace runtime", sandbox_id=sandbox_id, kept=str(aside))
    return Outcome(kind="sandbox", id=sandbox_id, migrated=True, kept=str(aside))


def _bring_over(target: Target, pool: StoragePool, directory: SandboxDir, aside: Path) -> None:
    path, sandbox_id = directory.path, directory.sandbox_id
    spec, base = directory.read_spec(), directory.read_base()
    upper = path / "upper"
    if not upper.is_dir() and (path / "upper.old").is_dir():
        os.rename(path / "upper.old", upper)  # what the old runtime's repair did for a cut-short restore
    if not upper.is_dir():
        raise _CannotMigrate(
            "it was archived by the namespace runtime; its archive holds an overlay upper layer, "
            "which this runtime cannot unarchive"
        )
    if os.path.lexists(aside) and (not aside.is_dir() or os.path.lexists(aside / "upper")):
        raise _CannotMigrate(f"{aside} is in the way (it should hold this sandbox's old upper layer)")
    template = _template(target.templates, base)
    # A disk here is what an interrupted attempt made: the old upper layer is still the truth.
    pool.delete(pool.disk(sandbox_id))
    staging = _staging(pool, sandbox_id)
    pool.delete(staging)
    source = pool.template(template.name, template.content_hash, template.rootfs, uid_shift=target.uid_base)
    pool.writable_copy(source, staging)
    overlay_upper.apply(upper, staging, shift=target.uid_base)
    os.rename(staging, pool.disk(sandbox_id))
    pool.set_limit(pool.disk(sandbox_id), spec.disk_gb * _GB)
    aside.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(target.legacy, 0o700)
    for name in _NEW_ENTRIES:  # an interrupted attempt's
        _remove(path / name)
    for name in ("boot.json", "frozen-for-snapshot"):  # the old runtime's boot is over
        (path / name).unlink(missing_ok=True)
    if os.path.lexists(aside / "run"):
        _remove(path / "run")  # moved aside by an interrupted attempt: this one is that attempt's
    elif (path / "run").exists():
        os.rename(path / "run", aside / "run")
    agent = target.uid_base + AGENT_UID
    directory.populate(spec, base, agent, agent)
    for name in _OLD_ENTRIES[1:]:
        if os.path.lexists(path / name):
            if os.path.lexists(aside / name):
                raise _CannotMigrate(f"{aside / name} is in the way")
            os.rename(path / name, aside / name)
    with contextlib.suppress(FileNotFoundError):
        (path / "rootfs").rmdir()


def _template(templates: TemplateStore, base: DiskBase) -> Template:
    try:
        return templates.get(base.template, content_hash=base.content_hash)
    except TemplateNotFound:
        raise _CannotMigrate(
            f"its disk was made on template build {base.template}-{base.content_hash}, which is no longer "
            f"in {templates.cache_dir}; an upper layer only means something over that exact build"
        ) from None


def _staging(pool: StoragePool, sandbox_id: str) -> Path:
    disk = pool.disk(sandbox_id)
    return disk.with_name(disk.name + _STAGING)


def _stop(parent: str, sandbox_id: str) -> None:
    """Kill whatever the old runtime left running in the sandbox's cgroup (thawed first: a v1
    freezer holds even SIGKILL). The overlay was mounted only in the sandbox's own mount
    namespace, so it goes with the last process; the OCI runtime's recover removes the
    network namespace and veth."""
    for root in _host.hierarchies():
        cgroup = root / parent / sandbox_id
        for name, thawed in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
            if (cgroup / name).exists():  # cgroupfs refuses to create a file that is not there
                (cgroup / name).write_text(thawed)
    _host.remove_sandbox(parent, sandbox_id)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        for child in path.iterdir():
            _remove(child)
        path.rmdir()
    elif os.path.lexists(path):
        path.unlink()


# stores --------------------------------------------------------------------------------------


def _archive_root_owner(archive: Path) -> int | None:
    """The uid of the first entry (``./``) of a tar+zstd archive; None if it is not one."""
    try:
        with (
            open(archive, "rb") as raw,
            zstandard.ZstdDecompressor().stream_reader(raw) as stream,
            tarfile.open(fileobj=stream, mode="r|") as tar,
        ):
            first = tar.next()
            return None if first is None else first.uid
    except (OSError, tarfile.TarError, zstandard.ZstdError):
        return None
