"""The part of Cloud Hypervisor's REST API this backend speaks, as msgspec types.

Written by us from Cloud Hypervisor's published API documentation (its ``docs/api.md`` and
OpenAPI document), not generated from it: only the endpoints and fields the backend uses are
here. Request bodies omit every field left at ``None``, so the VMM applies its own default
for it and a body never names a field the VMM version at hand might not know.

Sizes are bytes (``MemoryConfig.size``, ``VmResize.desired_ram``), as the API counts them.
Reading is lenient (``VmInfo`` and ``VmmPingResponse`` ignore fields they do not name): the
VMM adds fields between releases and we must not break on them.
"""

from __future__ import annotations

from typing import Literal

import msgspec

API_ROOT = "/api/v1"
"""Every endpoint is ``PUT`` or ``GET`` on ``http://localhost/api/v1/<name>`` over the socket."""


class _Body(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A request body: unset (None) fields are left out of the JSON."""


class PayloadConfig(_Body, frozen=True):
    """What the VMM boots: a PVH-capable ``vmlinux`` (direct kernel boot), its command
    line and an initramfs."""

    kernel: str | None = None
    cmdline: str | None = None
    initramfs: str | None = None
    firmware: str | None = None


class CpusConfig(_Body, frozen=True):
    boot_vcpus: int
    max_vcpus: int
    """Above ``boot_vcpus``, the ceiling ``vm.resize`` may hotplug up to."""


class MemoryConfig(_Body, frozen=True):
    size: int
    hotplug_size: int | None = None
    """Memory ``vm.resize`` may add on top of ``size`` (ACPI hotplug)."""
    shared: bool | None = None
    """Guest RAM as a shared mapping (needed for vhost-user devices and local migration)."""
    hugepages: bool | None = None
    hugepage_size: int | None = None
    mergeable: bool | None = None
    """KSM: let the host merge identical pages across VMs."""
    thp: bool | None = None


class DiskConfig(_Body, frozen=True):
    path: str
    readonly: bool | None = None
    direct: bool | None = None
    id: str | None = None
    image_type: Literal["Raw", "Qcow2", "FixedVhd", "Vhdx"] | None = None


class NetConfig(_Body, frozen=True):
    """A virtio-net device on an existing TAP. No ``ip``/``mask``: the host side of the TAP
    is bridged, not addressed."""

    tap: str
    mac: str
    id: str | None = None
    mtu: int | None = None
    num_queues: int | None = None


class RngConfig(_Body, frozen=True):
    src: str
    """The host's entropy source (``/dev/urandom``). Required, with no default here: a default
    would be left out of the body (``omit_defaults``), and the VMM requires the field."""


class ConsoleConfig(_Body, frozen=True):
    """``serial`` and ``console`` share this shape (``file`` is used with mode ``File``)."""

    mode: Literal["Off", "Pty", "Tty", "File", "Socket", "Null"]
    file: str | None = None
    socket: str | None = None


class VsockConfig(_Body, frozen=True):
    """A virtio-vsock device whose host side is the Unix socket ``socket``: a host process
    connects there and writes ``CONNECT <port>\\n`` to reach guest port ``port``."""

    cid: int
    socket: str
    id: str | None = None


class VmConfig(_Body, frozen=True):
    payload: PayloadConfig
    cpus: CpusConfig | None = None
    memory: MemoryConfig | None = None
    disks: list[DiskConfig] | None = None
    net: list[NetConfig] | None = None
    rng: RngConfig | None = None
    serial: ConsoleConfig | None = None
    console: ConsoleConfig | None = None
    vsock: VsockConfig | None = None


class VmSnapshotConfig(_Body, frozen=True):
    destination_url: str
    """``file://<directory>``: the VMM writes ``config.json``, ``state.json`` and
    ``memory-ranges`` into that (existing) directory."""


class RestoreConfig(_Body, frozen=True):
    source_url: str
    """``file://<directory>`` a ``vm.snapshot`` wrote."""
    prefault: bool | None = None


class VmResize(_Body, frozen=True):
    desired_vcpus: int | None = None
    desired_ram: int | None = None


VmState = Literal["Created", "Running", "Shutdown", "Paused", "BreakPoint"]


class VmInfo(msgspec.Struct, frozen=True, kw_only=True):
    """``GET vm.info``: the VM's state and configuration (only what we read of it)."""

    state: VmState
    config: VmConfig
    memory_actual_size: int | None = None


class VmmPingResponse(msgspec.Struct, frozen=True, kw_only=True):
    """``GET vmm.ping``: the VMM's version (recorded in every snapshot) and its pid."""

    version: str
    build_version: str | None = None
    pid: int | None = None
    features: list[str] = []


def url_of(directory: str) -> str:
    """The ``file://`` URL ``vm.snapshot``/``vm.restore`` take for a local directory."""
    if not directory.startswith("/"):
        raise ValueError(f"{directory} must be an absolute path")
    return f"file://{directory}"
