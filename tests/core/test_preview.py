"""Preview tokens and the decision ``PreviewService.admit`` makes, against the stack's core and
database (nothing is forwarded here: ``tests/stack/test_preview.py`` goes on to the servers).

Signed tokens (``core/services/preview_signing.py``): only the secret makes one, it opens only
its sandbox and port, only until its expiry, and not once expired early (the revocation is
kept until the token's own expiry, then dropped). The decision is made before any forwarding:
a refused request never reaches hostd, which the sandbox-less port proves (a forwarded request
would be a 502, not a 401/403).
"""

from __future__ import annotations

from collections.abc import Iterator

import asyncpg
import httpx
import pytest

from cli.stack import Stack
from core.services import preview_signing
from core.services.preview_signing import TokenRefused
from tests.support import wait_for

SECRET = b"s" * 32
SANDBOX = "0b6c0f4e-3f9e-4a53-9d38-2a8e7a1b5c11"


def test_a_signed_token_opens_its_sandbox_and_port_until_it_expires() -> None:
    token = preview_signing.sign(SECRET, SANDBOX, 3000, 2_000)
    nonce, expires_at = preview_signing.verify(SECRET, token, SANDBOX, 3000, now=1_999)
    assert expires_at == 2_000 and nonce == preview_signing.nonce_of(token)
    assert preview_signing.looks_signed(token) and not preview_signing.looks_signed("plainTokenNoDots")
    with pytest.raises(TokenRefused, match="expired"):
        preview_signing.verify(SECRET, token, SANDBOX, 3000, now=2_000)


@pytest.mark.parametrize(
    "change",
    [
        "other sandbox",
        "other port",
        "other secret",
        "later expiry",
        "other nonce",
        "flipped mac",
        "not a token",
    ],
)
def test_any_other_token_is_refused(change: str) -> None:
    token = preview_signing.sign(SECRET, SANDBOX, 3000, 2_000)
    expiry, nonce, mac = token.split(".")
    sandbox, port, secret = SANDBOX, 3000, SECRET
    if change == "other sandbox":
        sandbox = SANDBOX.replace("0b6c", "0b6d")
    elif change == "other port":
        port = 3001
    elif change == "other secret":
        secret = b"t" * 32
    elif change == "later expiry":
        token = f"{int(expiry) + 3600}.{nonce}.{mac}"
    elif change == "other nonce":
        token = f"{expiry}.{'A' * 16}.{mac}"
    elif change == "flipped mac":
        token = f"{expiry}.{nonce}.{mac[:-1]}{'A' if mac[-1] != 'A' else 'B'}"
    else:
        token = "x" * 60
    with pytest.raises(TokenRefused, match="not valid for this sandbox and port"):
        preview_signing.verify(secret, token, sandbox, port, now=1_000)


# through the core ---------------------------------------------------------------------------


@pytest.fixture
def owner(stack: Stack, core: httpx.Client) -> Iterator[httpx.Client]:
    key = core.post("/v1/api-keys", json={"name": "preview-owner"}).json()["key"]
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


CLOSED = 9  # nothing listens there: a request that got through would be a 502


async def test_an_expired_signed_url_is_refused_at_once_and_kept_until_its_expiry(
    owner: httpx.Client, anonymous: httpx.Client, stack_db: asyncpg.Pool
) -> None:
    sandbox = owner.post("/v1/sandboxes", json={}).json()["id"]
    signed = owner.get(
        f"/sandbox/{sandbox}/ports/{CLOSED}/signed-preview-url", params={"expiresInSeconds": 60}
    )
    token = signed.json()["token"]
    path = f"/preview/{sandbox}/{CLOSED}/"
    assert anonymous.get(path, headers={"x-daytona-preview-token": token}).status_code == 502, (
        "it gets through"
    )

    assert (
        owner.post(f"/sandbox/{sandbox}/ports/{CLOSED}/signed-preview-url/{token}/expire").status_code == 200
    )
    refused = anonymous.get(path, headers={"x-daytona-preview-token": token})
    assert refused.status_code == 403 and refused.json()["message"] == "the signed preview URL was expired"
    assert anonymous.get(path, headers={"cookie": f"dnah_preview_{CLOSED}={token}"}).status_code == 403
    assert anonymous.get(path, params={"dnah_preview_token": token}).status_code == 403
    again = owner.post(f"/sandbox/{sandbox}/ports/{CLOSED}/signed-preview-url/{token}/expire")
    assert again.status_code == 200, "expiring twice changes nothing"
    elsewhere = owner.post(f"/sandbox/{sandbox}/ports/{CLOSED + 1}/signed-preview-url/{token}/expire")
    assert elsewhere.status_code == 404, "a token of another port expires nothing"

    kept = await stack_db.fetchval(
        "SELECT expires_at FROM preview_revocations WHERE nonce = $1", preview_signing.nonce_of(token)
    )
    assert int(kept.timestamp()) == int(token.split(".")[0]), "kept until the token's own expiry"


