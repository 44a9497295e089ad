"""The OCI runtime spec (``config.json``) of one sandbox.

Everything a sandbox is, apart from its network interface and its disk's contents, is in
this one document, which runc applies: namespaces (mount, PID, UTS, IPC, cgroup and user
created for it; the network namespace hostd prepared joined by path), the uid/gid mapping of
the user namespace, the mounts, the capability bounding set, the seccomp filter, the masked
and read-only paths, and the cgroup with its limits. docs/runtime.md ("OCI runtime")
explains each choice; the reasons are repeated here only where the code would look wrong
without them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hosts.runtime.oci import seccomp

ID_COUNT = 65536
"""Sandbox uids and gids 0..65535 map to host ids ``uid_base .. uid_base + 65535``."""
AGENT_UID = 1000
"""``daytona``, the template's default user, whom the agent and every command run as."""
SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SANDBOX_HOME = "/home/daytona"
GUEST_ROOT = "/opt/dnah"
AGENT_SOCKET = "/run/dnah/agent.sock"
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
CA_BUNDLE_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS")
CPU_PERIOD_US = 100_000
"""The CFS period; a sandbox with ``cpu`` CPUs gets ``cpu`` × this much runtime per period."""

BOUNDING_CAPS = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)
"""The most any sandbox process (root via sudo included) can ever hold: Docker's default
set without CAP_NET_RAW (raw sockets must fail) and CAP_MKNOD (no device nodes). The agent
itself starts with none of them effective; sudo's root gets these, and only over what its
user namespace owns."""

MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
"""Hidden (an empty file or directory is mounted over them), as runc's and Docker's defaults."""
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")


@dataclass(frozen=True, kw_only=True)
class Limits:
    cpu: int
    ram_mb: int
    pids: int


@dataclass(frozen=True, kw_only=True)
class Bundle:
    """What the spec of one boot depends on."""

    hostname: str
    rootfs: Path
    """The sandbox's disk (a pool subvolume owned by the shifted ids)."""
    uid_base: int
    netns: Path
    cgroups_path: str
    limits: Limits
    guest_dir: Path
    run_dir: Path
    """Bound at /run/dnah: the agent's socket directory, owned by the shifted ``daytona``."""
    resolv_conf: Path
    hosts: Path
    """Bound read-only at /etc/hosts: localhost and the hostname (sudo resolves it)."""
    sysfs: Path
    """A sysfs of the sandbox's network namespace, mounted on the host (see ``sysfs``)."""
    env: dict[str, str] = field(default_factory=dict)
    trust_bundle: Path | None = None
    """For a sandbox with secrets: the CA bundle bound read-only over the system's, holding the
    sandbox's egress CA too (``hosts/egress/service.py``, docs/network.md "Secrets")."""

    def spec(self) -> dict[str, Any]:
        return {
            "ociVersion": "1.0.2",
            "hostname": self.hostname,
            "root": {"path": str(self.rootfs), "readonly": False},
            "process": self._process(),
            "mounts": self._mounts(),
            "linux": {
                "uidMappings": [{"containerID": 0, "hostID": self.uid_base, "size": ID_COUNT}],
                "gidMappings": [{"containerID": 0, "hostID": self.uid_base, "size": ID_COUNT}],
                "namespaces": [
                    {"type": "pid"},
                    {"type": "ipc"},
                    {"type": "uts"},
                    {"type": "mount"},
                    {"type": "cgroup"},
                    {"type": "user"},
                    {"type": "network", "path": str(self.netns)},
                ],
                "cgroupsPath": self.cgroups_path,
                "resources": resources(self.limits),
                "seccomp": seccomp.profile(),
                "maskedPaths": list(MASKED_PATHS),
                "readonlyPaths": list(READONLY_PATHS),
            },
        }

    def write(self, directory: Path) -> Path:
        """Write ``config.json`` into ``directory`` (atomically); return its path."""
        path = directory / "config.json"
        tmp = directory / "config.json.tmp"
        tmp.write_text(json.dumps(self.spec(), indent=1))
        os.replace(tmp, path)
        return path

    def _process(self) -> dict[str, Any]:
        """The agent as PID 1, as ``daytona`` with no effective capability.

        The sandbox's environment is a minimal base, then the spec's variables, then the
        agent's module path (the agent drops PYTHONPATH from what commands inherit).
        ``noNewPrivileges`` is off so that ``sudo`` (setuid) works: see docs/runtime.md.
        """
        env = {"PATH": SANDBOX_PATH, "HOME": SANDBOX_HOME, "LANG": "C.UTF-8"}
        if self.trust_bundle is not None:
            # Python's requests and Node carry CA lists of their own: point them at the system's.
            env |= {name: SYSTEM_CA_BUNDLE for name in CA_BUNDLE_VARIABLES}
        env |= self.env
        env["PYTHONPATH"] = GUEST_ROOT
        return {
            "terminal": False,
            "user": {"uid": AGENT_UID, "gid": AGENT_UID, "additionalGids": [AGENT_UID]},
            "args": ["/usr/bin/python3", "-S", "-m", "guest.agent", "--uds", AGENT_SOCKET, "--init"],
            "env": [f"{name}={value}" for name, value in env.items()],
            "cwd": SANDBOX_HOME,
            "capabilities": {
                "bounding": list(BOUNDING_CAPS),
                "effective": [],
                "permitted": [],
                "inheritable": [],
                "ambient": [],
            },
            "noNewPrivileges": False,
            "oomScoreAdj": 500,
        }

    def _mounts(self) -> list[dict[str, Any]]:
        plain = ["nosuid", "nodev", "noexec"]
        return [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": plain},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/dev/pts",
                "type": "devpts",
                "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
            },
            {
                "destination": "/dev/shm",
                "type": "tmpfs",
                "source": "shm",
                "options": ["nosuid", "nodev", "mode=1777", "size=65536k"],
            },
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": plain},
            _bind("/sys", self.sysfs, "ro", *plain),
            {
                "destination": "/sys/fs/cgroup",
                "type": "cgroup",
                "source": "cgroup",
                "options": ["ro", *plain],
            },
            # /opt/dnah is on the disk, which the sandbox's root may change (a symlink in place
            # of guest/): a fresh tmpfs there means the agent's code is always the host's copy.
            {
                "destination": GUEST_ROOT,
                "type": "tmpfs",
                "source": "dnah",
                "options": ["nosuid", "nodev", "mode=755", "size=16k"],
            },
            _bind(f"{GUEST_ROOT}/guest", self.guest_dir, "ro", "nosuid", "nodev"),
            _bind("/run/dnah", self.run_dir, *plain),
            _bind("/etc/hosts", self.hosts, "ro", *plain),
            _bind("/etc/resolv.conf", self.resolv_conf, "ro", *plain),
            *([_bind(SYSTEM_CA_BUNDLE, self.trust_bundle, "ro", *plain)] if self.trust_bundle else []),
        ]


def _bind(destination: str, source: Path, *options: str) -> dict[str, Any]:
    return {"destination": destination, "type": "bind", "source": str(source), "options": ["bind", *options]}


def resources(limits: Limits) -> dict[str, Any]:
    """The cgroup limits: CPU quota, memory without swap (memory+swap = memory), pids; only the
    default devices (runc adds null, zero, full, tty, random, urandom and the ptys)."""
    ram = limits.ram_mb * 2**20
    return {
        "cpu": {"quota": limits.cpu * CPU_PERIOD_US, "period": CPU_PERIOD_US},
        "memory": {"limit": ram, "swap": ram},
        "pids": {"limit": limits.pids},
        "devices": [{"allow": False, "access": "rwm"}],
    }
