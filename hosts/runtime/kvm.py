"""Is KVM usable for booting a stock guest kernel here? The probe behind ``DNAH_HOST_RUNTIME=auto``.

A ``/dev/kvm`` node is not enough. On a nested cloud machine it may be provided by PVM
(``kvm_pvm``, a paravirtualised KVM for guests without hardware virtualisation), which boots
only PVM-enabled guest kernels: a stock kernel under it hangs instead of failing, so picking a
VM runtime there would turn every sandbox create into a boot timeout. The probe therefore
checks, in order, and stops at the first failure:

1. ``/dev/kvm`` exists and this process may open it read-write (QEMU and Cloud Hypervisor
   both need that);
2. a hardware-virtualisation provider is loaded: ``/sys/module/kvm_intel`` or
   ``/sys/module/kvm_amd``. Only ``kvm_pvm`` (or none) means not usable;
3. the ``KVM_GET_API_VERSION`` ioctl answers 12, the only stable KVM API.

It never creates a VM: that would cost a boot and could hang on exactly the machines this
guards against. An operator who knows better overrides it with ``DNAH_VM_ACCEL`` (see
``hosts/config.py``).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import msgspec

KVM_GET_API_VERSION = 0xAE00
"""``_IO(KVMIO, 0x00)`` with ``KVMIO = 0xAE``."""
KVM_API_VERSION = 12
_PROVIDERS = ("kvm_intel", "kvm_amd")


class KvmProbe(msgspec.Struct, frozen=True):
    usable: bool
    reason: str
    """Why, in words for the start-up log."""


def probe_kvm(dev: Path = Path("/dev/kvm"), sys_module: Path = Path("/sys/module")) -> KvmProbe:
    """Check ``dev`` and the loaded modules under ``sys_module`` (parameters for tests)."""
    try:
        fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return KvmProbe(False, f"{dev} does not exist")
    except OSError as exc:
        return KvmProbe(False, f"{dev} cannot be opened read-write: {exc.strerror}")
    try:
        providers = [name for name in _PROVIDERS if (sys_module / name).exists()]
        if not providers:
            if (sys_module / "kvm_pvm").exists():
                return KvmProbe(False, f"{dev} is nested PVM (kvm_pvm), which hangs stock guest kernels")
            return KvmProbe(False, f"no hardware KVM provider ({' or '.join(_PROVIDERS)}) is loaded")
        try:
            version = fcntl.ioctl(fd, KVM_GET_API_VERSION)
        except OSError as exc:
            return KvmProbe(False, f"{dev} does not answer KVM_GET_API_VERSION: {exc.strerror}")
        if version != KVM_API_VERSION:
            return KvmProbe(False, f"{dev} speaks KVM API {version}, not {KVM_API_VERSION}")
        return KvmProbe(True, f"{dev} is hardware KVM ({providers[0]})")
    finally:
        os.close(fd)