async def test_revocations_past_their_expiry_are_dropped(owner: httpx.Client, stack_db: asyncpg.Pool) -> None:
    sandbox = owner.post("/v1/sandboxes", json={}).json()["id"]
    await stack_db.execute(
        "INSERT INTO preview_revocations (nonce, sandbox_id, expires_at)"
        " VALUES ('stale-nonce-0000', $1, now() - interval '1 s')",
        sandbox,
    )
    token = owner.get(f"/sandbox/{sandbox}/ports/{CLOSED}/signed-preview-url").json()["token"]
    assert (
        owner.post(f"/sandbox/{sandbox}/ports/{CLOSED}/signed-preview-url/{token}/expire").status_code == 200
    )
    left = await stack_db.fetchval(
        "SELECT count(*) FROM preview_revocations WHERE nonce = 'stale-nonce-0000'"
    )
    assert left == 0


def test_who_may_is_decided_before_anything_is_forwarded(
    owner: httpx.Client, anonymous: httpx.Client, core: httpx.Client
) -> None:
    sandbox = owner.post("/v1/sandboxes", json={}).json()["id"]
    path = f"/preview/{sandbox}/{CLOSED}/"
    token = owner.get(f"/sandbox/{sandbox}/ports/{CLOSED}/preview-url").json()["token"]
    assert anonymous.get(path).status_code == 401
    assert anonymous.get(path, headers={"x-daytona-preview-token": token[:-1]}).status_code == 403
    assert anonymous.get(path, headers={"x-daytona-preview-token": token}).status_code == 502

    # another org's key is no credential for this sandbox; the owner's is
    stranger = core.post("/v1/api-keys", json={"name": "stranger"}).json()["key"]
    assert anonymous.get(path, headers={"authorization": f"Bearer {stranger}"}).status_code == 403
    assert owner.get(path).status_code == 502

    other = owner.post("/v1/sandboxes", json={}).json()["id"]
    theirs = owner.get(f"/sandbox/{other}/ports/{CLOSED}/preview-url").json()["token"]
    assert anonymous.get(path, headers={"x-daytona-preview-token": theirs}).status_code == 403

    exposed = owner.post(f"/v1/sandboxes/{sandbox}/expose", json={"port": CLOSED, "ttl_seconds": 1}).json()
    assert anonymous.get(path, headers={"x-dnah-preview-token": exposed["token"]}).status_code == 502
    wait_for(
        lambda: anonymous.get(path, headers={"x-dnah-preview-token": exposed["token"]}).status_code == 403,
        what="the exposure's one-second ttl to end",
    )
    assert owner.get(f"/v1/sandboxes/{sandbox}/expose").json()["items"] == []


@pytest.mark.parametrize("rest", ["%2e%2e", "%2E.", "a/%2e%2E/b", "x/%2e"])
def test_dot_segments_never_climb_out_of_the_port(
    owner: httpx.Client, anonymous: httpx.Client, rest: str
) -> None:
    sandbox = owner.post("/v1/sandboxes", json={}).json()["id"]
    token = owner.get(f"/sandbox/{sandbox}/ports/{CLOSED}/preview-url").json()["token"]
    refused = anonymous.get(
        f"/preview/{sandbox}/{CLOSED}/{rest}/sandboxes", headers={"x-daytona-preview-token": token}
    )
    assert refused.status_code == 400, refused.text
    assert refused.json()["message"] == "a preview path may not have . or .. segments"


@pytest.mark.parametrize("rest", ["/evil.example/x", "/\\evil.example/x", "\\/evil.example/x"])
def test_the_redirect_never_leaves_the_site(owner: httpx.Client, anonymous: httpx.Client, rest: str) -> None:
    """A host-based URL (empty prefix) whose path starts with more slashes: the redirect that
    takes the token off stays on the preview's own host."""
    sandbox = owner.post("/v1/sandboxes", json={}, params={}).json()["id"]
    assert owner.post(f"/sandbox/{sandbox}/public/true").status_code == 200
    for prefix in ("", "//evil.example", "https://evil.example"):
        answer = anonymous.get(
            f"/preview/{sandbox}/{CLOSED}/{rest}",
            params={"dnah_preview_token": "x"},
            headers={"x-dnah-preview-prefix": prefix},
        )
        assert answer.status_code == 302, answer.text
        location = answer.headers["location"]
        assert location.startswith("/") and location[1] not in "/\\", location
        assert location.endswith("evil.example/x"), location
