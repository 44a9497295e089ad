"""hostd's egress service: the policies of the sandboxes on this host, applied to the nft
table, the resolver and the proxy (``hosts/egress/*``; docs/network.md, "Egress").

Which policy a sandbox has: the last ``PUT /sandboxes/{id}/egress`` since its last boot, else
its ``SandboxSpec.egress`` (the spec the runtime keeps with the sandbox, as it was created or
last started with), else the operator's default. A ``PUT`` is kept on disk
(``<state>/egress/<id>/policy.json``), so a restarted hostd still applies it; the next create
or start brings a new spec, whose policy wins. ``sync`` rebuilds every set from the runtime's
inventory, keyed by the sandboxes' current addresses, after every lifecycle command: a
sandbox's address changes with its boots, and an address hostd holds no policy for is dropped
(fail closed).

Only the OCI and VM runtimes with NAT egress run it (``enabled``); with
``DNAH_SANDBOX_EGRESS=none`` nothing leaves the bridge anyway.
"""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
import ssl
from pathlib import Path

import msgspec
import structlog

from contracts.host import EgressPolicy, SandboxSpec
from hosts.config import HostdConfig, dns_server
from hosts.egress.ca import SandboxCa
from hosts.egress.nft import EgressTable, Member
from hosts.egress.policy import ALWAYS_DENIED, IPNetwork, Rules
from hosts.egress.proxy import Proxy, Tenant, upstream_context
from hosts.egress.resolver import Resolver, Upstream
from hosts.errors import HostError
from hosts.runtime._network import Network
from hosts.runtime.base import SandboxRuntime

log = structlog.get_logger("hosts.egress")

TRUST_BUNDLE = "ca-certificates.crt"
HOST_BUNDLES = (
    Path("/etc/ssl/certs/ca-certificates.crt"),
    Path("/etc/pki/tls/certs/ca-bundle.crt"),
    Path(ssl.get_default_verify_paths().openssl_cafile),
)
"""Where hosts keep the system's CA bundle (Debian and Ubuntu, Fedora and RHEL, OpenSSL's
default); the first that exists is the sandboxes' base list."""


def enabled(config: HostdConfig) -> bool:
    return config.egress == "nat" and config.runtime != "fake"


def never(config: HostdConfig) -> list[IPNetwork]:
    """The always-denied networks: ``ALWAYS_DENIED``, the operator's and the sandbox subnet."""
    cidrs = (*ALWAYS_DENIED, *config.egress_deny_cidrs, str(config.subnet))
    return [ipaddress.ip_network(c, strict=False) for c in cidrs]


