"""Servers that run inside a sandbox for the port-access tests (stdlib only: the template's
python3 runs this file as it is).

``python3 _port_servers.py HTTP_PORT ECHO_PORT DIR`` serves, on 127.0.0.1 only (so a server
reachable through hostd proves the connection is made inside the sandbox's netns):

- HTTP on ``HTTP_PORT``: ``/echo`` answers JSON of what arrived (method, target, headers,
  body length and SHA-256); ``/big?n=N`` sends N bytes (``Content-Length``), the first MiB at
  once and the rest only once ``DIR/big-go`` exists; ``/events`` sends server-sent events
  (chunked), event ``i`` only once ``DIR/go-i`` exists, up to ``/events?n=N``; ``/upload``
  reads its body as it comes, keeping the count so far in ``DIR/received``; ``/broken``
  announces 1000 bytes, sends 9 and closes; an upgrade to
  a WebSocket echoes every message (text as text, binary as binary), picks the client's
  first subprotocol, and answers a close with the same code and reason (a text ``close
  CODE`` makes it close with CODE itself, ``headers?`` gets the target and headers of the
  upgrade request as JSON).
- a TCP echo on ``ECHO_PORT``: every byte back; a line ``bye`` closes the connection.

``DIR/ready`` appears once both listen.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

MIB = 1024 * 1024
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def wait_file(path: str) -> None:
    while not os.path.exists(path):
        time.sleep(0.01)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    directory = "."

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def _any(self) -> None:
        if self.headers.get("upgrade", "").lower() == "websocket":
            self._websocket()
            return
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path == "/big":
            self._big(int(query["n"][0]))
        elif url.path == "/events":
            self._events(int(query.get("n", ["3"])[0]))
        elif url.path == "/upload":
            self._upload()
        elif url.path == "/broken":
            self.send_response(200)
            self.send_header("content-length", "1000")
            self.end_headers()
            self.wfile.write(b"only this")
            self.wfile.flush()
            self.close_connection = True
        else:
            body = self._body()
            answer = json.dumps(
                {
                    "method": self.command,
                    "target": self.path,
                    "headers": [[k.lower(), v] for k, v in self.headers.items()],
                    "length": len(body),
                    "sha256": hashlib.sha256(body).hexdigest(),
                }
            ).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(answer)))
            self.send_header("x-served-by", "sandbox")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(answer)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _any

    def _big(self, n: int) -> None:
        self.send_response(200)
        self.send_header("content-type", "application/octet-stream")
        self.send_header("content-length", str(n))
        self.end_headers()
        block = bytes(range(256)) * (MIB // 256)
        sent = 0
        while sent < n:
            if sent == MIB:
                wait_file(os.path.join(self.directory, "big-go"))
            piece = block[: min(MIB, n - sent)]
            self.wfile.write(piece)
            sent += len(piece)

    def _upload(self) -> None:
        """Reads a Content-Length body, writing how much has arrived to DIR/received."""
        left, total = int(self.headers["content-length"]), 0
        progress = os.path.join(self.directory, "received")
        while left:
            chunk = self.rfile.read1(min(left, 65536))
            if not chunk:
                break
            left, total = left - len(chunk), total + len(chunk)
            with open(progress + ".tmp", "w") as f:
                f.write(str(total))
            os.replace(progress + ".tmp", progress)
        self.send_response(200)
        self.send_header("content-length", str(len(str(total))))
        self.end_headers()
        self.wfile.write(str(total).encode())

    def _events(self, n: int) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for i in range(n):
            wait_file(os.path.join(self.directory, f"go-{i}"))
            event = f"id: {i}\ndata: event {i}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.close_connection = True

    def _websocket(self) -> None:
        key = self.headers["sec-websocket-key"].encode()
        accept = base64.b64encode(hashlib.sha1(key + _WS_GUID).digest()).decode()
        self.send_response(101)
        self.send_header("upgrade", "websocket")
        self.send_header("connection", "Upgrade")
        self.send_header("sec-websocket-accept", accept)
        offered = [p.strip() for p in self.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
        if offered:
            self.send_header("sec-websocket-protocol", offered[0])
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        while True:
            opcode, payload = self._frame()
            if opcode == 8:
                self._send_frame(8, payload)
                return
            if opcode == 1 and payload.startswith(b"close "):
                code = int(payload.split()[1])
                self._send_frame(8, struct.pack("!H", code) + b"server says bye")
                self._frame()  # the client's answer
                return
            if opcode == 1 and payload == b"headers?":
                seen = [[k.lower(), v] for k, v in self.headers.items()]
                self._send_frame(1, json.dumps({"target": self.path, "headers": seen}).encode())
            elif opcode in (1, 2):
                self._send_frame(opcode, payload)
            elif opcode == 9:
                self._send_frame(10, payload)

    def _frame(self) -> tuple[int, bytes]:
        head = self.rfile.read(2)
        if len(head) < 2:
            return 8, b""
        opcode, length = head[0] & 0x0F, head[1] & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self.rfile.read(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self.rfile.read(8))
        mask = self.rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
        data = self.rfile.read(length)
        return opcode, bytes(b ^ mask[i % 4] for i, b in enumerate(data))

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
        self.wfile.write(head + payload)
        self.wfile.flush()


def echo(port: int) -> socket.socket:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen()

    def serve(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                if data.strip() == b"bye":
                    return
                conn.sendall(data)

    def accept() -> None:
        while True:
            conn, _ = server.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return server


def main() -> None:
    http_port, echo_port, directory = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    Handler.directory = directory
    httpd = ThreadingHTTPServer(("127.0.0.1", http_port), Handler)
    httpd.daemon_threads = True
    echo(echo_port)
    open(os.path.join(directory, "ready"), "w").close()
    httpd.serve_forever()


if __name__ == "__main__":
    main()
