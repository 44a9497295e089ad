"""The QEMU backend: each sandbox is a ``qemu-system-x86_64 -M microvm`` VM.

``runtime`` is the backend (``QemuRuntime``, QEMU's hooks on ``hosts.vm.runtime.VmRuntime``),
``config`` its settings, ``launcher`` the QEMU command line, ``qmp`` our QMP client. Everything
shared with the Cloud Hypervisor backend is in ``hosts/vm/``. See docs/runtimes.md ("QEMU
microvm backend").
"""

from hosts.runtime.qemu.config import QemuConfig
from hosts.runtime.qemu.runtime import QemuRuntime

__all__ = ["QemuConfig", "QemuRuntime"]
