"""The official Daytona SDK's preview API, unmodified, against one sandbox; prints a JSON report.

Run by ``test_daytona_preview.py`` with the SDK's own virtualenv, like ``daytona_flow.py``:
configured with ``DAYTONA_API_URL`` and ``DAYTONA_API_KEY`` only, importing nothing of the
project. A ``python3 -m http.server`` in the sandbox is reached through ``get_preview_link``
(with and without its token), ``create_signed_preview_url`` (opened as a browser would: the
redirect and its cookie), ``expire_signed_preview_url`` and ``set_public``.
"""

from __future__ import annotations

import http.cookiejar
import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from daytona import Daytona

PORT = 8000
PAGE = "hello from the preview"


def fetch(url: str, headers: dict[str, str] | None = None, opener: Any = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with (opener or urllib.request.build_opener()).open(request, timeout=30) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def main() -> int:
    report: dict[str, Any] = {}
    daytona = Daytona()
    sandbox = daytona.create()
    try:
        started = sandbox.process.exec(
            f"mkdir -p /tmp/site && echo '{PAGE}' > /tmp/site/index.html && cd /tmp/site"
            f" && (setsid python3 -m http.server {PORT} --bind 127.0.0.1 >/dev/null 2>&1 </dev/null &)"
        )
        report["server_started"] = started.exit_code == 0
        link = sandbox.get_preview_link(PORT)
        report["link_type"] = type(link).__name__
        report["link_sandbox"] = link.sandbox_id == sandbox.id
        headers = {"X-Daytona-Preview-Token": link.token}
        deadline = time.monotonic() + 30
        while (served := fetch(link.url, headers))[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        report["with_token"] = [served[0], served[1].strip() == PAGE]
        report["without_token"] = fetch(link.url)[0]

        signed = sandbox.create_signed_preview_url(PORT, expires_in_seconds=120)
        report["signed_type"] = type(signed).__name__
        report["signed_fields"] = [signed.sandbox_id == sandbox.id, signed.port, bool(signed.token)]
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        opened = fetch(signed.url, opener=browser)
        report["signed_opened"] = [opened[0], opened[1].strip() == PAGE]
        sandbox.expire_signed_preview_url(PORT, signed.token)
        report["signed_after_expire"] = fetch(signed.url)[0]
        report["cookie_after_expire"] = fetch(link.url, opener=browser)[0]

        sandbox.set_public(True)
        report["public"] = [sandbox.public, daytona.get(sandbox.id).public]
        report["public_without_token"] = fetch(link.url)[0]
        sandbox.set_public(False)
        report["private_again"] = [daytona.get(sandbox.id).public, fetch(link.url)[0]]
    finally:
        sandbox.delete()
    json.dump(report, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
