"""hostd's settings: read from the environment once, at start-up, and validated there.

This is the only module in ``hosts/`` that reads ``os.environ``. ``load_config`` turns the
``DNAH_*`` variables into one frozen ``HostdConfig`` that is passed down explicitly, so a typo
or a nonsensical value stops hostd before it touches the network or the kernel, with a message
naming the variable, instead of surfacing later as an obscure runtime failure.

Capacity (``cpu``, ``ram_mb``, ``disk_gb``) is what hostd offers the scheduler; left unset it
is taken from the machine (all CPUs, all memory, the free space under the var dir).
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import shutil
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import msgspec

from guard import ConfigError as GuardConfigError
from guard import GuardConfig, load_guard_config
from hosts.runtime.kvm import KvmProbe, probe_kvm

REPO_DIR = Path(__file__).resolve().parent.parent
GUEST_DIR = REPO_DIR / "guest"
"""The guest agent's source, mounted read-only into every sandbox (not imported by hostd)."""
BUILD_SCRIPT = REPO_DIR / "install" / "build-template.sh"

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3200
DEFAULT_CORE_URL = "http://127.0.0.1:3100"
DEFAULT_VAR_DIR = "./var"
DEFAULT_TEMPLATE_CACHE = "/var/cache/dnah/templates"
DEFAULT_BRIDGE = "dnah0"
DEFAULT_SUBNET = "10.213.0.0/16"
DEFAULT_CGROUP = "dnah"
DEFAULT_HEARTBEAT_S = 10.0
RUNTIMES = ("auto", "oci", "qemu", "cloud-hypervisor", "fake")
"""``DNAH_HOST_RUNTIME``: ``oci`` runs sandboxes as runc containers, ``qemu`` and
``cloud-hypervisor`` as microVMs; ``auto`` (the default) picks one of those three from the
machine (``_select_runtime``); ``fake`` isolates nothing and is for tests only
(``hosts/runtime/fake``), so it is never picked by ``auto``."""
VM_RUNTIMES = ("qemu", "cloud-hypervisor")
VM_ACCELS = ("auto", "kvm", "tcg")
"""``DNAH_VM_ACCEL``: ``kvm`` when ``hosts/runtime/kvm.py`` finds usable KVM (``auto``), else
``tcg`` (QEMU's software emulation). Naming ``kvm`` overrides the probe, naming ``tcg`` refuses
KVM even where it works; either way ``auto`` runtime selection follows the result."""
DEFAULT_QEMU_BINARY = "qemu-system-x86_64"
QEMU_CHANNELS = ("auto", "serial", "vsock")
"""``DNAH_QEMU_CHANNEL``: the QEMU guests' agent channel, a virtio-serial port (``serial``) or a
vhost-vsock device (``vsock``); ``auto`` takes vsock where ``/dev/vhost-vsock`` is usable
(resolved by ``QemuConfig.from_hostd``, see ``hosts/runtime/qemu/channel.py``)."""
DEFAULT_CLOUD_HYPERVISOR_BINARY = "cloud-hypervisor"
DEFAULT_VM_IMAGE_CACHE = "/var/cache/dnah/vm"
DEFAULT_VM_BOOT_TIMEOUT_S = 90.0
"""Generous: a TCG boot on a loaded 2-core machine can take tens of seconds."""
EGRESS = ("nat", "none")
"""``DNAH_SANDBOX_EGRESS``: ``nat`` lets sandboxes reach networks beyond the host through NAT
(never the host itself or each other); ``none`` keeps them inside their own network namespace
(what the test suite and benchmarks use, so nothing a test runs can leave the machine)."""
EGRESS_MODES = ("allow", "deny")
"""``DNAH_EGRESS_DEFAULT``: what a sandbox without a policy of its own may reach beyond the
always-denied addresses: everything (``allow``, the default) or nothing (``deny``)."""
DEFAULT_EGRESS_DENY_CIDRS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
"""``DNAH_EGRESS_DENY_CIDRS`` (comma-separated, ``none`` for no extra network): networks no
sandbox may reach whatever its policy; by default the private and carrier-grade NAT ranges,
where an operator's own services live."""
DEFAULT_EGRESS_PROXY_PORT = 3280
DEFAULT_EGRESS_DNS_PORT = 3253
DEFAULT_POOL_SIZE_GB = 32
DEFAULT_SANDBOX_UID_BASE = 1_000_000
SANDBOX_ID_COUNT = 65536
"""Container ids 0..65535 of every sandbox map to host ids ``uid_base .. uid_base + 65535``."""
_MAX_ID = 2**32 - 2
"""The largest usable uid/gid: ``2**32 - 1`` is ``(uid_t) -1``, "no change", to chown."""

