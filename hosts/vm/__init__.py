"""Host-side pieces shared by the microVM backends (QEMU, Cloud Hypervisor).

The guest image every VM boots (see docs/runtimes.md, "Guest image"): ``images`` builds and
caches it from a template, with ``kernel``, ``vmlinux``, ``initramfs`` and ``rootfs`` as its
parts. ``control`` and ``identity`` talk to the guest's init (``guest/vminit.py``) on
``contracts.vm.CONTROL_PORT``. ``network``, ``disk`` and ``cgroup`` are the per-sandbox
plumbing around a VMM process: its network namespace and TAP, its copy-on-write disk, its
cgroup; ``process`` starts, adopts and watches that process, ``layout`` is the sandbox's
directory and records, ``snapshot`` its host-local snapshots. ``runtime`` (``VmRuntime``) is
the backend built on all of it, which each VMM (``hosts/runtime/qemu``,
``hosts/runtime/cloud_hypervisor``) completes with a few hooks; ``config`` its settings.
"""
