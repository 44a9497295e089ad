"""The egress proxy's parsers and decisions on their own: SNI from real and hostile
ClientHellos, the Host of request heads, DNS messages, policy matching and secret
substitution. No network; the end-to-end behaviour is tests/hosts/test_egress.py."""

from __future__ import annotations

import ipaddress
import random
import ssl
import struct
from pathlib import Path

import pytest

from contracts.host import EgressPolicy, SecretGrant
from hosts.config import ConfigError, dns_server, load_config
from hosts.egress import dns, sni
from hosts.egress.policy import Rules, denied, name_matches
from hosts.egress.proxy import substitute


def client_hello(server_name: str | None) -> bytes:
    """The first flight of a real TLS client (Python's ssl, i.e. OpenSSL)."""
    context = ssl.create_default_context()
    if server_name is None:
        context.check_hostname = False
    tls = context.wrap_bio(ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(), server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def extension(kind: int, body: bytes) -> bytes:
    return struct.pack("!HH", kind, len(body)) + body


def sni_extension(*names: tuple[int, bytes]) -> bytes:
    entries = b"".join(bytes([kind]) + struct.pack("!H", len(n)) + n for kind, n in names)
    return extension(0, struct.pack("!H", len(entries)) + entries)


def hello_with(extensions: bytes, *, record_size: int = 2**14) -> bytes:
    """A ClientHello with the given extensions, in records of at most ``record_size``."""
    body = b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
    body += struct.pack("!H", len(extensions)) + extensions
    message = b"\x01" + len(body).to_bytes(3, "big") + body
    records = b""
    for i in range(0, len(message), record_size):
        chunk = message[i : i + record_size]
        records += b"\x16\x03\x01" + struct.pack("!H", len(chunk)) + chunk
    return records


def test_sni_of_real_client_hellos() -> None:
    assert sni.client_hello_sni(client_hello("pypi.org")) == ("pypi.org",)
    assert sni.client_hello_sni(client_hello("X.GitHub.com")) == ("x.github.com",)
    assert sni.client_hello_sni(client_hello(None)) == (None,)


def test_every_prefix_of_a_hello_asks_for_more() -> None:
    hello = client_hello("pypi.org")
    for end in range(len(hello)):
        assert sni.client_hello_sni(hello[:end]) is None
    assert sni.client_hello_sni(hello + b"trailing data is not ours") == ("pypi.org",)


def test_a_hello_split_over_records_is_reassembled() -> None:
    hello = hello_with(sni_extension((0, b"pypi.org")) + extension(0xFFCE, bytes(3000)), record_size=100)
    assert sni.client_hello_sni(hello) == ("pypi.org",)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"GET / HTTP/1.1\r\n", "not TLS"),
        (b"\x17\x03\x03\x00\x05hello", "application data first"),
        (b"\x16\x02\x00\x00\x05hello", "SSLv2-ish version"),
        (b"\x16\x03\x01\x00\x00", "empty record"),
        (b"\x16\x03\x01\x50\x00" + bytes(5), "record over 16 KiB"),
        (b"\x16\x03\x01\x00\x04\x02\x00\x00\x00", "ServerHello, not ClientHello"),
        (b"\x16\x03\x01\x00\x04\x01\xff\xff\xff", "ClientHello claims 16 MiB"),
    ],
)
def test_hostile_records(data: bytes, why: str) -> None:
    with pytest.raises(sni.Malformed):
        sni.client_hello_sni(data)


@pytest.mark.parametrize(
    "extensions",
    [
        sni_extension((0, b"a.com"), (0, b"b.com")),  # two host names
        sni_extension((0, b"a.com")) + sni_extension((0, b"b.com")),  # the extension twice
        sni_extension((0, b"evil.com\x00.good.com")),  # NUL inside
        sni_extension((0, b"caf\xc3\xa9.com")),  # not ASCII
        sni_extension((0, b"a b.com")),
        sni_extension((0, b"")),
        sni_extension((1, b"a.com")),  # no host_name entry at all
        sni_extension((0, b"x" * 300)),
        extension(0, b"\x00\x10\x00\x00\x03a.c"),  # list length beyond the extension
        extension(0, b"\x00\x06\x00\x00\x03a.comxx"),  # bytes after the list
        struct.pack("!HH", 0, 200) + b"short",  # extension length beyond the extensions
    ],
)
def test_hostile_server_names(extensions: bytes) -> None:
    with pytest.raises(sni.Malformed):
        sni.client_hello_sni(hello_with(extensions))


def test_random_corruption_never_escapes_the_parser() -> None:
    """Bytes flipped anywhere in real ClientHellos: an answer, a request for more or
    ``Malformed``, and never another exception."""
    rng = random.Random(12)
    hellos = [client_hello("pypi.org"), client_hello("x.github.com"), client_hello(None)]
    for _ in range(3000):
        data = bytearray(rng.choice(hellos))
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            found = sni.client_hello_sni(bytes(data[: rng.randint(1, len(data))]))
        except sni.Malformed:
            continue
        assert found is None or found[0] is None or sni.check_host(found[0].encode()) == found[0]


