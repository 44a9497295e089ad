"""Preview URLs as clients reach them, for both shapes' preview routes (the traffic itself is
``core/http/preview.py``).

A preview URL is host-based when ``DNAH_PREVIEW_DOMAIN`` is set
(``{scheme}://{port}-{id}.{domain}/``), else path-based on the public URL
(``{public URL}/preview/{id}/{port}/``). A signed URL is the preview URL with the token in
``dnah_preview_token``."""

from __future__ import annotations

from urllib.parse import urlsplit

from litestar import Request

from core.config import CoreConfig
from core.http.common.deps import public_base_url


def preview_url(request: Request, sandbox_id: str, port: int) -> str:
    config: CoreConfig = request.app.state.config
    base = public_base_url(request, config.public_url)
    if config.preview_domain:
        scheme = urlsplit(base).scheme or "http"
        return f"{scheme}://{port}-{sandbox_id}.{config.preview_domain}/"
    return f"{base}/preview/{sandbox_id}/{port}/"