_IFNAMSIZ = 15
"""Longest Linux interface name; the bridge and the veths derived from it must fit."""
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
_LOG_FORMATS = ("json", "console")

T = TypeVar("T")


class ConfigError(ValueError):
    """A ``DNAH_*`` variable is missing or invalid; the message names it."""


class HostdConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Everything hostd needs to know about its environment, fixed for the process lifetime."""

    host: str
    port: int
    """Where the core reaches hostd. granian binds from its own command line, so whoever
    starts hostd passes the same address there (``cli/stack.py`` does)."""
    core_url: str
    bootstrap_token: str
    """Proves to the core, at registration, that this host belongs to the cluster."""
    host_name: str
    var_dir: Path
    template_cache: Path
    bridge: str
    subnet: ipaddress.IPv4Network
    cgroup: str
    cpu: int
    ram_mb: int
    disk_gb: int
    api_token: str
    """Bearer token for hostd's own API; handed to the core at registration."""
    heartbeat_s: float
    """Heartbeat interval used only when the core's registration answer gives none (≤ 0)."""
    log_format: str | None
    guest_dir: Path
    build_script: Path
    prepare_templates: tuple[str, ...]
    """Templates hostd readies for fast creates right after it starts, in the background
    (``DNAH_PREPARE_TEMPLATES``: comma-separated names, or ``all`` for every built one;
    default none, ``dnah up`` says ``all``). Otherwise the first create from a template pays
    for it: the OCI runtime copies the template into the storage pool (about 15 s for
    code-interpreter-v1's 1.4 GiB), a VM runtime builds its guest image."""
    snapshot_dir: Path
    """The snapshot store (``DNAH_SNAPSHOT_DIR``). The OCI runtime's snapshots are btrfs
    snapshots of the disks, and the VM runtimes' disk copies are reflinks within the pool, so
    for every real runtime the store must be inside the storage pool: default
    ``<pool>/snapshots``, and a directory outside the pool is refused. The fake runtime's
    default is ``<var dir>/snapshots``."""
    archive_dir: Path
    """The archive store (``DNAH_ARCHIVE_DIR``, default ``<var dir>/archives``)."""
    pool_dir: Path | None
    """An operator-provided directory on btrfs that holds the storage pool (``DNAH_POOL_DIR``);
    unset means hostd keeps the pool in a loop-mounted image file (the next three fields)."""
    pool_image: Path
    """The pool's image file (``DNAH_POOL_IMAGE``, default ``<state dir>/pool.img``), sparse,
    created and formatted on first start."""
    pool_size_gb: int
    """The image's size (``DNAH_POOL_SIZE_GB``, default 32); sparse, so it costs only what is
    written. Applies when the image is created; an existing image keeps its size."""
    pool_mount: Path
    """Where the image is mounted (``DNAH_POOL_MOUNT``, default ``<state dir>/pool``)."""
    sandbox_uid_base: int
    """The host uid (and gid) of root inside sandboxes (``DNAH_SANDBOX_UID_BASE``, default
    1000000): sandbox ids 0..65535 are host ids ``base .. base + 65535``, which must not be
    host accounts' ids (so the base is at least 65536)."""
    runtime: str = "oci"
    """The runtime backend hostd runs: ``DNAH_HOST_RUNTIME`` with ``auto`` already resolved,
    so one of ``oci``, ``qemu``, ``cloud-hypervisor``, ``fake``."""
    runtime_reason: str = "DNAH_HOST_RUNTIME=oci"
    """Why ``runtime`` was chosen, for the start-up log (the probe's findings under ``auto``)."""
    vm_accel: str = "tcg"
    """The VM runtimes' accelerator (``DNAH_VM_ACCEL`` resolved): ``kvm`` or ``tcg``."""
    qemu_binary: str = DEFAULT_QEMU_BINARY
    """``DNAH_QEMU_BINARY``: the QEMU system emulator, a name on PATH or a path."""
    qemu_channel: str = "auto"
    """``DNAH_QEMU_CHANNEL``, one of ``QEMU_CHANNELS`` (``auto`` is resolved by the QEMU backend)."""
    cloud_hypervisor_binary: str = DEFAULT_CLOUD_HYPERVISOR_BINARY
    """``DNAH_CLOUD_HYPERVISOR_BINARY``: the Cloud Hypervisor VMM, a name on PATH or a path."""
    vm_image_cache: Path = Path(DEFAULT_VM_IMAGE_CACHE)
    """``DNAH_VM_IMAGE_CACHE``: where guest images (kernel, initramfs, rootfs) are built and kept."""
    vm_boot_timeout_s: float = DEFAULT_VM_BOOT_TIMEOUT_S
    """``DNAH_VM_BOOT_TIMEOUT`` (seconds): how long a VM may take from launch to its agent's
    first answer before the create fails."""
    egress: str = "nat"
    """Where sandboxes may connect (``DNAH_SANDBOX_EGRESS``, one of ``EGRESS``)."""
    egress_default: str = "allow"
    """``DNAH_EGRESS_DEFAULT``, one of ``EGRESS_MODES``: the policy of sandboxes without one."""
    egress_deny_cidrs: tuple[str, ...] = DEFAULT_EGRESS_DENY_CIDRS
    """``DNAH_EGRESS_DENY_CIDRS``: networks always denied, besides link-local and loopback."""
    dns_upstream: str = ""
    """``DNAH_DNS_UPSTREAM`` (``host`` or ``host:port``): where hostd's resolver for sandboxes
    sends their questions, and where its egress proxy resolves names; default the first
    nameserver of the host's /etc/resolv.conf (empty if it has none: every lookup fails)."""
    egress_ca_bundle: Path | None = None
    """``DNAH_EGRESS_CA_BUNDLE``: the only CAs the egress proxy trusts when it talks TLS to a
    secret's host (default: the host's trust store)."""
    egress_proxy_port: int = DEFAULT_EGRESS_PROXY_PORT
    """``DNAH_EGRESS_PROXY_PORT``: the egress proxy's port on the bridge's gateway address."""
    egress_dns_port: int = DEFAULT_EGRESS_DNS_PORT
    """``DNAH_EGRESS_DNS_PORT``: the resolver's port (UDP and TCP) on the gateway address; nft
    redirects the sandboxes' port 53 there."""
    advertise_url: str | None = None
    """The URL the core should use to reach hostd (``DNAH_HOSTD_ADVERTISE_URL``), when it is
    not ``http://host:port`` — hostd bound to 0.0.0.0, behind NAT, or on another name."""
    http: GuardConfig = GuardConfig(max_per_client=256)
    """Limits on hostd's caller (``DNAH_HTTP_*`` / ``DNAH_HOSTD_HTTP_*``, see ``guard.config``)."""

    @property
    def state_dir(self) -> Path:
        """Where hostd keeps its own state (sandbox disks, sockets, runtime records)."""
        return self.var_dir / "hostd"

    @property
    def api_url(self) -> str:
        """The URL the core uses to reach this hostd: the advertised one, else the bound one
        (a wildcard bind cannot be reached at its own address, so it needs an advertised URL)."""
        return self.advertise_url or f"http://{self.host}:{self.port}"