class Egress:
    def __init__(self, config: HostdConfig) -> None:
        self.config = config
        self.gateway = str(config.subnet.network_address + 1)
        self.directory = config.state_dir / "egress"
        self._never = never(config)
        self._default = EgressPolicy(mode="allow" if config.egress_default == "allow" else "deny")
        self._network = Network(config.bridge, config.subnet)
        """For names only: the veth of each address (the runtime owns the interfaces)."""
        self._table = EgressTable(
            config.bridge,
            self._network.veth_prefix,
            config.egress_dns_port,
            config.egress_proxy_port,
            self._never,
        )
        server = dns_server(config)
        self._upstream = Upstream(*server) if server else Upstream("0.0.0.0", 0, timeout=0.1)
        self._tenants: dict[str, Tenant] = {}
        self._cas: dict[str, SandboxCa] = {}
        self._resolver = Resolver(self._upstream, self._rules_for)
        tls = upstream_context(str(config.egress_ca_bundle) if config.egress_ca_bundle else None)
        self._proxy = Proxy(self._upstream, self._tenants.get, self._never, tls)
        self._lock = asyncio.Lock()
        self._runtime: SandboxRuntime | None = None

    @property
    def resolv_conf(self) -> Path:
        """The sandboxes' /etc/resolv.conf: the gateway, where the resolver answers."""
        path = self.directory / "resolv.conf"
        if not path.exists():
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            path.write_text(f"nameserver {self.gateway}\noptions timeout:2 attempts:2\n")
            path.chmod(0o644)
        return path

    async def start(self, runtime: SandboxRuntime) -> None:
        """Load the table (empty sets: every sandbox is dropped until ``sync``), start the
        resolver and the proxy, and apply what the runtime holds."""
        self._runtime = runtime
        await asyncio.to_thread(self._table.create, [])
        await self._resolver.start(self.gateway, self.config.egress_dns_port)
        await self._proxy.start(self.gateway, self.config.egress_proxy_port)
        await self.sync()
        log.info(
            "egress ready",
            gateway=self.gateway,
            default=self._default.mode,
            upstream=self.config.dns_upstream,
        )

    async def close(self) -> None:
        """Stop the resolver and the proxy; the table stays, so the running sandboxes' rules
        hold while hostd is away (a restarted hostd reloads it)."""
        await self._proxy.close()
        await self._resolver.close()

    async def set_policy(self, sandbox_id: str, policy: EgressPolicy | None) -> None:
        """Apply ``policy`` (None: the operator's default) to the sandbox now and keep it for
        its recovery."""
        path = self._policy_path(sandbox_id)
        await asyncio.to_thread(_write, path, msgspec.json.encode(policy))
        await self.sync()

    async def booted(self, spec: SandboxSpec) -> None:
        """A create or start with ``spec``: its policy replaces one ``PUT`` before."""
        self._policy_path(spec.id).unlink(missing_ok=True)

    async def destroyed(self, sandbox_id: str) -> None:
        self._cas.pop(sandbox_id, None)
        await asyncio.to_thread(shutil.rmtree, self.directory / "sandboxes" / sandbox_id, True)

    async def sync(self) -> None:
        """Rebuild the sets and the address map from the runtime's inventory."""
        assert self._runtime is not None
        async with self._lock:
            tenants: dict[str, Tenant] = {}
            for info in self._runtime.list():
                if info.ip is None or info.state not in ("running", "paused"):
                    continue
                try:
                    spec = self._runtime.spec(info.id)
                except HostError:
                    continue
                rules = Rules.of(await asyncio.to_thread(self._policy, spec), spec.secrets)
                ca = await asyncio.to_thread(self.ca, info.id) if spec.secrets else None
                tenants[info.ip] = Tenant(info.id, rules, ca)
            members = [self._member(ipaddress.IPv4Address(ip), t.rules) for ip, t in tenants.items()]
            await asyncio.to_thread(self._table.update, members)
            self._tenants.clear()
            self._tenants.update(tenants)

    def ca(self, sandbox_id: str) -> SandboxCa:
        """The sandbox's CA, made on first use. Blocking."""
        ca = self._cas.get(sandbox_id)
        if ca is None:
            ca = self._cas[sandbox_id] = SandboxCa(self.directory / "sandboxes" / sandbox_id, sandbox_id)
        return ca

    def trust_bundle(self, spec: SandboxSpec) -> Path | None:
        """For a sandbox with secrets: the host's CA bundle plus the sandbox's own CA, to be
        bound over its /etc/ssl/certs/ca-certificates.crt (read-only). The host's list, not
        the one on the sandbox's disk: hostd never reads files a sandbox controls. Blocking."""
        if not spec.secrets:
            return None
        ca = self.ca(spec.id)
        system = next((p.read_bytes().rstrip(b"\n") + b"\n" for p in HOST_BUNDLES if p.is_file()), b"")
        if not system:
            log.warning("no CA bundle on the host: the sandbox trusts its egress CA only", sandbox_id=spec.id)
        path = ca.directory / TRUST_BUNDLE
        _write(path, system + ca.certificate_pem(), mode=0o644)
        return path

    def _member(self, address: ipaddress.IPv4Address, rules: Rules) -> Member:
        return Member(address, self._network.veth_name(self._network.slot_of(address)), rules)

    def _rules_for(self, address: str) -> Rules | None:
        tenant = self._tenants.get(address)
        return None if tenant is None else tenant.rules

    def _policy(self, spec: SandboxSpec) -> EgressPolicy:
        try:
            kept = msgspec.json.decode(self._policy_path(spec.id).read_bytes(), type=EgressPolicy | None)
        except (FileNotFoundError, msgspec.DecodeError):
            return spec.egress or self._default
        return kept or self._default

    def _policy_path(self, sandbox_id: str) -> Path:
        return self.directory / "sandboxes" / sandbox_id / "policy.json"


def _write(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.chmod(mode)
    tmp.replace(path)
