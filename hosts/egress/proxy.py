"""The egress proxy: where nft sends TCP 80/443 of sandboxes whose policy lists domains or
which hold secrets (docs/network.md, "Egress" and "Secrets").

For each connection: the sandbox is known by its source address, the destination it asked
for by ``SO_ORIGINAL_DST``; the first bytes give the name (TLS SNI, or the ``Host`` of a
plain HTTP request); ``Rules.targets`` decides where it may go, the name being re-resolved
through hostd's upstream resolver, and never to an always-denied address. Then:

* no secret for the name: the bytes read so far and everything after are spliced to the
  target unchanged (TLS stays end to end);
* plain HTTP to a secret's host: placeholders in the request line and headers of the first
  request are replaced, ``Connection: close`` is set so the next request comes on a new
  connection (and is read here again), and the rest is spliced;
* TLS to a secret's host: the proxy completes the handshake itself with a certificate for the
  name from the sandbox's CA, opens its own TLS connection to the target (verified against
  ``DNAH_EGRESS_CA_BUNDLE`` or the host's trust store, for that name), and treats the
  decrypted request like plain HTTP.

A refused plain HTTP request gets a 403 saying why; a refused TLS connection is closed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from contracts.host import SecretGrant
from hosts.egress import sni
from hosts.egress.ca import SandboxCa
from hosts.egress.policy import IPAddress, IPNetwork, Rules, denied
from hosts.egress.resolver import Upstream, bound_socket
from hosts.egress.streams import Pipe, StreamPipe, TlsServerPipe, splice

log = structlog.get_logger("hosts.egress.proxy")

SO_ORIGINAL_DST = 80
FIRST_BYTES_TIMEOUT_S = 30.0
"""How long a client may take to send its ClientHello or request head."""
CONNECT_TIMEOUT_S = 10.0
_CONNECTION_HEADERS = re.compile(rb"^(connection|keep-alive|proxy-connection)\s*:", re.IGNORECASE)


@dataclass(frozen=True)
class Tenant:
    """What the proxy needs of one sandbox."""

    sandbox_id: str
    rules: Rules
    ca: SandboxCa | None


class Refused(Exception):
    pass


class Proxy:
    def __init__(
        self,
        upstream: Upstream,
        tenant_for: Callable[[str], Tenant | None],
        never: Sequence[IPNetwork],
        upstream_tls: ssl.SSLContext,
    ) -> None:
        self._upstream = upstream
        self._tenant_for = tenant_for
        self._never = never
        self._upstream_tls = upstream_tls
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(
            self._accepted, sock=bound_socket(socket.SOCK_STREAM, host, port)
        )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._clients):
            task.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        client = StreamPipe(reader, writer)
        try:
            await self._serve(reader, writer)
        except (
            Refused,
            sni.Malformed,
            OSError,
            TimeoutError,
            ssl.SSLError,
            asyncio.IncompleteReadError,
        ) as exc:
            log.info("egress connection ended", reason=f"{type(exc).__name__}: {exc}")
        finally:
            await client.close()
            self._clients.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        source = writer.get_extra_info("peername")[0]
        original, port = _original_destination(writer.get_extra_info("socket"))
        tenant = self._tenant_for(source)
        if tenant is None:
            raise Refused(f"no sandbox at {source}")
        async with asyncio.timeout(FIRST_BYTES_TIMEOUT_S):
            received, tls, name = await _first_bytes(reader)
        resolved = await self._upstream.resolve(name) if name else []
        allowed = tenant.rules.targets(name, original, resolved)
        targets = [a for a in allowed if not denied(a, self._never) and not is_local(a)]
        if not targets:
            log.info(
                "egress refused",
                sandbox_id=tenant.sandbox_id,
                name=name,
                destination=str(original),
                port=port,
            )
            if not tls:
                await StreamPipe(reader, writer).write(_forbidden(name or str(original)))
            raise Refused(f"{name or original} not allowed")
        secrets = tenant.rules.secrets_for(name) if name else []
        client: Pipe
        if secrets and tls:
            if tenant.ca is None:
                raise Refused("no CA for the sandbox")
            server_side = TlsServerPipe(reader, writer, tenant.ca.server_context(name or ""), received)
            await server_side.handshake()
            upstream = await self._connect(targets, port, name, tls=True)
            client, received = server_side, b""
        else:
            upstream = await self._connect(targets, port, name, tls=False)
            client = StreamPipe(reader, writer)
        try:
            if secrets:
                received = await _read_head(client, received)
                received = substitute(received, secrets)
            log.info(
                "egress connected",
                sandbox_id=tenant.sandbox_id,
                name=name,
                target=str(targets[0]),
                port=port,
                secrets=[s.name for s in secrets],
            )
            if received:
                await upstream.write(received)
            await splice(client, upstream)
        finally:
            await upstream.close()

    async def _connect(
        self, targets: list[IPAddress], port: int, name: str | None, *, tls: bool
    ) -> StreamPipe:
        failure: Exception | None = None
        for address in targets:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    if tls:
                        reader, writer = await asyncio.open_connection(
                            str(address), port, ssl=self._upstream_tls, server_hostname=name
                        )
                    else:
                        reader, writer = await asyncio.open_connection(str(address), port)
                return StreamPipe(reader, writer)
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                failure = exc
        raise Refused(f"no target of {name} answered: {failure}")


def is_local(address: IPAddress) -> bool:
    """Whether ``address`` is one of the host's own (binding to it works only then): the proxy
    connects from the host, where the runtime's nft table does not stand in the way."""
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((str(address), 0))
        except OSError:
            return False
    return True