def load_config(
    environ: Mapping[str, str] = os.environ,
    *,
    kvm: Callable[[], KvmProbe] = probe_kvm,
    which: Callable[[str], str | None] = shutil.which,
) -> HostdConfig:
    """Build and validate the configuration from ``environ``. ``kvm`` and ``which`` are the
    machine probes behind ``auto`` (parameters so tests can play other machines).

    Raises:
        ConfigError: a variable is missing or malformed.
    """
    env = _Env(environ)
    var_dir = Path(env.text("DNAH_VAR_DIR", DEFAULT_VAR_DIR)).absolute()
    state_dir = var_dir / "hostd"
    pool_dir = env.text("DNAH_POOL_DIR", "")
    pool_mount = Path(env.text("DNAH_POOL_MOUNT", str(state_dir / "pool"))).absolute()
    pool_root = Path(pool_dir).absolute() if pool_dir else pool_mount
    qemu_binary = env.text("DNAH_QEMU_BINARY", DEFAULT_QEMU_BINARY)
    ch_binary = env.text("DNAH_CLOUD_HYPERVISOR_BINARY", DEFAULT_CLOUD_HYPERVISOR_BINARY)
    vm_accel, accel_reason = _vm_accel(env.parse("DNAH_VM_ACCEL", _choice(VM_ACCELS), "auto"), kvm)
    requested = env.parse("DNAH_HOST_RUNTIME", _choice(RUNTIMES), "auto")
    if requested == "auto":
        runtime, reason = _select_runtime(vm_accel, accel_reason, qemu_binary, ch_binary, which)
    else:
        runtime, reason = requested, f"DNAH_HOST_RUNTIME={requested}"
    default_snapshots = var_dir / "snapshots" if runtime == "fake" else pool_root / "snapshots"
    snapshot_dir = Path(env.text("DNAH_SNAPSHOT_DIR", str(default_snapshots))).absolute()
    if runtime != "fake":
        _check_in_pool(snapshot_dir, pool_root)
    return HostdConfig(
        host=env.text("DNAH_HOSTD_HOST", DEFAULT_HOST),
        port=env.parse("DNAH_HOSTD_PORT", _port, DEFAULT_PORT),
        core_url=env.parse("DNAH_CORE_URL", _http_url, DEFAULT_CORE_URL),
        bootstrap_token=env.required("DNAH_BOOTSTRAP_TOKEN"),
        host_name=env.parse("DNAH_HOST_NAME", _name, socket.gethostname()),
        var_dir=var_dir,
        template_cache=Path(env.text("DNAH_TEMPLATE_CACHE", DEFAULT_TEMPLATE_CACHE)).absolute(),
        bridge=env.parse("DNAH_HOST_BRIDGE", _ifname, DEFAULT_BRIDGE),
        subnet=env.parse("DNAH_HOST_SUBNET", _subnet, _subnet(DEFAULT_SUBNET)),
        cgroup=env.parse("DNAH_HOST_CGROUP", _name, DEFAULT_CGROUP),
        cpu=env.parse("DNAH_HOST_CPU", _positive_int, os.cpu_count() or 1),
        ram_mb=env.parse("DNAH_HOST_RAM_MB", _positive_int, _machine_ram_mb()),
        disk_gb=env.parse("DNAH_HOST_DISK_GB", _positive_int, _free_disk_gb(var_dir)),
        api_token=env.parse("DNAH_HOSTD_TOKEN", _token, secrets.token_urlsafe(32)),
        heartbeat_s=env.parse("DNAH_HEARTBEAT_S", _positive_float, DEFAULT_HEARTBEAT_S),
        log_format=env.parse("DNAH_LOG_FORMAT", _choice(_LOG_FORMATS), None),
        guest_dir=GUEST_DIR,
        build_script=BUILD_SCRIPT,
        prepare_templates=tuple(
            name.strip() for name in env.text("DNAH_PREPARE_TEMPLATES", "").split(",") if name.strip()
        ),
        snapshot_dir=snapshot_dir,
        archive_dir=Path(env.text("DNAH_ARCHIVE_DIR", str(var_dir / "archives"))).absolute(),
        pool_dir=Path(pool_dir).absolute() if pool_dir else None,
        pool_image=Path(env.text("DNAH_POOL_IMAGE", str(state_dir / "pool.img"))).absolute(),
        pool_size_gb=env.parse("DNAH_POOL_SIZE_GB", _positive_int, DEFAULT_POOL_SIZE_GB),
        pool_mount=pool_mount,
        sandbox_uid_base=env.parse("DNAH_SANDBOX_UID_BASE", _uid_base, DEFAULT_SANDBOX_UID_BASE),
        runtime=runtime,
        runtime_reason=reason,
        vm_accel=vm_accel,
        qemu_binary=qemu_binary,
        qemu_channel=env.parse("DNAH_QEMU_CHANNEL", _choice(QEMU_CHANNELS), "auto"),
        cloud_hypervisor_binary=ch_binary,
        vm_image_cache=Path(env.text("DNAH_VM_IMAGE_CACHE", DEFAULT_VM_IMAGE_CACHE)).absolute(),
        vm_boot_timeout_s=env.parse("DNAH_VM_BOOT_TIMEOUT", _positive_float, DEFAULT_VM_BOOT_TIMEOUT_S),
        egress=env.parse("DNAH_SANDBOX_EGRESS", _choice(EGRESS), "nat"),
        egress_default=env.parse("DNAH_EGRESS_DEFAULT", _choice(EGRESS_MODES), "allow"),
        egress_deny_cidrs=env.parse("DNAH_EGRESS_DENY_CIDRS", _cidrs, DEFAULT_EGRESS_DENY_CIDRS),
        dns_upstream=env.parse("DNAH_DNS_UPSTREAM", _dns_server, "") or _host_nameserver(),
        egress_ca_bundle=env.parse("DNAH_EGRESS_CA_BUNDLE", _existing_file, None),
        egress_proxy_port=env.parse("DNAH_EGRESS_PROXY_PORT", _port, DEFAULT_EGRESS_PROXY_PORT),
        egress_dns_port=env.parse("DNAH_EGRESS_DNS_PORT", _port, DEFAULT_EGRESS_DNS_PORT),
        advertise_url=_advertise_url(env, env.text("DNAH_HOSTD_HOST", DEFAULT_HOST)),
        http=_http(environ),
    )


