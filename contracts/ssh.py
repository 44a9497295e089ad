"""SSH access: the public DTOs (Daytona's and ours) and the SSH gateway ↔ core wire types.

Public routes (docs/ssh.md): Daytona's ``POST /sandbox/{id}/ssh-access?expiresInMinutes=``
(``DaytonaSshAccess``), ``DELETE /sandbox/{id}/ssh-access[?token=]``, ``GET
/sandbox/ssh-access/validate?token=`` (``DaytonaSshValidation``); native ``POST
/v1/sandboxes/{id}/ssh-access`` (``SshAccessCreate`` → ``SshAccess``), ``POST|GET
/v1/sandboxes/{id}/ssh-keys`` (``SshKeysUpdate`` → ``SshKeys``).

Internal routes, for the SSH gateway only (``Authorization: Bearer <DNAH_SSH_GATEWAY_TOKEN>``;
the HTTP gateway never forwards ``/internal/*``): ``POST /internal/ssh/auth``
(``SshAuthRequest`` → ``SshAuthResult``, 403 when refused) and three WebSocket relays,
``/internal/ssh/sandboxes/{id}/pty``, ``…/proc`` and ``…/ports/{port}/tunnel``, which carry
hostd's ``/pty``, ``/proc`` and port tunnel messages unchanged (``contracts/host.py``). A relay
the core cannot open closes with ``4000 + status`` (4403 bad token, 4404 no such sandbox,
4409 not started, 4502 host unreachable) and the reason.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

SSH_TOKEN_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"  # noqa: S105 (an alphabet)
"""A token is used as an SSH user name, so it is letters and digits only."""
SSH_TOKEN_LENGTH = 32
DEFAULT_EXPIRES_MINUTES = 60
MAX_EXPIRES_MINUTES = 60 * 24 * 7
MAX_KEYS = 32
"""Public keys one sandbox may authorize."""

PublicKeyLine = Annotated[str, msgspec.Meta(min_length=1, max_length=16 * 1024)]
"""One ``authorized_keys``-style line: ``<type> <base64> [comment]``."""
ExpiresMinutes = Annotated[int, msgspec.Meta(ge=1, le=MAX_EXPIRES_MINUTES)]


class DaytonaSshAccess(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Daytona's ``SshAccessDto``."""

    id: str
    sandbox_id: str
    token: str
    expires_at: str
    created_at: str
    updated_at: str
    ssh_command: str


class DaytonaSshValidation(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Daytona's ``SshAccessValidationDto``: ``sandbox_id`` is empty when not valid."""

    valid: bool
    sandbox_id: str


class SshAccessCreate(msgspec.Struct, frozen=True, kw_only=True):
    expires_in_minutes: ExpiresMinutes = DEFAULT_EXPIRES_MINUTES


class SshAccess(msgspec.Struct, frozen=True, kw_only=True):
    """A new token; ``token`` is shown only here. ``ssh_command`` connects as printed."""

    id: str
    sandbox_id: str
    token: str
    expires_at: str
    created_at: str
    ssh_command: str
    host: str
    port: int


class SshKeysUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """The sandbox's whole set of authorized keys: it replaces the previous set (rotation)."""

    keys: Annotated[list[PublicKeyLine], msgspec.Meta(max_length=MAX_KEYS)]


class SshKey(msgspec.Struct, frozen=True, kw_only=True):
    fingerprint: str
    """OpenSSH's SHA256 fingerprint (``SHA256:…``)."""
    public_key: str
    created_at: str


class SshKeys(msgspec.Struct, frozen=True, kw_only=True):
    sandbox_id: str
    keys: list[SshKey]
    ssh_command: str
    """``ssh -p PORT SANDBOX_ID@HOST``: with one of the keys, the user name is the sandbox id."""


class SshAuthRequest(msgspec.Struct, frozen=True, kw_only=True):
    """The SSH gateway asks: is ``token`` a live token (then for which sandbox), or is
    ``public_key`` (OpenSSH format, no comment needed) authorized for ``sandbox_id``?"""

    token: str | None = None
    sandbox_id: str | None = None
    public_key: str | None = None


class SshAuthResult(msgspec.Struct, frozen=True, kw_only=True):
    sandbox_id: str
