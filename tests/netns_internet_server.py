"""The servers of the stand-in internet (``tests/netns_internet.py``), run inside its network
namespace (``python -m tests.netns_internet_server <config.json>``, under ``ip netns exec``).

On every address of the config it serves: HTTP on 80 and HTTPS on 443 (one certificate for
every test name, signed by the test's CA), each answering with JSON saying which address
took the request and what the request's line and headers were; a TCP echo on 7000; a UDP
sink on 7001 whose payloads (one line each) a TCP connection to 7002 reads back. On the
resolver address, DNS over UDP and TCP answering A records from the config's table (NXDOMAIN otherwise).
Prints ``ready`` once everything listens. Stdlib only besides the config's files.
"""

from __future__ import annotations

import json
import socket
import socketserver
import ssl
import struct
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = json.dumps(
            {
                "served_by": self.connection.getsockname()[0],
                "line": self.requestline,
                "headers": dict(self.headers.items()),
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


class TlsServer(ThreadingHTTPServer):
    context: ssl.SSLContext

    def get_request(self) -> tuple[socket.socket, object]:
        sock, addr = super().get_request()
        sock.settimeout(10)
        try:
            return self.context.wrap_socket(sock, server_side=True), addr
        except (OSError, ssl.SSLError):
            sock.close()
            raise


class EchoTcp(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


class ThreadingTcp(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


RECEIVED: list[bytes] = []


def udp_sink(address: str) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, 7001))
    while True:
        RECEIVED.append(sock.recv(4096))


class Received(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.sendall(b"".join(payload + b"\n" for payload in list(RECEIVED)))


def dns_server(address: str, table: dict[str, str]) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, 53))
    while True:
        query, peer = sock.recvfrom(4096)
        try:
            reply = answer(query, table)
        except (IndexError, struct.error, UnicodeDecodeError):
            continue
        sock.sendto(reply, peer)


class DnsTcp(socketserver.BaseRequestHandler):
    table: dict[str, str] = {}

    def handle(self) -> None:
        size = struct.unpack("!H", self.request.recv(2))[0]
        query = b""
        while len(query) < size and (chunk := self.request.recv(size - len(query))):
            query += chunk
        reply = answer(query, self.table)
        self.request.sendall(struct.pack("!H", len(reply)) + reply)


def answer(query: bytes, table: dict[str, str]) -> bytes:
    id_, flags = struct.unpack("!HH", query[:4])
    pos, labels = 12, []
    while query[pos]:
        labels.append(query[pos + 1 : pos + 1 + query[pos]].decode().lower())
        pos += 1 + query[pos]
    qtype = struct.unpack("!H", query[pos + 1 : pos + 3])[0]
    question = query[12 : pos + 5]
    address = table.get(".".join(labels))
    if address is None:
        return struct.pack("!HHHHHH", id_, 0x8183 | (flags & 0x0100), 1, 0, 0, 0) + question
    records = b""
    if qtype == 1:
        records = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 5, 4) + socket.inet_aton(address)
    count = 1 if records else 0
    return struct.pack("!HHHHHH", id_, 0x8180 | (flags & 0x0100), 1, count, 0, 0) + question + records


def main() -> None:
    with open(sys.argv[1]) as file:
        config = json.load(file)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(config["cert"], config["key"])
    servers: list[socketserver.BaseServer] = []
    for address in config["addresses"]:
        servers.append(ThreadingHTTPServer((address, 80), Echo))
        tls = TlsServer((address, 443), Echo)
        tls.context = context
        servers.append(tls)
        servers.append(ThreadingTcp((address, 7000), EchoTcp))
        servers.append(ThreadingTcp((address, 7002), Received))
        threading.Thread(target=udp_sink, args=(address,), daemon=True).start()
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    threading.Thread(target=dns_server, args=(config["dns"], config["names"]), daemon=True).start()
    DnsTcp.table = config["names"]
    dns_tcp = ThreadingTcp((config["dns"], 53), DnsTcp)
    threading.Thread(target=dns_tcp.serve_forever, daemon=True).start()
    print("ready", flush=True)
    sys.stdin.read()  # until the test closes our stdin


if __name__ == "__main__":
    main()