def _http(environ: Mapping[str, str]) -> GuardConfig:
    try:
        return load_guard_config(environ, "hostd")
    except GuardConfigError as exc:
        raise ConfigError(str(exc)) from None


def _advertise_url(env: _Env, host: str) -> str | None:
    url = env.parse("DNAH_HOSTD_ADVERTISE_URL", _http_url, "") or None
    if url is None and host in ("0.0.0.0", "::"):
        raise ConfigError(
            f"DNAH_HOSTD_HOST={host} binds every address, which the core cannot reach as such: "
            "set DNAH_HOSTD_ADVERTISE_URL to the URL the core should use"
        )
    return url.rstrip("/") if url else None


def _vm_accel(requested: str, kvm: Callable[[], KvmProbe]) -> tuple[str, str]:
    """``DNAH_VM_ACCEL`` resolved to ``kvm`` or ``tcg``, with the reason in words."""
    if requested != "auto":
        return requested, f"DNAH_VM_ACCEL={requested}"
    probe = kvm()
    return ("kvm" if probe.usable else "tcg"), probe.reason


def _select_runtime(
    accel: str, accel_reason: str, qemu: str, cloud_hypervisor: str, which: Callable[[str], str | None]
) -> tuple[str, str]:
    """``DNAH_HOST_RUNTIME=auto``: Cloud Hypervisor when its binary and usable KVM exist, else
    QEMU when usable KVM and its binary exist, else OCI. Neither VMM is picked for TCG: a
    software-emulated sandbox is far slower than a container, so that takes naming it."""
    if accel != "kvm":
        return "oci", f"auto: no usable KVM ({accel_reason}), so containers"
    if which(cloud_hypervisor):
        return "cloud-hypervisor", f"auto: usable KVM ({accel_reason}) and {cloud_hypervisor} found"
    if which(qemu):
        return "qemu", f"auto: usable KVM ({accel_reason}), {qemu} found, {cloud_hypervisor} not"
    return "oci", f"auto: usable KVM ({accel_reason}) but neither {cloud_hypervisor} nor {qemu} found"


