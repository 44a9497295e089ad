"""A server run inside a sandbox by the preview tests (stdlib only: the sandbox's python3).

    python3 preview_server.py PORT

- ``GET /echo…``: JSON of what arrived (method, path with query, headers), so a test sees
  exactly what the preview path passed on;
- ``GET /sse``: three server-sent events, a second apart;
- ``GET /ws``: a WebSocket echo (text and binary; a close is answered with the same code);
- ``GET /bytes/N``: N zero bytes (the preview benchmark's downloads).
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/sse"):
            self._sse()
        elif self.path.startswith("/bytes/"):
            self._bytes(int(self.path.removeprefix("/bytes/")))
        elif self.path.startswith("/ws") and self.headers.get("upgrade", "").lower() == "websocket":
            self._websocket()
        else:
            self._echo()

    do_POST = do_PUT = do_DELETE = do_GET

    def _echo(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        answer = json.dumps(
            {
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode("latin-1"),
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.send_header("set-cookie", "app=1; Path=/")
        self.end_headers()
        self.wfile.write(answer)

    def _bytes(self, size: int) -> None:
        self.send_response(200)
        self.send_header("content-type", "application/octet-stream")
        self.send_header("content-length", str(size))
        self.end_headers()
        chunk = bytes(65536)
        while size > 0:
            self.wfile.write(chunk[: min(size, len(chunk))])
            size -= len(chunk)

    def _sse(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()
        for n in range(3):
            self.wfile.write(f"data: event {n}\n\n".encode())
            self.wfile.flush()
            time.sleep(1)
        self.close_connection = True

    def _websocket(self) -> None:
        key = self.headers["sec-websocket-key"].encode()
        accept = base64.b64encode(hashlib.sha1(key + _WS_GUID).digest()).decode()
        self.send_response(101)
        self.send_header("upgrade", "websocket")
        self.send_header("connection", "Upgrade")
        self.send_header("sec-websocket-accept", accept)
        protocols = self.headers.get("sec-websocket-protocol")
        if protocols:
            self.send_header("sec-websocket-protocol", protocols.split(",")[0].strip())
        self.end_headers()
        self.close_connection = True
        while True:
            opcode, payload = self._frame()
            if opcode == 8:  # close: answer with the same code
                self._send(8, payload[:2])
                return
            if opcode in (1, 2):
                self._send(opcode, payload)
            elif opcode == 9:  # ping
                self._send(10, payload)

    def _frame(self) -> tuple[int, bytes]:
        head = self.rfile.read(2)
        if len(head) < 2:
            return 8, b""
        opcode, size = head[0] & 0x0F, head[1] & 0x7F
        if size == 126:
            size = struct.unpack("!H", self.rfile.read(2))[0]
        elif size == 127:
            size = struct.unpack("!Q", self.rfile.read(8))[0]
        mask = self.rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
        data = self.rfile.read(size)
        return opcode, bytes(b ^ mask[i % 4] for i, b in enumerate(data))

    def _send(self, opcode: int, payload: bytes) -> None:
        size = len(payload)
        if size < 126:
            head = struct.pack("!BB", 0x80 | opcode, size)
        elif size < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 126, size)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 127, size)
        self.wfile.write(head + payload)
        self.wfile.flush()


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
