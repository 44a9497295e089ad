"""What every envd handler gets: the core's services, the request's headers, the sandbox the
request was admitted for (``app.py``), and the REST error body (``{"code": <status>, "message"}``)."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import msgspec

from core.db.sandboxes import SandboxRecord
from core.services.processes import ProcessService
from core.services.sandboxes import SandboxService
from core.services.toolbox.files import FileService
from core.services.toolbox.watch import WatchService
from guard.reply import Send

E2B_DEFAULT_USER = "user"
"""E2B's name for a sandbox's own account, whatever it is called in the template."""


class ErrorBody(msgspec.Struct):
    """envd's REST error, as E2B's SDK reads it."""

    code: int
    message: str


class Envd:
    def __init__(self, state: Any, headers: dict[bytes, bytes]) -> None:
        self.state = state
        self.headers = headers
        self.sandbox: SandboxRecord

    @property
    def org_id(self) -> str:
        return self.sandbox.org_id

    @property
    def sandbox_id(self) -> str:
        return self.sandbox.id

    @property
    def sandboxes(self) -> SandboxService:
        service: SandboxService = self.state.sandboxes
        return service

    @property
    def files(self) -> FileService:
        service: FileService = self.state.files
        return service

    @property
    def watches(self) -> WatchService:
        service: WatchService = self.state.watches
        return service

    @property
    def processes(self) -> ProcessService:
        service: ProcessService = self.state.processes
        return service

    @property
    def user(self) -> str | None:
        """The account E2B's SDK asks a call to run as (``user=``, sent as ``Authorization:
        Basic`` of ``name:``); None for the sandbox's own: no such header (the gateway may have
        put a ``Bearer`` of its own there), or E2B's name for it, ``user``.

        Raises:
            ValueError: a Basic credential that is not base64 of ``name:``.
        """
        scheme, _, credential = self.headers.get(b"authorization", b"").partition(b" ")
        if scheme.lower() != b"basic":
            return None
        try:
            name, colon, _password = (
                base64.b64decode(credential.strip(), validate=True).decode().partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            name, colon = "", ""
        if not colon or not name:
            raise ValueError("Authorization: Basic must carry base64 of 'user:'")
        return None if name == E2B_DEFAULT_USER else name


async def rest_error(send: Send, status: int, message: str) -> None:
    body = msgspec.json.encode(ErrorBody(status, message))
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