def _original_destination(sock: socket.socket) -> tuple[ipaddress.IPv4Address, int]:
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port = struct.unpack("!H", raw[2:4])[0]
    return ipaddress.IPv4Address(raw[4:8]), port


async def _first_bytes(reader: asyncio.StreamReader) -> tuple[bytes, bool, str | None]:
    """Read until the ClientHello or the request head is complete: (bytes read, TLS?, name)."""
    received = b""
    while True:
        chunk = await reader.read(16384)
        if not chunk:
            raise Refused("closed before naming a host")
        received += chunk
        if sni.is_tls(received):
            found = sni.client_hello_sni(received)
            if found is not None:
                return received, True, _as_name(found[0])
        else:
            head = sni.request_head(received)
            if head is not None:
                return received, False, _as_name(sni.http_host(head))


def _as_name(host: str | None) -> str | None:
    """An IP literal names no host: such a connection is decided by its address."""
    if host is None:
        return None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host
    return None


async def _read_head(client: Pipe, received: bytes) -> bytes:
    while sni.request_head(received) is None:
        chunk = await client.read()
        if not chunk:
            raise Refused("closed before a complete request head")
        received += chunk
    return received


def substitute(data: bytes, secrets: Sequence[SecretGrant]) -> bytes:
    """Replace the placeholders of ``secrets`` in the request head at the start of ``data``
    (the body after it is left alone) and make the request the connection's last. A value
    with a line break is never written into a header: its placeholder stays."""
    head = sni.request_head(data)
    assert head is not None
    body = data[len(head) :]
    text = head
    for secret in secrets:
        value = secret.value.encode()
        if b"\r" in value or b"\n" in value:
            log.warning("secret not substituted: its value has a line break", secret=secret.name)
            continue
        text = text.replace(secret.placeholder.encode(), value)
    lines = [line for line in text[:-4].split(b"\r\n") if not _CONNECTION_HEADERS.match(line)]
    return b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n" + body


def _forbidden(what: str) -> bytes:
    body = f"dnah: this sandbox's egress policy does not allow {what}\n".encode()
    return (
        b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nConnection: close\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


def upstream_context(ca_bundle: str | None) -> ssl.SSLContext:
    """Verification of the servers the proxy talks TLS to: the host's trust store, or only the
    given bundle (``DNAH_EGRESS_CA_BUNDLE``)."""
    context = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else ssl.create_default_context()
    context.set_alpn_protocols(["http/1.1"])
    return context
