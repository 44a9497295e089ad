"""Clients ↔ dnah: preview URLs (docs/network.md, "Preview URLs and tokens"), in both shapes.

Native: ``POST/GET /v1/sandboxes/{id}/expose``, ``DELETE /v1/sandboxes/{id}/expose/{port}``,
``PUT /v1/sandboxes/{id}/preview``. Daytona: ``GET /sandbox/{id}/ports/{port}/preview-url``,
``GET …/signed-preview-url?expiresInSeconds=``, ``POST …/signed-preview-url/{token}/expire``,
``POST /sandbox/{id}/public/{bool}`` — with the fields the SDK's ``PortPreviewUrl`` and
``SignedPortPreviewUrl`` require.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from contracts.fields import Positive

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]


class Expose(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/sandboxes/{id}/expose``: the port gets a token of its own (a new one each
    time), or with ``public`` needs none; ``ttl_seconds`` ends the exposure (null: never)."""

    port: Port
    public: bool = False
    ttl_seconds: Positive | None = None


class Exposure(msgspec.Struct, frozen=True, kw_only=True):
    url: str
    token: str
    """Send it in ``x-dnah-preview-token`` (or ``x-daytona-preview-token``)."""
    port: int
    public: bool
    expires_at: str | None
    """None: until it is deleted."""


class ExposureList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[Exposure]


class PreviewSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``PUT /v1/sandboxes/{id}/preview``: null (or absent) keeps a setting as it is."""

    public: bool | None = None
    """Every port reachable without a token."""
    wake_on_traffic: bool | None = None
    """A preview request to the paused sandbox resumes it (default: off, a 409)."""


class DaytonaPortPreviewUrl(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    sandbox_id: str
    url: str
    token: str


class DaytonaSignedPortPreviewUrl(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    sandbox_id: str
    port: int
    token: str
    url: str
