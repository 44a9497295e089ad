"""API keys and tenancy: every read and write is scoped to the caller's org."""

from __future__ import annotations

import httpx

from cli.stack import Stack
from tests.support import mint_key


def client(stack: Stack, key: str | None) -> httpx.Client:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=stack.config.gateway_url, headers=headers, timeout=60)


def test_missing_or_wrong_key_is_401(stack: Stack) -> None:
    for key in (None, "not-a-dnah-key", "dnah_wrong"):
        resp = client(stack, key).get("/v1/sandboxes")
        assert resp.status_code == 401
        assert resp.json()["code"] == "unauthorized"


def test_other_orgs_sandbox_is_404_not_403(stack: Stack, gateway: httpx.Client) -> None:
    alice, bob = client(stack, mint_key(gateway, "alice")), client(stack, mint_key(gateway, "bob"))
    sid = alice.post("/v1/sandboxes", json={}).json()["id"]
    try:
        assert bob.get(f"/v1/sandboxes/{sid}").status_code == 404
        assert bob.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": ["true"]}).status_code == 404
        assert bob.delete(f"/v1/sandboxes/{sid}").status_code == 404
        assert bob.get(f"/sandbox/{sid}").status_code == 404
        assert bob.post(f"/toolbox/{sid}/process/execute", json={"command": "true"}).status_code == 404
        assert sid not in {s["id"] for s in bob.get("/v1/sandboxes").json()["items"]}
        assert alice.get(f"/v1/sandboxes/{sid}").json()["state"] == "started"
    finally:
        alice.delete(f"/v1/sandboxes/{sid}")


def test_only_admin_mints_keys_and_keys_are_revocable(stack: Stack, gateway: httpx.Client) -> None:
    key = mint_key(gateway, "plain")
    plain = client(stack, key)
    assert plain.post("/v1/api-keys", json={"name": "x"}).status_code == 403
    created = gateway.post("/v1/api-keys", json={"name": "second"}).json()
    assert created["key"].startswith("dnah_") and created["org_id"].startswith("org_")
    same_org = gateway.post("/v1/api-keys", json={"name": "third", "org_id": created["org_id"]}).json()
    assert same_org["org_id"] == created["org_id"]
    assert gateway.post("/v1/api-keys", json={"org_id": "org_nope"}).status_code == 400

    victim = client(stack, created["key"])
    assert victim.get("/v1/sandboxes").status_code == 200  # now cached in Redis
    assert gateway.delete(f"/v1/api-keys/{created['id']}").status_code == 204
    assert victim.get("/v1/sandboxes").status_code == 401  # revocation beats the cache
    assert client(stack, same_org["key"]).get("/v1/sandboxes").status_code == 200


def test_keys_are_stored_hashed(stack: Stack, gateway: httpx.Client) -> None:
    import asyncio

    import asyncpg

    key = mint_key(gateway, "hashed")

    async def stored() -> list[bytes]:
        conn = await asyncpg.connect(stack.database_url)
        try:
            return [r["token_hash"] for r in await conn.fetch("SELECT token_hash FROM api_keys")]
        finally:
            await conn.close()

    hashes = asyncio.run(stored())
    assert all(key.encode() not in h for h in hashes)
    import hashlib

    assert hashlib.sha256(key.encode()).digest() in hashes
