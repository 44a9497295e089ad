"""The server name a TLS connection asks for, read from its ClientHello (RFC 8446 §4.1.2,
RFC 6066 §3), and the host a plain HTTP request names.

Both parsers take bytes a sandbox sent, so every length is checked against what is there
and against the structure around it; anything malformed is ``Malformed`` (the proxy closes
the connection), a prefix too short to decide is ``None`` (read more). Only the first
handshake message is read; it may span several TLS records, up to ``HELLO_MAX`` bytes.
"""

from __future__ import annotations

import re

HELLO_MAX = 64 * 1024
"""The most ClientHello bytes collected before giving up (real ones are under 2 KiB; post-
quantum key shares make them a few KiB at most)."""
HEAD_MAX = 64 * 1024
"""The longest HTTP request head the proxy reads."""

_HANDSHAKE = 22
_CLIENT_HELLO = 1
_SERVER_NAME = 0
_HOST_NAME = 0
_HOSTNAME = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,62})?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,62})?)*\.?$")


class Malformed(ValueError):
    """Not a TLS ClientHello, or not an HTTP request head, that we accept."""


class NotTls(Malformed):
    """The first byte is not a TLS handshake record: the caller may try HTTP instead."""


def is_tls(first: bytes) -> bool:
    return first[:1] == bytes([_HANDSHAKE])


def client_hello_sni(data: bytes) -> tuple[str | None] | None:
    """``(name,)`` for a complete ClientHello (``name`` None when it carries no SNI), ``None``
    when ``data`` is a valid but incomplete prefix; raises ``Malformed``."""
    hello = _handshake_message(data)
    if hello is None:
        return None
    return (_server_name(hello),)


def _handshake_message(data: bytes) -> bytes | None:
    """Reassemble the first handshake message from the records at the start of ``data``."""
    payload = bytearray()
    offset = 0
    while True:
        if len(data) - offset < 5:
            return None
        if data[offset] != _HANDSHAKE:
            raise NotTls("not a TLS handshake record") if offset == 0 else Malformed("record type changed")
        if data[offset + 1] != 3:
            raise Malformed("not a TLS record version")
        length = int.from_bytes(data[offset + 3 : offset + 5], "big")
        if length == 0 or length > 2**14:
            raise Malformed("bad TLS record length")
        if len(data) - offset - 5 < length:
            return None
        payload += data[offset + 5 : offset + 5 + length]
        offset += 5 + length
        if len(payload) >= 4:
            if payload[0] != _CLIENT_HELLO:
                raise Malformed("first handshake message is not a ClientHello")
            size = int.from_bytes(payload[1:4], "big")
            if size + 4 > HELLO_MAX:
                raise Malformed("ClientHello too long")
            if len(payload) >= size + 4:
                return bytes(payload[4 : 4 + size])
        if offset >= HELLO_MAX:
            raise Malformed("ClientHello too long")


class _Reader:
    """Bounds-checked reads over one structure."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise Malformed("length beyond the end of its structure")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def integer(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def vector(self, length_bytes: int) -> _Reader:
        return _Reader(self.take(self.integer(length_bytes)))

    def done(self) -> bool:
        return self.pos == len(self.data)


def _server_name(hello: bytes) -> str | None:
    r = _Reader(hello)
    r.take(2 + 32)  # legacy_version, random
    r.vector(1)  # legacy_session_id
    suites = r.vector(2)
    if suites.done() or len(suites.data) % 2:
        raise Malformed("bad cipher suites")
    r.vector(1)  # legacy_compression_methods
    if r.done():
        return None  # no extensions at all (TLS 1.2 allows it)
    extensions = r.vector(2)
    if not r.done():
        raise Malformed("bytes after the extensions")
    seen: set[int] = set()
    name: str | None = None
    while not extensions.done():
        kind = extensions.integer(2)
        body = extensions.vector(2)
        if kind in seen:
            raise Malformed("an extension repeated")
        seen.add(kind)
        if kind == _SERVER_NAME:
            name = _host_name(body)
    return name


def _host_name(body: _Reader) -> str:
    names = body.vector(2)
    if not body.done() or names.done():
        raise Malformed("bad server_name extension")
    found: str | None = None
    while not names.done():
        kind = names.integer(1)
        value = names.vector(2).data
        if kind != _HOST_NAME:
            continue
        if found is not None:
            raise Malformed("two host names in server_name")
        found = check_host(value)
    if found is None:
        raise Malformed("server_name without a host name")
    return found


def check_host(raw: bytes) -> str:
    """``raw`` as a lower-case DNS host name without trailing dot, or ``Malformed``."""
    try:
        text = raw.decode("ascii").lower()
    except UnicodeDecodeError:
        raise Malformed("non-ASCII host name") from None
    if not 0 < len(text) <= 254 or not _HOSTNAME.match(text):
        raise Malformed("not a host name")
    return text.rstrip(".")


def request_head(data: bytes) -> bytes | None:
    """The head (request line and headers, through the blank line) at the start of ``data``,
    None while incomplete; raises ``Malformed`` when it grows past ``HEAD_MAX``."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if len(data) > HEAD_MAX:
            raise Malformed("request head too long")
        return None
    if end + 4 > HEAD_MAX:
        raise Malformed("request head too long")
    return data[: end + 4]


def http_host(head: bytes) -> str:
    """The host a request head names: its one ``Host`` header (port removed). A request
    target in absolute form must name the same host. Raises ``Malformed``."""
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        raise Malformed("not an HTTP/1.x request line")
    hosts = []
    for line in lines[1:]:
        key, sep, value = line.partition(b":")
        if not sep or key != key.strip() or not key:
            raise Malformed("bad header line")
        if key.lower() == b"host":
            hosts.append(value.strip())
    if len(hosts) != 1:
        raise Malformed("a request needs exactly one Host header")
    host = check_host(_strip_port(hosts[0]))
    target = parts[1]
    if b"://" in target[:16]:
        authority = target.split(b"://", 1)[1].split(b"/", 1)[0]
        if check_host(_strip_port(authority.rpartition(b"@")[2])) != host:
            raise Malformed("request target and Host name different hosts")
    return host


def _strip_port(authority: bytes) -> bytes:
    host, sep, port = authority.rpartition(b":")
    if sep and port.isdigit() and b"]" not in port:
        return host
    return authority
