"""The HTTP side: E2B's code-interpreter API on a threading stdlib server.

Routes (what ``e2b_code_interpreter`` 2.11.5 calls):

- ``GET /health`` → 200 ``OK``;
- ``POST /execute`` ``{code, context_id?, language?, env_vars?}`` → 200, an NDJSON stream
  (chunked) of the cell's events (``events``); a context and a language together, an
  unknown language, or a body that is not that JSON are 400, an unknown context 404;
- ``POST /contexts`` ``{language?, cwd?}`` → the new context ``{id, language, cwd}``;
  ``GET /contexts`` → every context; ``DELETE /contexts/{id}`` → 204;
  ``POST /contexts/{id}/restart`` → 204 (a fresh kernel).

Errors are ``text/plain`` (the SDK quotes the body in its exception). HTTP/1.1 keep-alive.
"""

from __future__ import annotations

import json
import select
import socket
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from guest.code_interpreter import events
from guest.code_interpreter.events import line
from guest.code_interpreter.kernels import ContextError, Contexts

MAX_BODY = 16 * 2**20
"""Largest request body accepted (code is text; 16 MiB is far past any cell)."""


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], contexts: Contexts) -> None:
        super().__init__(address, Handler)
        self.contexts = contexts


class _StreamSink:
    """An execution's events as chunks of the response; knows when the client hung up."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._closed = False

    def send(self, event: dict[str, Any]) -> bool:
        if self._closed:
            return False
        data = line(event)
        try:
            self._handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self._handler.wfile.flush()
        except OSError:
            self._closed = True
        return not self._closed

    def gone(self) -> bool:
        """True when the client closed its side: the socket reads as EOF (a pipelined next
        request would read as data, not EOF, so it does not count)."""
        if self._closed:
            return True
        sock: socket.socket = self._handler.connection
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable and sock.recv(1, socket.MSG_PEEK) == b"":
                self._closed = True
        except OSError:
            self._closed = True
        return self._closed

    def finish(self) -> None:
        if not self._closed:
            try:
                self._handler.wfile.write(b"0\r\n\r\n")
                self._handler.wfile.flush()
            except OSError:
                self._closed = True


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a sandbox service's stderr is not read by anyone."""

    # routing

    def do_GET(self) -> None:
        path = self._path()
        if path == "/health":
            self._text(HTTPStatus.OK, "OK")
        elif path == "/contexts":
            self._json(HTTPStatus.OK, [c.describe() for c in self.server.contexts.list()])
        else:
            self._text(HTTPStatus.NOT_FOUND, f"no route {path}")

    def do_POST(self) -> None:
        path = self._path()
        parts = path.strip("/").split("/")
        try:
            body = self._body()
            if path == "/execute":
                self._execute(body)
            elif path == "/contexts":
                context = self.server.contexts.create(_opt_str(body, "language"), _opt_str(body, "cwd"))
                self._json(HTTPStatus.OK, context.describe())
            elif len(parts) == 3 and parts[0] == "contexts" and parts[2] == "restart":
                self.server.contexts.get(parts[1]).restart()
                self._empty(HTTPStatus.NO_CONTENT)
            else:
                self._text(HTTPStatus.NOT_FOUND, f"no route {path}")
        except ContextError as exc:
            self._text(HTTPStatus(exc.status), str(exc))

    def do_DELETE(self) -> None:
        parts = self._path().strip("/").split("/")
        if len(parts) != 2 or parts[0] != "contexts":
            self._text(HTTPStatus.NOT_FOUND, f"no route {self._path()}")
            return
        try:
            self.server.contexts.remove(parts[1])
        except ContextError as exc:
            self._text(HTTPStatus(exc.status), str(exc))
            return
        self._empty(HTTPStatus.NO_CONTENT)

    # /execute

    def _execute(self, body: dict[str, Any]) -> None:
        code = body.get("code")
        if not isinstance(code, str):
            raise ContextError(400, "code must be a string")
        context_id, language = _opt_str(body, "context_id"), _opt_str(body, "language")
        if context_id and language:
            raise ContextError(400, "give context_id or language, not both")
        env_vars = body.get("env_vars") or None
        if env_vars is not None and not (
            isinstance(env_vars, dict) and all(isinstance(v, str) for v in env_vars.values())
        ):
            raise ContextError(400, "env_vars must map names to strings")
        contexts = self.server.contexts
        context = contexts.get(context_id) if context_id else contexts.default(language)
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        sink = _StreamSink(self)
        try:
            context.execute(code, env_vars, sink)
        except Exception as exc:  # the status is sent: the failure can only be an event now
            sink.send(events.error(type(exc).__name__, str(exc)))
        sink.finish()
        if sink.gone():
            self.close_connection = True

    # helpers

    def _path(self) -> str:
        return self.path.split("?", 1)[0]

    def _body(self) -> dict[str, Any]:
        length = self.headers.get("Content-Length")
        if length is None:
            if self.headers.get("Transfer-Encoding"):
                self.close_connection = True
                raise ContextError(411, "a body needs a Content-Length")
            return {}
        size = int(length) if length.isdigit() else -1
        if not 0 <= size <= MAX_BODY:
            self.close_connection = True
            raise ContextError(400 if size < 0 else 413, "bad or oversized Content-Length")
        raw = self.rfile.read(size)
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise ContextError(400, f"the body is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise ContextError(400, "the body must be a JSON object")
        return body

    def _json(self, status: HTTPStatus, value: object) -> None:
        self._send(status, json.dumps(value).encode(), "application/json")

    def _text(self, status: HTTPStatus, text: str) -> None:
        self._send(status, text.encode(), "text/plain; charset=utf-8")

    def _empty(self, status: HTTPStatus) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send(self, status: HTTPStatus, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _opt_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise ContextError(400, f"{key} must be a string")
    return value or None
