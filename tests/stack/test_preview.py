"""Preview URLs end to end: a client through the gateway, the core's ``/preview`` proxy and
hostd's port route, to real servers inside a runc sandbox (``preview_server.py``: an echo of
what arrived, server-sent events, a WebSocket echo).

Who may (a private sandbox needs a token, a public one none; a signed URL becomes a cookie;
an expired or revoked token, or another sandbox's, is refused before anything is sent on),
what the server sees (no credential of ours), streaming both ways, and the sandbox's state
(stopped and paused are 409s; paused with ``wake_on_traffic`` is resumed and served).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from cli.stack import Stack
from tests.support import wait_for

SERVER = (Path(__file__).parent / "preview_server.py").read_bytes()
PORT = 8000
OTHER_PORT = 8001


def start_server(org: httpx.Client, sandbox_id: str, port: int) -> None:
    put = org.put(
        f"/v1/sandboxes/{sandbox_id}/files", params={"path": "/tmp/preview_server.py"}, content=SERVER
    )
    assert put.status_code in (200, 201), put.text
    run = org.post(
        f"/v1/sandboxes/{sandbox_id}/exec",
        json={
            "cmd": ["sh", "-c", f"setsid python3 /tmp/preview_server.py {port} >/dev/null 2>&1 < /dev/null &"]
        },
    )
    assert run.status_code == 200 and run.json()["exit_code"] == 0, run.text


@pytest.fixture
def anonymous(stack: Stack) -> Iterator[httpx.Client]:
    """A client of the gateway with no API key: a browser, or whoever got the URL."""
    with httpx.Client(base_url=stack.config.gateway_url, timeout=60) as client:
        yield client


@pytest.fixture
def sandbox(org: httpx.Client) -> str:
    """A started sandbox whose ``PORT`` serves ``preview_server.py``."""
    created = org.post("/v1/sandboxes", json={})
    assert created.status_code == 201, created.text
    sandbox_id: str = created.json()["id"]
    start_server(org, sandbox_id, PORT)
    link = org.get(f"/sandbox/{sandbox_id}/ports/{PORT}/preview-url").json()
    wait_for(
        lambda: (
            httpx.get(link["url"] + "echo", headers={"x-daytona-preview-token": link["token"]}).status_code
            == 200
        ),
        what="the server in the sandbox to answer",
    )
    return sandbox_id


def path_of(url: str) -> str:
    return httpx.URL(url).raw_path.decode()


def test_a_private_sandbox_needs_its_token_and_the_server_never_sees_it(
    org: httpx.Client, anonymous: httpx.Client, sandbox: str
) -> None:
    link = org.get(f"/sandbox/{sandbox}/ports/{PORT}/preview-url")
    assert link.status_code == 200, link.text
    assert link.json()["sandboxId"] == sandbox
    url, token = link.json()["url"], link.json()["token"]
    assert path_of(url) == f"/preview/{sandbox}/{PORT}/"
    assert org.get(f"/sandbox/{sandbox}/ports/{PORT}/preview-url").json()["token"] == token, "one token"

    refused = anonymous.get(path_of(url) + "echo")
    assert refused.status_code == 401, refused.text
    assert refused.json()["code"] == "preview_token_required"
    wrong = anonymous.get(path_of(url) + "echo", headers={"x-daytona-preview-token": token + "x"})
    assert wrong.status_code == 403 and wrong.json()["code"] == "preview_token_invalid", wrong.text

    seen = anonymous.get(
        path_of(url) + "echo/a%2Fb?q=1&dnah_preview_token=junk&z=2",
        headers={"x-daytona-preview-token": token, "cookie": "mine=1", "authorization": "Basic dXNlcjpwdw=="},
    )
    # a query token is taken off with a redirect; the header token let the request in
    assert seen.status_code == 302 and seen.headers["location"] == path_of(url) + "echo/a%2Fb?q=1&z=2"
    seen = anonymous.get(
        path_of(url) + "echo/a%2Fb?q=1",
        headers={"x-dnah-preview-token": token, "cookie": "mine=1", "authorization": "Basic dXNlcjpwdw=="},
    )
    assert seen.status_code == 200, seen.text
    echo = seen.json()
    assert echo["path"] == "/echo/a%2Fb?q=1"
    assert echo["headers"].get("cookie") == "mine=1"
    assert echo["headers"].get("authorization") == "Basic dXNlcjpwdw==", "the client's own credentials pass"
    assert not [h for h in echo["headers"] if h.startswith(("x-dnah", "x-daytona"))], echo["headers"]
    assert echo["headers"]["x-forwarded-prefix"] == f"/preview/{sandbox}/{PORT}"
    assert seen.headers["set-cookie"] == "app=1; Path=/", "the server's answer comes back as it is"

    # a key of the owning org opens it too; a key of ours never reaches the server, whatever
    # opened the request; an app's own credential is no key of ours
    by_key = org.get(path_of(url) + "echo")
    assert by_key.status_code == 200 and "authorization" not in by_key.json()["headers"]
    with_both = org.get(path_of(url) + "echo", headers={"x-daytona-preview-token": token})
    assert with_both.status_code == 200 and "authorization" not in with_both.json()["headers"]
    basic = anonymous.get(path_of(url) + "echo", headers={"authorization": "Basic dXNlcjpwdw=="})
    assert basic.status_code == 401 and basic.json()["code"] == "preview_token_required", basic.text


def test_public_opens_every_port_without_a_token(
    org: httpx.Client, anonymous: httpx.Client, sandbox: str
) -> None:
    made = org.post(f"/sandbox/{sandbox}/public/True")
    assert made.status_code == 200 and made.json()["public"] is True, made.text
    assert org.get(f"/v1/sandboxes/{sandbox}").json()["public"] is True
    opened = anonymous.get(f"/preview/{sandbox}/{PORT}/echo")
    assert opened.status_code == 200, opened.text
    unmade = org.post(f"/sandbox/{sandbox}/public/false")
    assert unmade.status_code == 200 and unmade.json()["public"] is False
    assert anonymous.get(f"/preview/{sandbox}/{PORT}/echo").status_code == 401


def test_a_signed_url_becomes_a_cookie_until_it_is_expired(
    org: httpx.Client, anonymous: httpx.Client, sandbox: str
) -> None:
    signed = org.get(f"/sandbox/{sandbox}/ports/{PORT}/signed-preview-url", params={"expiresInSeconds": 600})
    assert signed.status_code == 200, signed.text
    body = signed.json()
    assert body["sandboxId"] == sandbox and body["port"] == PORT
    url = httpx.URL(body["url"])
    assert url.params["dnah_preview_token"] == body["token"]

    first = anonymous.get(url.raw_path.decode())
    assert first.status_code == 302, first.text
    assert first.headers["location"] == f"/preview/{sandbox}/{PORT}/"
    cookie = first.headers["set-cookie"]
    assert cookie.startswith(f"dnah_preview_{PORT}={body['token']};"), cookie
    assert f"Path=/preview/{sandbox}/{PORT}" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    with httpx.Client(base_url=str(anonymous.base_url), timeout=60, follow_redirects=True) as browser:
        page = browser.get(url.raw_path.decode() + "&x=1")
        assert page.status_code == 200, page.text
        assert page.json()["path"] == "/?x=1"
        browser.cookies.set("other", "2")
        again = browser.get(f"/preview/{sandbox}/{PORT}/echo")
        assert again.status_code == 200, again.text
        assert again.json()["headers"].get("cookie") == "app=1; other=2", (
            "our cookie is taken off, the rest pass"
        )

        expired = org.post(f"/sandbox/{sandbox}/ports/{PORT}/signed-preview-url/{body['token']}/expire")
        assert expired.status_code == 200, expired.text
        refused = browser.get(f"/preview/{sandbox}/{PORT}/echo")
        assert refused.status_code == 403 and "expired" in refused.json()["message"], refused.text
    assert anonymous.get(url.raw_path.decode()).status_code == 403


def test_a_signed_token_opens_only_its_sandbox_and_port_and_only_until_it_expires(
    org: httpx.Client, anonymous: httpx.Client, sandbox: str
) -> None:
    other = org.post("/v1/sandboxes", json={})
    assert other.status_code == 201, other.text
    theirs = org.get(f"/sandbox/{other.json()['id']}/ports/{PORT}/signed-preview-url").json()["token"]
    other_port = org.get(f"/sandbox/{sandbox}/ports/{OTHER_PORT}/signed-preview-url").json()["token"]
    for token in (theirs, other_port, theirs.replace(".", ".x", 1), "123.abc"):
        refused = anonymous.get(f"/preview/{sandbox}/{PORT}/echo", headers={"x-daytona-preview-token": token})
        assert refused.status_code == 403, (token, refused.text)
        refused = anonymous.get(f"/preview/{sandbox}/{PORT}/echo", params={"dnah_preview_token": token})
        assert refused.status_code == 403, (token, refused.text)

    short = org.get(
        f"/sandbox/{sandbox}/ports/{PORT}/signed-preview-url", params={"expiresInSeconds": 1}
    ).json()
    wait_for(
        lambda: (
            anonymous.get(
                f"/preview/{sandbox}/{PORT}/echo", headers={"x-daytona-preview-token": short["token"]}
            ).status_code
            == 403
        ),
        what="the one-second signed URL to expire",
    )
    assert (
        org.get(
            f"/sandbox/{sandbox}/ports/{PORT}/signed-preview-url", params={"expiresInSeconds": 0}
        ).status_code
        == 400
    )


def test_an_exposed_port_has_a_token_of_its_own_revoked_at_once(
    org: httpx.Client, anonymous: httpx.Client, sandbox: str
) -> None:
    exposed = org.post(f"/v1/sandboxes/{sandbox}/expose", json={"port": PORT})
    assert exposed.status_code == 201, exposed.text
    body = exposed.json()
    assert body["port"] == PORT and body["public"] is False and body["expires_at"] is None
    assert path_of(body["url"]) == f"/preview/{sandbox}/{PORT}/"
    opened = anonymous.get(path_of(body["url"]) + "echo", headers={"x-dnah-preview-token": body["token"]})
    assert opened.status_code == 200, opened.text
    elsewhere = anonymous.get(
        f"/preview/{sandbox}/{OTHER_PORT}/", headers={"x-dnah-preview-token": body["token"]}
    )
    assert elsewhere.status_code == 403, "a port's token opens that port only"
    assert [e["port"] for e in org.get(f"/v1/sandboxes/{sandbox}/expose").json()["items"]] == [PORT]

    assert org.delete(f"/v1/sandboxes/{sandbox}/expose/{PORT}").status_code == 204
    gone = anonymous.get(path_of(body["url"]) + "echo", headers={"x-dnah-preview-token": body["token"]})
    assert gone.status_code == 403, gone.text
    assert org.delete(f"/v1/sandboxes/{sandbox}/expose/{PORT}").status_code == 404

    public = org.post(
        f"/v1/sandboxes/{sandbox}/expose", json={"port": PORT, "public": True, "ttl_seconds": 600}
    )
    assert public.status_code == 201 and public.json()["expires_at"] is not None
    assert anonymous.get(f"/preview/{sandbox}/{PORT}/echo").status_code == 200
    assert anonymous.get(f"/preview/{sandbox}/{OTHER_PORT}/").status_code == 401, "only that port is public"
    for port in (0, 65536):
        bad = org.post(f"/v1/sandboxes/{sandbox}/expose", json={"port": port})
        assert bad.status_code == 400, bad.text


def test_events_stream_and_websockets_echo(org: httpx.Client, stack: Stack, sandbox: str) -> None:
    token = org.get(f"/sandbox/{sandbox}/ports/{PORT}/preview-url").json()["token"]
    headers = {"x-daytona-preview-token": token}
    base = stack.config.gateway_url
    with httpx.stream("GET", f"{base}/preview/{sandbox}/{PORT}/sse", headers=headers, timeout=60) as events:
        assert events.status_code == 200
        assert events.headers["content-type"] == "text/event-stream"
        lines = [line for line in events.iter_lines() if line]
        assert lines == ["data: event 0", "data: event 1", "data: event 2"]

    async def echo() -> None:
        url = base.replace("http://", "ws://") + f"/preview/{sandbox}/{PORT}/ws"
        async with connect(url, additional_headers=headers, subprotocols=["chat"]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "chat"
            await ws.send("hello")
            assert await ws.recv() == "hello"
            await ws.send(b"\x00\x01" * 40_000)
            assert await ws.recv() == b"\x00\x01" * 40_000
        refused = base.replace("http://", "ws://") + f"/preview/{sandbox}/{PORT}/ws"
        with pytest.raises(Exception, match="401"):
            async with connect(refused):
                pass

    asyncio.run(echo())


def test_a_request_body_is_streamed_to_the_server(
    org: httpx.Client, anonymous: httpx.Client, sandbox: str
) -> None:
    token = org.get(f"/sandbox/{sandbox}/ports/{PORT}/preview-url").json()["token"]
    body = bytes(range(256)) * 4096  # 1 MiB, every byte value

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    posted = anonymous.post(
        f"/preview/{sandbox}/{PORT}/echo",
        headers={"x-daytona-preview-token": token, "content-length": str(len(body))},
        content=chunks(),
    )
    assert posted.status_code == 200, posted.text
    assert posted.json()["method"] == "POST"
    assert posted.json()["body"].encode("latin-1") == body


def test_errors_say_what_is_wrong(org: httpx.Client, anonymous: httpx.Client, sandbox: str) -> None:
    token = org.get(f"/sandbox/{sandbox}/ports/{PORT}/preview-url").json()["token"]
    headers = {"x-daytona-preview-token": token}
    closed = anonymous.get(f"/preview/{sandbox}/{OTHER_PORT}/", headers=headers)
    assert closed.status_code == 502, closed.text
    assert str(OTHER_PORT) in closed.text
    assert anonymous.get(f"/preview/{sandbox}/0/", headers=headers).status_code == 400
    assert anonymous.get(f"/preview/{sandbox}/70000/", headers=headers).status_code == 400
    missing = anonymous.get(f"/preview/no-such-sandbox/{PORT}/", headers=headers)
    assert missing.status_code == 404, missing.text
    assert org.get(f"/sandbox/{sandbox}/ports/0/preview-url").status_code == 400


def test_paused_is_a_409_unless_traffic_wakes_it_and_stopped_is_a_409(
    org: httpx.Client, anonymous: httpx.Client, sandbox: str
) -> None:
    token = org.get(f"/sandbox/{sandbox}/ports/{PORT}/preview-url").json()["token"]
    headers = {"x-daytona-preview-token": token}
    assert org.get(f"/v1/sandboxes/{sandbox}").json()["wake_on_traffic"] is False, "off by default"
    assert org.post(f"/v1/sandboxes/{sandbox}/pause").status_code == 200
    paused = anonymous.get(f"/preview/{sandbox}/{PORT}/echo", headers=headers)
    assert paused.status_code == 409, paused.text
    assert paused.json()["code"] == "sandbox_not_running" and "wake_on_traffic" in paused.json()["message"]
    assert org.get(f"/v1/sandboxes/{sandbox}").json()["state"] == "paused"

    woken = org.put(f"/v1/sandboxes/{sandbox}/preview", json={"wake_on_traffic": True})
    assert woken.status_code == 200 and woken.json()["wake_on_traffic"] is True, woken.text
    served = anonymous.get(f"/preview/{sandbox}/{PORT}/echo", headers=headers)
    assert served.status_code == 200, served.text
    assert org.get(f"/v1/sandboxes/{sandbox}").json()["state"] == "started"

    # several requests at once to a paused sandbox: one resume, every one served
    assert org.post(f"/v1/sandboxes/{sandbox}/pause").status_code == 200
    with ThreadPoolExecutor(8) as pool:
        statuses = list(
            pool.map(
                lambda i: anonymous.get(f"/preview/{sandbox}/{PORT}/echo?i={i}", headers=headers).status_code,
                range(8),
            )
        )
    assert statuses == [200] * 8

    assert org.post(f"/v1/sandboxes/{sandbox}/stop").status_code == 200
    stopped = anonymous.get(f"/preview/{sandbox}/{PORT}/echo", headers=headers)
    assert stopped.status_code == 409 and "start it" in stopped.json()["message"], stopped.text


def test_create_takes_the_preview_settings(org: httpx.Client) -> None:
    created = org.post("/v1/sandboxes", json={"wake_on_traffic": True, "public": True})
    assert created.status_code == 201, created.text
    assert created.json()["wake_on_traffic"] is True and created.json()["public"] is True
    daytona = org.post("/sandbox", json={"public": True})
    assert daytona.status_code == 200 and daytona.json()["public"] is True, daytona.text
