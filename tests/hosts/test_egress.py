"""Egress end to end: a real hostd (OCI runtime, NAT egress) with sandboxes reaching a stand-in
internet (``tests/netns_internet.py``) — a network namespace of the test's own with addresses
in 198.19.n.0/24 (the benchmarking range), HTTP/HTTPS/TCP echo servers and a DNS server the
test wrote, which is hostd's ``DNAH_DNS_UPSTREAM``. No real outside address is
ever used: every name the sandboxes ask for resolves into that namespace, and everything
else is NXDOMAIN.

Each check runs a small Python client inside a sandbox (``CLIENT``) that reports, per
operation, the JSON the server echoed (which address served it, the request's headers) or
the error, so a refusal is told apart from a wrong destination.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from hosts.config import load_config
from hosts.runtime.factory import make_runtime
from hosts.templates import TemplateStore
from tests.hosts._hostd_fixtures import HostdProcess, RecordingCore, free_port, hostd_env, wait_for
from tests.netns_internet import Internet
from tests.netns_internet import internet as stand_in_internet

SPEC = {"template": "dnah-base", "cpu": 1, "ram_mb": 256, "disk_gb": 1}
REPO = Path(__file__).resolve().parent.parent.parent
PLACEHOLDER = "dnah-secret-placeholder-0001"
VALUE = "sk-the-real-value-42"
TOKEN = "egress-test-hostd-token"

CLIENT = r"""
import json, socket, ssl, sys

def request(sock, host, headers):
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    sock.sendall(f"GET /path HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n".encode())
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    return json.loads(body) if status == 200 else {"status": status}

def resolve_tcp(name, server):
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + labels + b"\x00\x00\x01\x00\x01"
    with socket.create_connection((server, 53), timeout=3) as sock:
        sock.sendall(len(query).to_bytes(2, "big") + query)
        size = int.from_bytes(sock.recv(2), "big")
        reply = b""
        while len(reply) < size:
            reply += sock.recv(size - len(reply))
    if reply[3] & 0x0F or not reply[7]:
        return {"error": f"rcode {reply[3] & 0x0F}"}
    return {"ok": socket.inet_ntoa(reply[-4:])}

def run(op):
    kind = op["kind"]
    try:
        if kind == "resolve":
            return {"ok": socket.gethostbyname(op["name"])}
        if kind == "resolve_tcp":
            return resolve_tcp(op["name"], op["server"])
        address = op.get("ip") or op["host"]
        port = op.get("port") or {"http": 80, "https": 443, "tcp": 7000}[kind]
        sock = socket.create_connection((address, port), timeout=op.get("timeout", 3))
        with sock:
            if kind == "tcp":
                sock.sendall(b"ping")
                return {"ok": sock.recv(16).decode()}
            if kind == "https":
                context = ssl.create_default_context(cadata=op.get("ca"))
                sock = context.wrap_socket(sock, server_hostname=op.get("sni") or op["host"])
            return {"ok": request(sock, op["host"], op.get("headers", {}))}
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}

