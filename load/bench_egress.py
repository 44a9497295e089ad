"""Egress proxy benchmark: what hostd's egress proxy adds to a new connection, against the same
request sent straight out through NAT, both to the stand-in internet (``tests/netns_internet``:
a network namespace on this machine; nothing leaves it).

One hostd (OCI runtime, NAT egress, DNS upstream and CA bundle pointed at the stand-in), three
sandboxes: ``direct`` (no policy: packets are only NATed), ``proxied`` (allow mode with a
domain rule, so its 80/443 go through the proxy, which reads the name, re-resolves it and
splices) and ``secret`` (a secret for the target's name, so HTTPS is terminated with the
sandbox's CA and re-encrypted to the server). In each sandbox a client times, over fresh
connections one after another, connect + one small GET + the whole response (HTTP, then
HTTPS with its handshake), so the difference is the proxy's per-connection cost: accepting,
reading the ClientHello or head, the name's lookup, the upstream connect and, for secrets,
a second TLS handshake.

    python -m load.bench_egress                      # 200 connections per kind and sandbox
    python -m load.bench_egress --connections 500     # in batches of 20, sandboxes taking turns

Results: docs/performance.md, "Egress proxy".
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import statistics
import tempfile
from pathlib import Path

import httpx

from hosts.config import BUILD_SCRIPT, load_config
from hosts.runtime.factory import make_runtime
from hosts.templates import TemplateStore
from load.bench_core import machine, pct
from tests.hosts._hostd_fixtures import HostdProcess, RecordingCore, free_port, hostd_env
from tests.netns_internet import Internet, internet
from tests.support import exclusive_index

TOKEN = "egress-bench-hostd-token"
BATCH = 20
SPEC = {"template": "dnah-base", "cpu": 1, "ram_mb": 256, "disk_gb": 1}
CLIENT = r"""
import json, socket, ssl, sys, time
address, name, kind, count, ca = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
context = ssl.create_default_context(cadata=ca or None)
request = f"GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode()
samples = []
for _ in range(count):
    started = time.perf_counter()
    sock = socket.create_connection((address, 443 if kind == "https" else 80), timeout=10)
    if kind == "https":
        sock = context.wrap_socket(sock, server_hostname=name)
    sock.sendall(request)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    assert data.startswith(b"HTTP/1.") and b" 200 " in data[:16], data[:100]
    samples.append((time.perf_counter() - started) * 1000)
print(json.dumps(samples))
"""


class _Names:
    def __init__(self, n: int) -> None:
        self.bridge = f"dnahbe{n}"
        self.subnet = ipaddress.IPv4Network(f"10.219.{n}.0/24")
        self.cgroup = f"dnahbe{n}"


def _ca(label: str, net: Internet) -> str:
    """The CA a sandbox's client verifies with: the stand-in's, except in the secret sandbox,
    whose system store holds its own egress CA (the proxy terminates TLS there)."""
    return "" if label == "secret" else net.ca_pem


def measure(http: httpx.Client, sid: str, net: Internet, kind: str, count: int, ca: str) -> list[float]:
    argv = ["python3", "-c", CLIENT, net.ip(10), "pypi.org", kind, str(count), ca]
    result = http.post(f"/sandboxes/{sid}/exec", json={"cmd": argv, "timeout_ms": 600_000}).json()
    if result["exit_code"] != 0:
        raise RuntimeError(result["stderr"])
    samples: list[float] = json.loads(result["stdout"])
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=200)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (network namespaces, nft, runc)")
    templates = TemplateStore(Path("/var/cache/dnah/templates"), BUILD_SCRIPT)
    templates.ensure()
    print(f"machine: {machine()}")
    with (
        internet(metadata=False) as net,
        exclusive_index("egress-bench") as n,
        tempfile.TemporaryDirectory() as tmp,
    ):
        core = RecordingCore(free_port())
        core.start()
        port = free_port()
        env = hostd_env(
            core_url=core.url,
            port=port,
            var_dir=Path(tmp),
            template_cache=templates.cache_dir,
            names=_Names(n),  # type: ignore[arg-type]
            DNAH_SANDBOX_EGRESS="nat",
            DNAH_DNS_UPSTREAM=net.dns,
            DNAH_EGRESS_CA_BUNDLE=str(net.ca_path),
            DNAH_HOSTD_TOKEN=TOKEN,
        )
        hostd = HostdProcess(env, port, Path(tmp) / "hostd.log")
        hostd.start()
        http = httpx.Client(base_url=hostd.url, headers={"authorization": f"Bearer {TOKEN}"}, timeout=700)
        secret = {
            "name": "K",
            "placeholder": "dnah-bench-placeholder-01",
            "value": "v",
            "hosts": ["pypi.org"],
        }
        kinds: dict[str, dict[str, object]] = {
            "direct": {},
            "proxied": {"egress": {"mode": "allow", "domains": ["blocked.test"]}},
            "secret": {"secrets": [secret]},
        }
        try:
            sids = {}
            for label, fields in kinds.items():
                sids[label] = f"bench-{label}"
                response = http.post("/sandboxes", json={"id": sids[label], **SPEC, **fields})
                response.raise_for_status()
            results: dict[tuple[str, str], list[float]] = {}
            for kind in ("http", "https"):
                for label, sid in sids.items():
                    measure(http, sid, net, kind, 20, _ca(label, net))  # warm-up: imports, ARP, caches
                    results[(kind, label)] = []
                # Batches of the three sandboxes take turns, so a busy moment of the machine
                # falls on all of them alike.
                for _ in range(max(1, args.connections // BATCH)):
                    for label, sid in sids.items():
                        results[(kind, label)] += measure(http, sid, net, kind, BATCH, _ca(label, net))
            for (kind, label), samples in results.items():
                base = statistics.median(results[(kind, "direct")])
                print(
                    f"{kind:<6}{label:<9} n={len(samples):<5} P50 {pct(samples, 0.5):7.2f} ms  "
                    f"P95 {pct(samples, 0.95):7.2f} ms  mean {statistics.fmean(samples):7.2f} ms  "
                    f"+P50 vs direct {statistics.median(samples) - base:+7.2f} ms"
                )
        finally:
            for sid in [f"bench-{label}" for label in kinds]:
                http.delete(f"/sandboxes/{sid}")
            http.close()
            hostd.stop()
            core.close()
            config = load_config(env)
            runtime = make_runtime(config, templates)

            async def clean() -> None:
                await runtime.recover()
                await runtime.remove_host_setup()

            asyncio.run(clean())


if __name__ == "__main__":
    main()