def _check_in_pool(snapshot_dir: Path, pool_root: Path) -> None:
    """Host-local snapshots are btrfs snapshots (OCI) or reflinked copies (VMs) of the disks:
    the store must be a directory of its own inside the pool (not the pool's root, nor its
    templates, disks or staging area)."""
    real, root = Path(os.path.realpath(snapshot_dir)), Path(os.path.realpath(pool_root))
    reserved = [root / name for name in ("templates", "disks", ".staging")]
    if real == root or not real.is_relative_to(root) or any(real.is_relative_to(r) for r in reserved):
        raise ConfigError(
            f"DNAH_SNAPSHOT_DIR={snapshot_dir} is not a directory of its own inside the storage pool "
            f"{pool_root}: the runtime's snapshots are btrfs snapshots or reflinks of the sandboxes' "
            f"disks, so they must be on the pool's filesystem (leave it unset for {pool_root / 'snapshots'})"
        )


class _Env:
    """Reads variables, treating empty as unset and prefixing parse errors with the name."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def text(self, name: str, default: str) -> str:
        return self._environ.get(name) or default

    def required(self, name: str) -> str:
        value = self._environ.get(name)
        if not value:
            raise ConfigError(f"{name} is required")
        return value

    def parse(self, name: str, parse: Callable[[str], T], default: T) -> T:
        raw = self._environ.get(name)
        if not raw:
            return default
        try:
            return parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{name}={raw!r}: {exc}") from None


def _port(raw: str) -> int:
    port = int(raw)
    if not 1 <= port <= 65535:
        raise ValueError("must be a TCP port (1-65535)")
    return port


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("must be a positive number")
    return value


def _http_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    return raw.rstrip("/")


def _name(raw: str) -> str:
    if not _NAME_RE.fullmatch(raw):
        raise ValueError("may only contain letters, digits, '.', '_' and '-'")
    return raw


def _ifname(raw: str) -> str:
    _name(raw)
    if len(raw) > _IFNAMSIZ:
        raise ValueError(f"interface names are at most {_IFNAMSIZ} characters")
    return raw


def _subnet(raw: str) -> ipaddress.IPv4Network:
    subnet = ipaddress.IPv4Network(raw)
    if subnet.prefixlen > 30:
        raise ValueError("needs room for a gateway and sandboxes (prefix /30 or shorter)")
    return subnet


def _token(raw: str) -> str:
    if len(raw) < 16:
        raise ValueError("must be at least 16 characters")
    return raw


def _uid_base(raw: str) -> int:
    base = int(raw)
    if not SANDBOX_ID_COUNT <= base <= _MAX_ID - (SANDBOX_ID_COUNT - 1):
        raise ValueError(
            f"must leave host ids below {SANDBOX_ID_COUNT} to the host and fit {SANDBOX_ID_COUNT} ids "
            f"below {_MAX_ID + 1} ({SANDBOX_ID_COUNT}..{_MAX_ID - SANDBOX_ID_COUNT + 1})"
        )
    return base


def _cidrs(raw: str) -> tuple[str, ...]:
    if raw.strip() == "none":
        return ()
    networks = tuple(part.strip() for part in raw.split(",") if part.strip())
    for network in networks:
        ipaddress.ip_network(network, strict=False)
    return networks


def _dns_server(raw: str) -> str:
    """``host`` or ``host:port`` (an IP address; IPv6 as ``[addr]:port``)."""
    host, port = _split_server(raw)
    ipaddress.ip_address(host)
    _port(str(port))
    return raw


def _split_server(raw: str) -> tuple[str, int]:
    if raw.startswith("["):
        host, _, rest = raw[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else 53
    if raw.count(":") == 1:
        host, port = raw.split(":")
        return host, int(port)
    return raw, 53


def dns_server(config: HostdConfig) -> tuple[str, int] | None:
    """``dns_upstream`` as (address, port); None when there is none."""
    return _split_server(config.dns_upstream) if config.dns_upstream else None


def _host_nameserver(resolv_conf: Path = Path("/etc/resolv.conf")) -> str:
    try:
        lines = resolv_conf.read_text().splitlines()
    except OSError:
        return ""
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            try:
                ipaddress.ip_address(fields[1])
            except ValueError:
                continue
            return f"[{fields[1]}]:53" if ":" in fields[1] else fields[1]
    return ""


def _existing_file(raw: str) -> Path:
    path = Path(raw).absolute()
    if not path.is_file():
        raise ValueError("must name an existing file")
    return path


def _choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return raw

    return parse


def _machine_ram_mb() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise ConfigError("cannot read MemTotal from /proc/meminfo; set DNAH_HOST_RAM_MB")


def _free_disk_gb(var_dir: Path) -> int:
    """Free space of the filesystem that will hold ``var_dir`` (which may not exist yet)."""
    existing = next(p for p in (var_dir, *var_dir.parents) if p.exists())
    return max(1, shutil.disk_usage(existing).free // 2**30)