print(json.dumps([run(op) for op in json.loads(sys.argv[1])]))
"""


@pytest.fixture(scope="module")
def internet() -> Iterator[Internet]:
    with stand_in_internet() as net:
        yield net


@dataclass
class Host:
    process: HostdProcess
    http: httpx.Client
    var_dir: Path
    gateway: str
    bridge: str


@pytest.fixture(scope="module")
async def hostd(
    internet: Internet,
    kernel_index: int,
    template_store: TemplateStore,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Host]:
    n = kernel_index
    core = RecordingCore(free_port(), heartbeat_interval_s=1)
    core.start()
    var_dir = tmp_path_factory.mktemp("hostd-egress")
    port = free_port()
    names = _Names(bridge=f"dnahe{n}", subnet=ipaddress.IPv4Network(f"10.218.{n}.0/24"), cgroup=f"dnahe{n}")
    env = hostd_env(
        core_url=core.url,
        port=port,
        var_dir=var_dir,
        template_cache=template_store.cache_dir,
        names=names,  # type: ignore[arg-type]
        DNAH_SANDBOX_EGRESS="nat",
        DNAH_DNS_UPSTREAM=internet.ip(53),
        DNAH_EGRESS_CA_BUNDLE=str(internet.ca_path),
        DNAH_HOSTD_TOKEN=TOKEN,
        DNAH_HOST_CPU="4",
        DNAH_HOST_RAM_MB="4096",
        DNAH_HOST_DISK_GB="30",
    )
    process = HostdProcess(env, port, var_dir / "hostd.log")
    process.start()
    http = httpx.Client(base_url=process.url, headers={"authorization": f"Bearer {TOKEN}"}, timeout=120)
    try:
        yield Host(process, http, var_dir, str(names.subnet.network_address + 1), names.bridge)
    finally:
        for info in http.get("/sandboxes").json():
            http.delete(f"/sandboxes/{info['id']}")
        http.close()
        assert process.stop() == 0, process.log()
        core.close()
        config = load_config(env)
        runtime = make_runtime(config, template_store)
        await runtime.recover()
        await runtime.remove_host_setup()
        listed = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True)
        tables = set(listed.stdout.splitlines())
        # The runtime's table and the egress table are gone with the host setup.
        assert not tables & {f"table inet {config.bridge}", f"table inet {config.bridge}_egress"}


@dataclass(frozen=True)
class _Names:
    bridge: str
    subnet: ipaddress.IPv4Network
    cgroup: str


def create(host: Host, **fields: Any) -> str:
    sandbox_id = f"e{uuid.uuid4().hex[:10]}"
    response = host.http.post("/sandboxes", json={"id": sandbox_id, **SPEC, **fields})
    assert response.status_code == 200, response.text
    return sandbox_id


def probe(host: Host, sandbox_id: str, *ops: dict[str, Any]) -> list[dict[str, Any]]:
    response = host.http.post(
        f"/sandboxes/{sandbox_id}/exec",
        json={"cmd": ["python3", "-c", CLIENT, json.dumps(list(ops))], "timeout_ms": 110_000},
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["exit_code"] == 0, result
    answers: list[dict[str, Any]] = json.loads(result["stdout"])
    return answers


def served_by(answer: dict[str, Any]) -> str:
    assert "ok" in answer, answer
    served: str = answer["ok"]["served_by"]
    return served


def refused(answer: dict[str, Any]) -> bool:
    return "error" in answer or answer.get("ok", {}).get("status") == 403


@pytest.fixture
def destroy_after(hostd: Host) -> Iterator[list[str]]:
    ids: list[str] = []
    yield ids
    for sandbox_id in ids:
        hostd.http.delete(f"/sandboxes/{sandbox_id}")


# -------------------------------------------------------------------------------------------


def test_default_allow_reaches_the_internet_and_resolves_through_hostd(
    hostd: Host, internet: Internet, destroy_after: list[str]
) -> None:
    sid = create(hostd)
    destroy_after.append(sid)
    resolved, over_tcp, by_name, by_ip, tcp, tls = probe(
        hostd,
        sid,
        {"kind": "resolve", "name": "pypi.org"},
        # DNS over TCP to any server (here an address with no DNS server) reaches hostd's
        # resolver, and through it the upstream.
        {"kind": "resolve_tcp", "name": "x.github.com", "server": internet.ip(12)},
        {"kind": "http", "host": "pypi.org"},
        {"kind": "http", "host": "evil.test", "ip": internet.ip(12)},
        {"kind": "tcp", "ip": internet.ip(10)},
        {"kind": "https", "host": "x.github.com", "ca": internet.ca_pem},
    )
    assert resolved == {"ok": internet.ip(10)}
    assert over_tcp == {"ok": internet.ip(11)}
    assert served_by(by_name) == internet.ip(10)
    assert served_by(by_ip) == internet.ip(12)
    assert tcp == {"ok": "ping"}
    assert served_by(tls) == internet.ip(11)
    # The sandbox's resolv.conf names the gateway, where hostd's resolver answers.
    conf = hostd.http.post(f"/sandboxes/{sid}/exec", json={"cmd": ["cat", "/etc/resolv.conf"]}).json()
    assert f"nameserver {hostd.gateway}" in conf["stdout"]


def test_deny_blocks_addresses_and_names(hostd: Host, internet: Internet, destroy_after: list[str]) -> None:
    sid = create(hostd, egress={"mode": "deny"})
    destroy_after.append(sid)
    answers = probe(
        hostd,
        sid,
        {"kind": "resolve", "name": "pypi.org"},
        {"kind": "resolve_tcp", "name": "pypi.org", "server": hostd.gateway},
        {"kind": "http", "host": "pypi.org", "ip": internet.ip(10)},
        {"kind": "tcp", "ip": internet.ip(10)},
        # DNS to any server is hostd's resolver, which answers nothing in deny mode.
        {"kind": "tcp", "ip": internet.ip(53), "port": 53},
    )
    assert all("error" in a for a in answers), answers


def test_cidr_allow(hostd: Host, internet: Internet, destroy_after: list[str]) -> None:
    sid = create(hostd, egress={"mode": "deny", "cidrs": [f"{internet.ip(10)}/32"]})
    destroy_after.append(sid)
    allowed_http, allowed_tcp, other = probe(
        hostd,
        sid,
        {"kind": "http", "host": "pypi.org", "ip": internet.ip(10)},
        {"kind": "tcp", "ip": internet.ip(10)},
        {"kind": "tcp", "ip": internet.ip(11)},
    )
    assert served_by(allowed_http) == internet.ip(10)
    assert allowed_tcp == {"ok": "ping"}
    assert "error" in other


def test_allow_mode_with_denied_cidrs_and_domains(
    hostd: Host, internet: Internet, destroy_after: list[str]
) -> None:
    sid = create(
        hostd, egress={"mode": "allow", "cidrs": [f"{internet.ip(12)}/32"], "domains": ["*.github.com"]}
    )
    destroy_after.append(sid)
    fine, cidr, domain, resolve = probe(
        hostd,
        sid,
        {"kind": "http", "host": "pypi.org"},
        {"kind": "tcp", "ip": internet.ip(12)},
        {"kind": "https", "host": "x.github.com", "ip": internet.ip(11), "ca": internet.ca_pem},
        {"kind": "resolve", "name": "x.github.com"},
    )
    assert served_by(fine) == internet.ip(10)
    assert "error" in cidr and "error" in domain and "error" in resolve


def test_domain_allow_by_sni_and_host_with_wildcards(
    hostd: Host, internet: Internet, destroy_after: list[str]
) -> None:
    sid = create(hostd, egress={"mode": "deny", "domains": ["pypi.org", "*.github.com"]})
    destroy_after.append(sid)
    ca = internet.ca_pem
    answers = probe(
        hostd,
        sid,
        {"kind": "resolve", "name": "pypi.org"},
        {"kind": "http", "host": "pypi.org"},
        {"kind": "https", "host": "pypi.org", "ca": ca},
        {"kind": "https", "host": "x.github.com", "ca": ca},
        {"kind": "http", "host": "a.b.github.com"},
        {"kind": "resolve", "name": "evil.test"},
        {"kind": "http", "host": "evil.test", "ip": internet.ip(12)},
        {"kind": "https", "host": "github.com", "ip": internet.ip(14), "ca": ca},
        {"kind": "tcp", "ip": internet.ip(10)},  # only 80/443 pass by name
    )
    resolved, http, https, wildcard, deeper, evil_name, evil, apex, other_port = answers
    assert resolved == {"ok": internet.ip(10)}
    assert served_by(http) == served_by(https) == internet.ip(10)
    assert served_by(wildcard) == served_by(deeper) == internet.ip(11)
    assert "error" in evil_name
    assert evil == {"ok": {"status": 403}}
    assert refused(apex) and "error" in other_port


def test_a_forged_name_reaches_only_that_names_address(
    hostd: Host, internet: Internet, destroy_after: list[str]
) -> None:
    sid = create(hostd, egress={"mode": "deny", "domains": ["pypi.org"]})
    destroy_after.append(sid)
    tls, http = probe(
        hostd,
        sid,
        {"kind": "https", "host": "pypi.org", "ip": internet.ip(12), "ca": internet.ca_pem},
        {"kind": "http", "host": "pypi.org", "ip": internet.ip(12)},
    )
    # Sent towards evil.test's address, carried to pypi.org's.
    assert served_by(tls) == served_by(http) == internet.ip(10)


def test_metadata_host_and_other_sandboxes_are_always_denied(
    hostd: Host, internet: Internet, destroy_after: list[str]
) -> None:
    listener = socket.create_server(("0.0.0.0", 0))
    host_port = listener.getsockname()[1]
    other = create(hostd)
    destroy_after.append(other)
    other_ip = hostd.http.get(f"/sandboxes/{other}").json()["ip"]
    server = "import socket; s = socket.create_server(('0.0.0.0', 7000)); print('up', flush=True); s.accept()"
    hostd.http.post(
        f"/sandboxes/{other}/exec", json={"cmd": ["sh", "-c", f'nohup python3 -c "{server}" >/tmp/s 2>&1 &']}
    )
    allowed = create(hostd, egress={"mode": "allow"})
    by_name = create(hostd, egress={"mode": "deny", "domains": ["metadata.test"]})
    destroy_after.extend([allowed, by_name])
    with listener:
        internet.check_metadata_route()
        answers = probe(
            hostd,
            allowed,
            {"kind": "tcp", "ip": "169.254.169.254"},
            {"kind": "http", "host": "metadata.test", "ip": "169.254.169.254"},
            {"kind": "tcp", "ip": internet.ip(1), "port": host_port},
            {"kind": "tcp", "ip": hostd.gateway, "port": host_port},
            {"kind": "tcp", "ip": other_ip, "port": 7000},
        )
    assert all("error" in a for a in answers), answers
    internet.check_metadata_route()
    (metadata,) = probe(hostd, by_name, {"kind": "http", "host": "metadata.test"})
    assert metadata == {"ok": {"status": 403}}


def test_a_sandbox_cannot_send_from_another_sandboxs_address(
    hostd: Host, internet: Internet, destroy_after: list[str]
) -> None:
    """Policies (and secrets) are keyed by source address, so a sandbox sending from another's
    address would get that one's rights. A VM's guest kernel can set any address; a container
    cannot, so the test plays the guest from the host: it gives the attacker's eth0 the
    victim's address and sends a UDP datagram from it. The victim's own datagrams, sent before
    and after, show the path works and when the spoofed one would have arrived."""
    victim = create(hostd)
    attacker = create(hostd, egress={"mode": "deny"})
    destroy_after.extend([victim, attacker])
    victim_ip = hostd.http.get(f"/sandboxes/{victim}").json()["ip"]
    sink = (internet.ip(10), 7001)
    before, spoofed, after = (f"{label}-{uuid.uuid4().hex}" for label in ("before", "spoofed", "after"))

    def send_from_victim(token: str) -> None:
        code = f"import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'{token}', {sink!r})"
        assert (
            hostd.http.post(f"/sandboxes/{victim}/exec", json={"cmd": ["python3", "-c", code]}).status_code
            == 200
        )

    send_from_victim(before)
    wait_for(lambda: before in internet.received(), timeout=30, what="the victim's datagram")
    netns = f"{hostd.bridge}@{attacker}"
    subprocess.run(["ip", "-n", netns, "addr", "add", f"{victim_ip}/32", "dev", "eth0"], check=True)
    spoof = (
        "import socket, time\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"s.bind(({victim_ip!r}, 0))\n"
        f"for _ in range(5): s.sendto(b'{spoofed}', {sink!r}); time.sleep(0.05)\n"
    )
    subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", spoof], check=True)
    send_from_victim(after)
    wait_for(lambda: after in internet.received(), timeout=30, what="the victim's second datagram")
    assert spoofed not in internet.received()


def test_a_change_applies_to_a_running_sandbox_at_once(
    hostd: Host, internet: Internet, destroy_after: list[str]
) -> None:
    """A ``PUT`` switches a running sandbox from allow to deny and back. A connection already
    open when the policy denies its destination is cut too: nft checks every forwarded
    packet, not only a connection's first."""
    sid = create(hostd)
    destroy_after.append(sid)
    script = f"""
import socket, time, json
s = socket.create_connection(("{internet.ip(10)}", 7000), timeout=3)
s.sendall(b"one"); first = s.recv(16).decode()
open("/tmp/ready", "w").close()
while True:
    try:
        socket.create_connection(("{internet.ip(11)}", 7000), timeout=1).close()
        time.sleep(0.1)
    except OSError:
        break
try:
    s.sendall(b"two"); second = s.recv(16).decode()
except OSError as exc:
    second = type(exc).__name__
print(json.dumps([first, second]))
"""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(
            hostd.http.post,
            f"/sandboxes/{sid}/exec",
            json={"cmd": ["python3", "-c", script], "timeout_ms": 100_000},
        )

        def ready() -> bool:
            answer = hostd.http.post(f"/sandboxes/{sid}/exec", json={"cmd": ["test", "-e", "/tmp/ready"]})
            return answer.json()["exit_code"] == 0

        wait_for(ready, timeout=60, what="the open connection")
        response = hostd.http.put(f"/sandboxes/{sid}/egress", json={"mode": "deny"})
        assert response.status_code == 200 and response.json()["id"] == sid
        result = running.result(timeout=120).json()
    assert json.loads(result["stdout"]) == ["one", "TimeoutError"], result
    hostd.http.put(f"/sandboxes/{sid}/egress", json={"mode": "deny", "cidrs": [f"{internet.ip(11)}/32"]})
    denied, allowed = probe(
        hostd, sid, {"kind": "tcp", "ip": internet.ip(10)}, {"kind": "tcp", "ip": internet.ip(11)}
    )
    assert "error" in denied and allowed == {"ok": "ping"}
    # null: back to the operator's default (allow here).
    json_type = {"content-type": "application/json"}
    response = hostd.http.put(f"/sandboxes/{sid}/egress", content=b"null", headers=json_type)
    assert response.status_code == 200, response.text
    assert probe(hostd, sid, {"kind": "tcp", "ip": internet.ip(10)}) == [{"ok": "ping"}]


