"""hostd's resolver for sandboxes: UDP and TCP DNS on the bridge's gateway address, forwarding
the questions a sandbox's policy allows to the upstream server (``DNAH_DNS_UPSTREAM``) and
answering REFUSED to the others (``Rules.resolves``) and to addresses hostd knows no sandbox
at. The nft table redirects every port-53 packet from the bridge here, whatever server the
sandbox addressed, so this is the only DNS a sandbox has.

``Upstream`` is also the proxy's own resolver: it re-resolves the names connections ask for.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from hosts.egress import dns
from hosts.egress.policy import Rules

log = structlog.get_logger("hosts.egress.resolver")

_IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
_TCP_IDLE_S = 10.0


def bound_socket(kind: socket.SocketKind, host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` even before the bridge holds ``host`` (IP_FREEBIND):
    hostd starts its services before the runtime creates the bridge at its first boot."""
    sock = socket.socket(socket.AF_INET, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_IP, _IP_FREEBIND, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class Upstream:
    """The DNS server hostd asks: ``host:port``, UDP first, TCP when an answer is truncated."""

    def __init__(self, host: str, port: int = 53, *, timeout: float = 5.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout

    async def exchange(self, query: bytes) -> bytes:
        reply = await self.exchange_udp(query)
        if len(reply) > 2 and reply[2] & 0x02:  # TC
            return await self.exchange_tcp(query)
        return reply

    async def exchange_udp(self, query: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        answered: asyncio.Future[bytes] = loop.create_future()

        class Protocol(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: object) -> None:
                if not answered.done() and data[:2] == query[:2]:
                    answered.set_result(data)

            def error_received(self, exc: Exception) -> None:
                if not answered.done():
                    answered.set_exception(exc)

        transport, _ = await loop.create_datagram_endpoint(Protocol, remote_addr=(self.host, self.port))
        try:
            transport.sendto(query)
            return await asyncio.wait_for(answered, self.timeout)
        finally:
            transport.close()

    async def exchange_tcp(self, query: bytes) -> bytes:
        async with asyncio.timeout(self.timeout):
            reader, writer = await asyncio.open_connection(self.host, self.port)
            try:
                writer.write(struct.pack("!H", len(query)) + query)
                size = struct.unpack("!H", await reader.readexactly(2))[0]
                return await reader.readexactly(size)
            finally:
                writer.close()

    async def resolve(self, name: str) -> list[ipaddress.IPv4Address]:
        """The A records of ``name``; empty when it has none or the server fails."""
        id_, query = dns.build_query(name)
        try:
            return dns.addresses(await self.exchange(query), id_, name)
        except (OSError, TimeoutError, dns.DnsError) as exc:
            log.warning("upstream resolution failed", name=name, error=str(exc))
            return []


class Resolver:
    """The sandboxes' DNS server; ``rules_for(address)`` gives a sandbox's rules by its address."""

    def __init__(self, upstream: Upstream, rules_for: Callable[[str], Rules | None]) -> None:
        self._upstream = upstream
        self._rules_for = rules_for
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        resolver = self

        class Protocol(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                resolver._spawn(resolver._udp_query(data, addr))

        self._udp, _ = await loop.create_datagram_endpoint(
            Protocol, sock=bound_socket(socket.SOCK_DGRAM, host, port)
        )
        self._tcp = await asyncio.start_server(
            self._tcp_client, sock=bound_socket(socket.SOCK_STREAM, host, port)
        )

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _udp_query(self, query: bytes, addr: tuple[str, int]) -> None:
        reply = await self.answer(addr[0], query, tcp=False)
        if reply is not None and self._udp is not None:
            self._udp.sendto(reply, addr)

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        source = writer.get_extra_info("peername")[0]
        try:
            while True:
                async with asyncio.timeout(_TCP_IDLE_S):
                    size = struct.unpack("!H", await reader.readexactly(2))[0]
                    query = await reader.readexactly(size)
                reply = await self.answer(source, query, tcp=True)
                if reply is None:
                    break
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def answer(self, source: str, query: bytes, *, tcp: bool) -> bytes | None:
        """The reply to ``query`` from ``source``; None drops it (it is no DNS query)."""
        try:
            q = dns.question(query)
        except dns.DnsError:
            return None
        rules = self._rules_for(source)
        if rules is None or not rules.resolves(q.name):
            log.info("dns refused", source=source, name=q.name)
            return dns.answer_error(query, q, dns.REFUSED)
        try:
            if tcp:
                return await self._upstream.exchange_tcp(query)
            return await self._upstream.exchange_udp(query)
        except (OSError, TimeoutError) as exc:
            log.warning("upstream dns failed", name=q.name, error=str(exc))
            return dns.answer_error(query, q, dns.SERVFAIL)