def test_http_host() -> None:
    head = b"GET /simple/ HTTP/1.1\r\nHost: PyPI.org:80\r\nAccept: */*\r\n\r\n"
    assert sni.request_head(head + b"body") == head
    assert sni.http_host(head) == "pypi.org"
    assert sni.http_host(b"GET http://pypi.org/x HTTP/1.1\r\nHost: pypi.org\r\n\r\n") == "pypi.org"
    assert sni.request_head(b"GET / HTTP/1.1\r\nHost: a") is None


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\r\n\r\n",  # no Host
        b"GET / HTTP/1.1\r\nHost: a.com\r\nHost: b.com\r\n\r\n",  # two
        b"GET http://b.com/ HTTP/1.1\r\nHost: a.com\r\n\r\n",  # target names another host
        b"GET / HTTP/1.1\r\nHost : a.com\r\n\r\n",  # space before the colon
        b"GET / SPDY/3\r\nHost: a.com\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.com\x00b\r\n\r\n",
    ],
)
def test_hostile_request_heads(head: bytes) -> None:
    with pytest.raises(sni.Malformed):
        sni.http_host(head)


def test_an_endless_head_is_refused() -> None:
    with pytest.raises(sni.Malformed):
        sni.request_head(b"GET / HTTP/1.1\r\nX: " + b"a" * sni.HEAD_MAX)


def test_domain_patterns() -> None:
    assert name_matches("pypi.org", ["pypi.org"])
    assert name_matches("PyPI.org.", ["pypi.org"])
    assert not name_matches("files.pypi.org", ["pypi.org"])
    assert name_matches("x.github.com", ["*.github.com"])
    assert name_matches("a.b.github.com", ["*.github.com"])
    assert not name_matches("github.com", ["*.github.com"])
    assert not name_matches("xgithub.com", ["*.github.com"])
    assert not name_matches("github.com.evil.io", ["*.github.com", "github.com"])


def test_targets_in_deny_mode() -> None:
    rules = Rules.of(EgressPolicy(mode="deny", cidrs=["198.18.1.0/24"], domains=["pypi.org"]))
    original, real = ipaddress.ip_address("198.18.9.9"), [ipaddress.IPv4Address("198.18.0.10")]
    assert rules.targets("pypi.org", original, real) == real  # the name's address, not the original
    assert rules.targets("other.org", original, real) == []
    assert rules.targets("other.org", original, [ipaddress.IPv4Address("198.18.1.5")]) == [
        ipaddress.IPv4Address("198.18.1.5")
    ]
    assert rules.targets(None, ipaddress.IPv4Address("198.18.1.7"), []) == [
        ipaddress.IPv4Address("198.18.1.7")
    ]
    assert rules.targets(None, original, []) == []
    assert rules.resolves("pypi.org") and not rules.resolves("example.com")


def test_targets_in_allow_mode() -> None:
    rules = Rules.of(EgressPolicy(mode="allow", cidrs=["198.18.1.0/24"], domains=["*.evil.io"]))
    good = [ipaddress.IPv4Address("198.18.0.10")]
    assert rules.targets("a.evil.io", ipaddress.IPv4Address("198.18.0.10"), good) == []
    assert rules.targets("good.org", ipaddress.IPv4Address("198.18.1.1"), good) == good
    assert rules.targets("good.org", good[0], [ipaddress.IPv4Address("198.18.1.1")]) == []
    assert not rules.resolves("a.evil.io") and rules.resolves("good.org")


