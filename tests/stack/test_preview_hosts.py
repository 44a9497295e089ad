"""Host-based preview URLs (``DNAH_PREVIEW_DOMAIN`` set for the core and the gateway): a stack of
this module's own, since the shared one serves path-based URLs. The client names the sandbox and
port in the host (``{port}-{id}.{domain}``); the server in the sandbox sees its own paths, no
prefix, and the client's host."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from cli.stack import Stack
from tests.private_stack import private_stack
from tests.stack.test_preview import PORT, start_server
from tests.support import mint_key, wait_for

DOMAIN = "preview.localhost"


@pytest.fixture(scope="module")
def hosted() -> Iterator[Stack]:
    with private_stack({"DNAH_PREVIEW_DOMAIN": DOMAIN}) as stack:
        yield stack


@pytest.fixture
def owner(hosted: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=hosted.config.gateway_url,
        headers={"authorization": f"Bearer {hosted.admin_token}"},
        timeout=60,
    ) as admin:
        key = mint_key(admin, "preview-hosts")
    with httpx.Client(
        base_url=hosted.config.gateway_url, headers={"authorization": f"Bearer {key}"}, timeout=60
    ) as client:
        yield client


def test_a_host_based_url_reaches_the_port_at_its_own_paths(owner: httpx.Client, hosted: Stack) -> None:
    sandbox = owner.post("/v1/sandboxes", json={}).json()["id"]
    start_server(owner, sandbox, PORT)
    link = owner.get(f"/sandbox/{sandbox}/ports/{PORT}/preview-url").json()
    host = f"{PORT}-{sandbox}.{DOMAIN}"
    assert link["url"] == f"http://{host}/"

    with httpx.Client(base_url=hosted.config.gateway_url, headers={"host": host}, timeout=60) as browser:
        token = {"x-daytona-preview-token": link["token"]}
        seen = wait_for(
            lambda: (r := browser.get("/echo/x?y=1", headers=token)).status_code == 200 and r,
            what="the server in the sandbox to answer by host",
        )
        assert seen.json()["path"] == "/echo/x?y=1"
        assert seen.json()["headers"]["host"] == host
        assert "x-forwarded-prefix" not in seen.json()["headers"]
        assert browser.get("/echo").status_code == 401

        signed = owner.get(f"/sandbox/{sandbox}/ports/{PORT}/signed-preview-url").json()
        assert signed["url"] == f"http://{host}/?dnah_preview_token={signed['token']}"
        first = browser.get(f"/?dnah_preview_token={signed['token']}")
        assert first.status_code == 302 and first.headers["location"] == "/"
        assert "Path=/;" in first.headers["set-cookie"]
        browser.cookies.set(f"dnah_preview_{PORT}", signed["token"])
        assert browser.get("/echo").status_code == 200

        exposed = owner.post(f"/v1/sandboxes/{sandbox}/expose", json={"port": PORT}).json()
        assert exposed["url"] == f"http://{host}/"
    owner.delete(f"/v1/sandboxes/{sandbox}")
