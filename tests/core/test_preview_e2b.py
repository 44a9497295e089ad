"""E2B's credentials on the preview proxy (``core/services/preview.py``): the code
interpreter's SDK reaches port 49999 with ``X-Access-Token`` (the sandbox's envd token) and,
for a private sandbox, ``E2B-Traffic-Access-Token`` (its preview token). Decided before
anything is forwarded: nothing listens on the port, so a request let through is a 502."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import asyncpg
import httpx
import pytest

from cli.stack import Stack

CLOSED = 9


@pytest.fixture
def owner(stack: Stack, core: httpx.Client) -> Iterator[httpx.Client]:
    key = core.post("/v1/api-keys", json={"name": "preview-e2b"}).json()["key"]
    with httpx.Client(
        base_url=stack.config.core_url, headers={"authorization": f"Bearer {key}"}, timeout=60
    ) as client:
        yield client
        for item in client.get("/v1/sandboxes").json().get("items", []):
            client.delete(f"/v1/sandboxes/{item['id']}")


@pytest.fixture
def anonymous(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.config.core_url, timeout=60) as client:
        yield client


async def test_the_envd_token_and_the_traffic_token_open_a_private_sandbox(
    owner: httpx.Client, anonymous: httpx.Client, stack_db: asyncpg.Pool
) -> None:
    sandbox = owner.post("/v1/sandboxes", json={}).json()["id"]
    envd_token = secrets.token_urlsafe(32)
    await stack_db.execute("UPDATE sandboxes SET envd_token = $2 WHERE id = $1", sandbox, envd_token)
    preview_token = owner.get(f"/sandbox/{sandbox}/ports/{CLOSED}/preview-url").json()["token"]
    path = f"/preview/{sandbox}/{CLOSED}/execute"

    assert anonymous.post(path).status_code == 401
    assert anonymous.post(path, headers={"x-access-token": envd_token}).status_code == 502
    wrong = anonymous.post(path, headers={"x-access-token": envd_token[:-1]})
    assert wrong.status_code == 403 and "access token" in wrong.json()["message"]
    assert anonymous.post(path, headers={"e2b-traffic-access-token": preview_token}).status_code == 502
    assert anonymous.post(path, headers={"e2b-traffic-access-token": preview_token[:-1]}).status_code == 403

    other = owner.post("/v1/sandboxes", json={}).json()["id"]
    elsewhere = f"/preview/{other}/{CLOSED}/execute"
    assert anonymous.post(elsewhere, headers={"x-access-token": envd_token}).status_code == 403


async def test_a_sandbox_without_an_envd_token_is_not_opened_by_one(
    owner: httpx.Client, anonymous: httpx.Client
) -> None:
    sandbox = owner.post("/v1/sandboxes", json={}).json()["id"]
    refused = anonymous.post(f"/preview/{sandbox}/{CLOSED}/", headers={"x-access-token": "anything"})
    assert refused.status_code == 403


def test_a_public_sandbox_takes_any_access_token(owner: httpx.Client, anonymous: httpx.Client) -> None:
    """E2B's SDK sends X-Access-Token on every /execute; on a public sandbox it decides nothing."""
    created = owner.post("/v1/sandboxes", json={"public": True}).json()
    assert created["public"] is True
    sandbox = created["id"]
    response = anonymous.post(f"/preview/{sandbox}/{CLOSED}/", headers={"x-access-token": "stale"})
    assert response.status_code == 502