def test_always_denied_covers_mapped_addresses() -> None:
    never = [ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10")]
    assert denied(ipaddress.ip_address("169.254.169.254"), never)
    assert denied(ipaddress.ip_address("::ffff:169.254.169.254"), never)
    assert not denied(ipaddress.ip_address("198.18.0.1"), never)


SECRET = SecretGrant(
    name="API_KEY", placeholder="dnah-placeholder-0123456789", value="sk-real", hosts=["api.x.com"]
)


def test_substitution_in_head_only_and_connection_closed() -> None:
    request = (
        b"POST /v1?key=dnah-placeholder-0123456789 HTTP/1.1\r\nHost: api.x.com\r\n"
        b"Authorization: Bearer dnah-placeholder-0123456789\r\nConnection: keep-alive\r\n"
        b"Content-Length: 27\r\n\r\ndnah-placeholder-0123456789"
    )
    out = substitute(request, [SECRET])
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"POST /v1?key=sk-real HTTP/1.1" in head
    assert b"Authorization: Bearer sk-real" in head
    assert b"keep-alive" not in head and head.endswith(b"Connection: close")
    assert body == b"dnah-placeholder-0123456789"


def test_a_value_with_a_line_break_is_never_substituted() -> None:
    bad = SecretGrant(
        name="B", placeholder="dnah-placeholder-bbbbbbbbbb", value="x\r\nEvil: 1", hosts=["a.com"]
    )
    out = substitute(b"GET / HTTP/1.1\r\nHost: a.com\r\nX: dnah-placeholder-bbbbbbbbbb\r\n\r\n", [bad])
    assert b"Evil" not in out and b"dnah-placeholder-bbbbbbbbbb" in out
    assert Rules.of(EgressPolicy(mode="allow"), [SECRET]).secrets_for("other.com") == []


def test_dns_question_refusal_and_answers() -> None:
    id_, query = dns.build_query("PyPI.org")
    q = dns.question(query)
    assert (q.id, q.name, q.qtype) == (id_, "pypi.org", dns.A)
    refused = dns.answer_error(query, q, dns.REFUSED)
    assert refused[:2] == query[:2] and refused[3] & 0x0F == dns.REFUSED and refused[2] & 0x80
    # An answer: pypi.org CNAME www.pypi.org (compressed), www A 198.18.0.10, and an A for
    # another owner that must be ignored.
    answer = bytearray(struct.pack("!HHHHHH", id_, 0x8180, 1, 3, 0, 0)) + query[12:]
    answer += b"\xc0\x0c" + struct.pack("!HHIH", dns.CNAME, 1, 60, 6) + b"\x03www\xc0\x0c"
    www = len(answer) - 6
    answer += (
        struct.pack("!H", 0xC000 | www) + struct.pack("!HHIH", dns.A, 1, 60, 4) + bytes([198, 18, 0, 10])
    )
    answer += b"\x05other\x00" + struct.pack("!HHIH", dns.A, 1, 60, 4) + bytes([198, 18, 0, 66])
    assert dns.addresses(bytes(answer), id_, "pypi.org") == [ipaddress.IPv4Address("198.18.0.10")]
    with pytest.raises(dns.DnsError):
        dns.addresses(bytes(answer), id_ ^ 1, "pypi.org")


@pytest.mark.parametrize(
    "message",
    [
        b"\x00\x01",
        struct.pack("!HHHHHH", 1, 0, 2, 0, 0, 0) + b"\x00\x00\x01\x00\x01",  # two questions
        struct.pack("!HHHHHH", 1, 0x8000, 1, 0, 0, 0) + b"\x00\x00\x01\x00\x01",  # a response
        struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01",  # pointer loop
        struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\x3fabc",  # label cut short
        struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\x80abc\x00\x00\x01\x00\x01",  # label type
    ],
)
def test_hostile_dns_queries(message: bytes) -> None:
    with pytest.raises(dns.DnsError):
        dns.question(message)


def test_egress_settings(tmp_path: Path) -> None:
    base = {"DNAH_BOOTSTRAP_TOKEN": "boot-token", "DNAH_VAR_DIR": str(tmp_path), "DNAH_HOST_RUNTIME": "fake"}
    config = load_config(base)
    assert config.egress_default == "allow"
    assert "10.0.0.0/8" in config.egress_deny_cidrs and "fc00::/7" in config.egress_deny_cidrs
    assert (config.egress_proxy_port, config.egress_dns_port) == (3280, 3253)
    custom = load_config(
        {
            **base,
            "DNAH_EGRESS_DEFAULT": "deny",
            "DNAH_EGRESS_DENY_CIDRS": "198.51.100.0/24, 2001:db8::/32",
            "DNAH_DNS_UPSTREAM": "198.19.0.53:5353",
            "DNAH_EGRESS_CA_BUNDLE": __file__,
        }
    )
    assert custom.egress_default == "deny"
    assert custom.egress_deny_cidrs == ("198.51.100.0/24", "2001:db8::/32")
    assert dns_server(custom) == ("198.19.0.53", 5353)
    assert dns_server(load_config({**base, "DNAH_DNS_UPSTREAM": "[2001:db8::1]"})) == ("2001:db8::1", 53)
    assert load_config({**base, "DNAH_EGRESS_DENY_CIDRS": "none"}).egress_deny_cidrs == ()
    for name, bad in [
        ("DNAH_EGRESS_DEFAULT", "maybe"),
        ("DNAH_EGRESS_DENY_CIDRS", "10.0.0.0/33"),
        ("DNAH_DNS_UPSTREAM", "dns.example"),
        ("DNAH_DNS_UPSTREAM", "198.19.0.53:0"),
        ("DNAH_EGRESS_CA_BUNDLE", str(tmp_path / "missing.pem")),
        ("DNAH_EGRESS_PROXY_PORT", "70000"),
    ]:
        with pytest.raises(ConfigError, match=name):
            load_config({**base, name: bad})
