"""Just enough of the DNS wire format (RFC 1035) for hostd's resolver and proxy: the question
of a query, a REFUSED answer to it, an A query of our own and the addresses its answer gives.
Everything parsed comes from a sandbox or an upstream server, so every read is bounded and a
malformed message is ``DnsError``."""

from __future__ import annotations

import ipaddress
import secrets
import struct

A, AAAA, CNAME = 1, 28, 5
IN = 1
REFUSED, SERVFAIL = 5, 2
_MAX_POINTERS = 32


class DnsError(ValueError):
    pass


class Question:
    __slots__ = ("end", "id", "name", "qtype")

    def __init__(self, id_: int, name: str, qtype: int, end: int) -> None:
        self.id, self.name, self.qtype, self.end = id_, name, qtype, end


def question(message: bytes) -> Question:
    """The one question of a query (header QR clear, QDCOUNT 1)."""
    if len(message) < 12:
        raise DnsError("shorter than a header")
    id_, flags, qdcount = struct.unpack("!HHH", message[:6])
    if flags & 0x8000 or qdcount != 1:
        raise DnsError("not a query with one question")
    name, pos = _name(message, 12)
    if pos + 4 > len(message):
        raise DnsError("question cut short")
    qtype = struct.unpack("!H", message[pos : pos + 2])[0]
    return Question(id_, name, qtype, pos + 4)


def answer_error(query: bytes, q: Question, rcode: int) -> bytes:
    """A response to ``query`` with ``rcode`` and its question echoed, no records."""
    flags = struct.unpack("!H", query[2:4])[0]
    reply_flags = 0x8000 | (flags & 0x7900) | 0x0080 | rcode  # QR, opcode, RD kept, RA, rcode
    return struct.pack("!HHHHHH", q.id, reply_flags, 1, 0, 0, 0) + query[12 : q.end]


def build_query(name: str, qtype: int = A) -> tuple[int, bytes]:
    id_ = secrets.randbelow(65536)
    labels = b"".join(bytes([len(p)]) + p.encode("ascii") for p in name.rstrip(".").split(".") if p)
    return id_, struct.pack("!HHHHHH", id_, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack(
        "!HH", qtype, IN
    )


def addresses(message: bytes, id_: int, name: str) -> list[ipaddress.IPv4Address]:
    """The A records an answer gives for ``name`` (following CNAMEs within the answer)."""
    if len(message) < 12:
        raise DnsError("shorter than a header")
    rid, flags, qdcount, ancount = struct.unpack("!HHHH", message[:8])
    if rid != id_ or not flags & 0x8000:
        raise DnsError("not the answer to our query")
    if flags & 0x000F:
        return []
    pos = 12
    for _ in range(qdcount):
        _, pos = _name(message, pos)
        pos += 4
    wanted = {name.rstrip(".").lower()}
    found: list[ipaddress.IPv4Address] = []
    records = []
    for _ in range(ancount):
        owner, pos = _name(message, pos)
        if pos + 10 > len(message):
            raise DnsError("record cut short")
        rtype, _, _, length = struct.unpack("!HHIH", message[pos : pos + 10])
        pos += 10
        if pos + length > len(message):
            raise DnsError("record data cut short")
        records.append((owner, rtype, pos, length))
        pos += length
    for _ in range(len(records)):  # CNAME chains, in any order, at most one hop per record
        for owner, rtype, start, _length in records:
            if owner in wanted and rtype == CNAME:
                wanted.add(_name(message, start)[0])
    for owner, rtype, start, length in records:
        if owner in wanted and rtype == A and length == 4:
            found.append(ipaddress.IPv4Address(message[start : start + 4]))
    return found


def _name(message: bytes, pos: int) -> tuple[str, int]:
    """The (lower-case) name at ``pos`` and the position after it, pointers followed."""
    labels: list[str] = []
    end: int | None = None
    for _ in range(_MAX_POINTERS):
        while True:
            if pos >= len(message):
                raise DnsError("name cut short")
            length = message[pos]
            if length & 0xC0 == 0xC0:
                if pos + 1 >= len(message):
                    raise DnsError("pointer cut short")
                if end is None:
                    end = pos + 2
                pos = ((length & 0x3F) << 8) | message[pos + 1]
                break
            if length & 0xC0:
                raise DnsError("unknown label type")
            if length == 0:
                name = ".".join(labels)
                if len(name) > 253:
                    raise DnsError("name too long")
                return name, end if end is not None else pos + 1
            label = message[pos + 1 : pos + 1 + length]
            if len(label) != length:
                raise DnsError("label cut short")
            labels.append(label.decode("latin-1").lower())
            pos += 1 + length
    raise DnsError("too many compression pointers")
