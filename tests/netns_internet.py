"""A stand-in for the internet, for tests and benchmarks of sandbox egress: a network namespace
of the caller's own, joined to the host by a veth, with addresses in 198.19.n.0/24 (inside
198.18.0.0/15, the benchmarking range, which no default deny list holds) and servers the
test controls (``netns_internet_server.py``): on each address HTTP on 80 and HTTPS on 443
answering with JSON (which address served, the request's line and headers), a TCP echo on
7000 and a UDP sink on 7001 (``received()`` lists what it got); a DNS server (UDP and TCP) on ``ip(53)``
answering ``NAMES`` (NXDOMAIN otherwise).

With ``metadata`` (the default), 169.254.169.254 is there too, as the metadata service's
stand-in: the host routes it into the namespace, under a machine-wide lock held for the whole
block (one host route can lead to one namespace only), and ``check_metadata_route`` says whether
the route still leads there, to be called right before every probe of it, so that no probe can
ever leave for a real metadata service. Users that never probe it pass ``metadata=False`` and
need no lock.

Nothing outside the machine is ever involved. ``n`` comes from
``tests.support.exclusive_index("internet")``, so two sessions never share names or addresses
(``test_isolation``'s own ``dnahinet<n>`` uses 198.18.n.0/30 and other names).

    with internet() as net:
        net.ip(10)          # pypi.org's address; (net.ip(10), 80) is an HTTP server
        net.dns             # DNAH_DNS_UPSTREAM for hostd
        net.ca_path         # DNAH_EGRESS_CA_BUNDLE: the CA of the HTTPS servers
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support import exclusive_index

REPO = Path(__file__).resolve().parent.parent
METADATA = "169.254.169.254"
NAMES = {
    "pypi.org": 10,
    "x.github.com": 11,
    "a.b.github.com": 11,
    "github.com": 14,
    "evil.test": 12,
    "api.secret.test": 13,
    "other.test": 15,
}
"""What the stand-in DNS answers (last byte of 198.19.n.x); ``metadata.test`` is METADATA."""


METADATA_LOCK = Path("/run/lock/dnah-internet-metadata.lock")
METADATA_WAIT_S = 900.0


@dataclass(frozen=True)
class Internet:
    n: int
    ca_pem: str
    ca_path: Path
    metadata: bool

    def received(self) -> list[str]:
        """Every UDP payload the sinks got so far, any address."""
        with socket.create_connection((self.ip(10), 7002), timeout=5) as sock:
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        return data.decode().splitlines()

    @property
    def host_end(self) -> str:
        return f"dnahxv{self.n}h"

    def check_metadata_route(self) -> None:
        """Assert that the host's route to METADATA leads into this namespace."""
        assert self.metadata, "this stand-in has no metadata service"
        route = subprocess.run(["ip", "route", "get", METADATA], capture_output=True, text=True, check=True)
        assert f" dev {self.host_end} " in f" {route.stdout} ", route.stdout

    def ip(self, last: int) -> str:
        return f"198.19.{self.n}.{last}"

    @property
    def dns(self) -> str:
        return self.ip(53)

    @property
    def host_address(self) -> str:
        """The host's end of the veth (a host address: sandboxes may never reach it)."""
        return self.ip(1)


@contextlib.contextmanager
def internet(index: int | None = None, *, metadata: bool = True) -> Iterator[Internet]:
    """The namespace and its servers, removed on exit; ``index`` defaults to an exclusive one."""
    if index is None:
        with exclusive_index("internet") as held, internet(held, metadata=metadata) as net:
            yield net
        return
    with contextlib.ExitStack() as stack:
        if metadata:
            stack.enter_context(_metadata_lock())
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="dnah-internet-"))
        yield from _run(index, Path(tmp), metadata)


@contextlib.contextmanager
def _metadata_lock() -> Iterator[None]:
    """The machine-wide right to route METADATA, waited for (another session's tests hold it for
    minutes at most)."""
    with open(METADATA_LOCK, "w") as lock:
        deadline = time.monotonic() + METADATA_WAIT_S
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{METADATA_LOCK} held by another session for {METADATA_WAIT_S} s"
                    ) from None
                time.sleep(0.5)
        yield


def _run(n: int, tmp: Path, metadata: bool) -> Iterator[Internet]:
    ca, cert, key = _issue(tmp)
    net = Internet(n, ca.read_text(), ca, metadata)
    netns, host_end, ns_end = f"dnahx{n}", net.host_end, f"dnahxv{n}n"
    servers = sorted({net.ip(last) for last in NAMES.values()}) + ([METADATA] if metadata else [])
    names = {name: net.ip(last) for name, last in NAMES.items()} | {"metadata.test": METADATA}
    config = tmp / "internet.json"
    config.write_text(
        json.dumps({"cert": str(cert), "key": str(key), "addresses": servers, "dns": net.dns, "names": names})
    )

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    _remove(netns, host_end)  # a crashed run's leftovers
    ip("netns", "add", netns)
    server = None
    try:
        ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end, "netns", netns)
        ip("addr", "add", f"{net.host_address}/24", "dev", host_end)
        ip("link", "set", host_end, "up")
        if metadata:
            ip("route", "replace", f"{METADATA}/32", "dev", host_end)
        for address in [net.ip(2), net.dns, *servers]:
            ip("-n", netns, "addr", "add", address + ("/32" if address == METADATA else "/24"), "dev", ns_end)
        ip("-n", netns, "link", "set", ns_end, "up")
        ip("-n", netns, "link", "set", "lo", "up")
        ip("-n", netns, "route", "add", "default", "via", net.host_address)
        server = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-m", "tests.netns_internet_server", str(config)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        if metadata:
            net.check_metadata_route()
        with socket.create_connection((METADATA if metadata else net.ip(10), 7000), timeout=5):
            pass  # the host reaches it
        yield net
    finally:
        if server is not None:
            server.kill()
            server.wait()
        _remove(netns, host_end)  # the METADATA route goes with the veth


def _remove(netns: str, host_end: str) -> None:
    subprocess.run(["ip", "link", "del", host_end], capture_output=True, check=False)
    subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)


def _issue(tmp: Path) -> tuple[Path, Path, Path]:
    """A CA and one server certificate for every name of ``NAMES``."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stand-in internet CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stand-in server")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in NAMES]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = tmp / "ca.pem", tmp / "server.pem", tmp / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    paths[2].write_bytes(key_pem)
    return paths