def test_put_egress_refuses_an_unknown_sandbox_and_a_bad_policy(hostd: Host) -> None:
    assert hostd.http.put("/sandboxes/nope/egress", json={"mode": "deny"}).status_code == 404
    assert hostd.http.put("/sandboxes/nope/egress", json={"mode": "maybe"}).status_code == 400
    assert (
        hostd.http.put("/sandboxes/nope/egress", json={"mode": "deny", "cidrs": ["10.0.0.0/33"]}).status_code
        == 400
    )


def test_secrets_are_substituted_only_towards_their_hosts(
    hostd: Host, internet: Internet, destroy_after: list[str]
) -> None:
    secret = {"name": "API_KEY", "placeholder": PLACEHOLDER, "value": VALUE, "hosts": ["api.secret.test"]}
    sid = create(hostd, env={"API_KEY": PLACEHOLDER}, secrets=[secret])
    destroy_after.append(sid)
    auth = {"Authorization": f"Bearer {PLACEHOLDER}"}
    answers = probe(
        hostd,
        sid,
        {"kind": "http", "host": "api.secret.test", "headers": auth},
        # HTTPS with the sandbox's own trust store, which holds the sandbox's CA.
        {"kind": "https", "host": "api.secret.test", "headers": auth},
        {"kind": "http", "host": "other.test", "headers": auth},
        {"kind": "https", "host": "other.test", "headers": auth, "ca": internet.ca_pem},
        # The secret's host named towards another address: it still goes only to the host's.
        {"kind": "http", "host": "api.secret.test", "ip": internet.ip(12), "headers": auth},
    )
    http, https, other_http, other_https, forged = answers
    for answer in (http, https, forged):
        assert served_by(answer) == internet.ip(13)
        assert answer["ok"]["headers"]["Authorization"] == f"Bearer {VALUE}", answer
    for answer in (other_http, other_https):
        assert served_by(answer) == internet.ip(15)
        assert answer["ok"]["headers"]["Authorization"] == f"Bearer {PLACEHOLDER}", answer
    # The sandbox sees the placeholder only, and hostd's CA key never enters it.
    env = hostd.http.post(f"/sandboxes/{sid}/exec", json={"cmd": ["sh", "-c", "echo $API_KEY; env"]}).json()
    assert env["stdout"].startswith(PLACEHOLDER) and VALUE not in env["stdout"]
    key = hostd.var_dir / "hostd" / "egress" / "sandboxes" / sid / "ca.key"
    assert key.exists() and os.stat(key).st_mode & 0o077 == 0
    assert VALUE not in hostd.process.log()
    # The values hostd keeps for recovery, in the sandbox's spec, are root's alone.
    record = hostd.var_dir / "hostd" / "sandboxes" / sid
    assert VALUE in (record / "spec.json").read_text() and os.stat(record).st_mode & 0o077 == 0


