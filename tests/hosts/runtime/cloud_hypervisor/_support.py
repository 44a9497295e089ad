"""What the Cloud Hypervisor tests and the contract suite's ``cloud-hypervisor`` backends share:
a runtime configuration of their own, the API stand-in as the VMM binary (recording every
request it receives), and whether the real binary can run here."""

from __future__ import annotations

import ipaddress
import json
import shutil
from pathlib import Path

from hosts.config import GUEST_DIR
from hosts.runtime.cloud_hypervisor import CloudHypervisorConfig
from hosts.runtime.kvm import probe_kvm
from hosts.storage.pool import PoolConfig
from hosts.templates import TemplateStore

STANDIN = Path(__file__).with_name("cloud-hypervisor")
VM_IMAGE_CACHE = Path("/var/cache/dnah/vm")


def real_binary_reason() -> str | None:
    """Why the real Cloud Hypervisor cannot run here, in plain words; None when it can."""
    if shutil.which("cloud-hypervisor") is None:
        return "cloud-hypervisor is not on PATH"
    kvm = probe_kvm()
    return None if kvm.usable else f"no usable KVM: {kvm.reason}"


def standin_wrapper(directory: Path, version: str) -> tuple[Path, Path]:
    """An executable that runs the stand-in as ``version``, recording its requests; returns it
    and the directory the requests are recorded in."""
    record = directory / f"record-{version}"
    record.mkdir(parents=True, exist_ok=True)
    wrapper = directory / f"cloud-hypervisor-{version}"
    wrapper.write_text(
        f"#!/bin/sh\nexec {STANDIN} --standin-version {version} --standin-record {record} "
        f'--log-file {directory}/standin-{version}.log "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper, record


def recorded(record: Path) -> list[dict[str, object]]:
    path = record / "requests.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def ch_config(
    root: Path, templates: TemplateStore, index: int, binary: str, *, prefix: str = "dnahc", net: int = 218
) -> CloudHypervisorConfig:
    """A runtime of its own under ``root``, with kernel names ``<prefix><index>`` and
    ``10.<net>.<index>.0/24`` (each suite its own, so none shares a bridge or cgroup parent)."""
    return CloudHypervisorConfig(
        state_dir=root / "hostd",
        templates=templates,
        pool=PoolConfig(image=root / "pool.img", size_bytes=16 * 2**30, mountpoint=root / "pool"),
        image_cache=VM_IMAGE_CACHE,
        guest_dir=GUEST_DIR,
        binary=binary,
        bridge=f"{prefix}{index}",
        subnet=ipaddress.IPv4Network(f"10.{net}.{index}.0/24"),
        cgroup_parent=f"{prefix}{index}",
        egress=False,  # nothing a test runs leaves the machine
        boot_timeout=180.0,  # TCG on a loaded 2-core machine
        max_vcpus=4,
        memory_hotplug_mb=1024,
    )
