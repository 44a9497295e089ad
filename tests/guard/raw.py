"""Raw HTTP/1.1 over a socket, for requests no HTTP client would send (slow, cut, malformed),
optionally from another loopback address (the whole 127/8 is loopback)."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Any


@dataclass
class Answer:
    status: int | None
    """None: the server closed the connection without answering."""
    headers: dict[str, str]
    body: bytes
    closed: bool
    """The server closed the connection after (or instead of) answering."""

    def json(self) -> Any:
        return json.loads(self.body)


def connect(
    port: int, *, source: str = "127.0.0.1", host: str = "127.0.0.1", timeout_s: float = 30
) -> socket.socket:
    sock = socket.socket()
    sock.settimeout(timeout_s)
    sock.bind((source, 0))
    sock.connect((host, port))
    return sock


def read_answer(sock: socket.socket) -> Answer:
    """Everything until the server closes the connection or one answer is complete."""
    data = b""
    closed = False
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            closed = True
            break
        data += chunk
        answer = _parse(data, closed=False)
        if answer is not None:
            break
    return _parse(data, closed=closed) or Answer(None, {}, data, True)


def _parse(data: bytes, *, closed: bool) -> Answer | None:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = headers.get("content-length")
    if length is not None and len(body) < int(length):
        return None
    if length is None and not closed:
        return None
    return Answer(int(lines[0].split()[1]), headers, body, closed or headers.get("connection") == "close")


def request(port: int, data: bytes, *, source: str = "127.0.0.1", timeout_s: float = 30) -> Answer:
    with connect(port, source=source, timeout_s=timeout_s) as sock:
        sock.sendall(data)
        return read_answer(sock)


def post_head(
    path: str, *, length: int | None = None, content_type: str | None = None, extra: str = ""
) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: test"]
    if length is None:
        lines.append("Transfer-Encoding: chunked")
    else:
        lines.append(f"Content-Length: {length}")
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()