def test_recovery_keeps_the_policy_and_the_secrets(
    hostd: Host, internet: Internet, destroy_after: list[str]
) -> None:
    """A restarted hostd reloads the table, the last PUT of each sandbox, and the grants of the
    sandboxes that ran on (from their spec files), with the same CA the sandbox trusts."""
    sid = create(hostd)
    secret = {"name": "API_KEY", "placeholder": PLACEHOLDER, "value": VALUE, "hosts": ["api.secret.test"]}
    with_secret = create(hostd, secrets=[secret])
    destroy_after.extend([sid, with_secret])
    assert hostd.http.put(f"/sandboxes/{sid}/egress", json={"mode": "deny"}).status_code == 200
    assert hostd.process.stop() == 0
    hostd.process.start()
    (answer,) = probe(hostd, sid, {"kind": "tcp", "ip": internet.ip(10)})
    assert "error" in answer
    auth = {"Authorization": f"Bearer {PLACEHOLDER}"}
    http, https = probe(
        hostd,
        with_secret,
        {"kind": "http", "host": "api.secret.test", "headers": auth},
        {"kind": "https", "host": "api.secret.test", "headers": auth},
    )
    assert (
        http["ok"]["headers"]["Authorization"] == https["ok"]["headers"]["Authorization"] == f"Bearer {VALUE}"
    )
