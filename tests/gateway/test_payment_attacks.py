"""Attacks on payment mode. Each is refused with the right problem type, and nothing reaches
the core: no request line in the core's log, no ledger row, and the attacker's wallet is
untouched (nothing was broadcast)."""

# The fixtures are imported from payment_fixtures, so test arguments "redefine" them.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import httpx
import pytest
import rfc8785
from mpp import Challenge, Credential
from mpp.methods.tempo._attribution import encode as attribution_memo

from cli.stack import Stack
from tests.gateway.payment_fixtures import (  # noqa: F401 - fixtures are used by name
    Devnet,
    Payer,
    PayGateway,
    anon,
    challenges,
    core_saw,
    devnet,
    ledger,
    new_payer,
    pay_gateway,
    payer,
    problem_type,
    rid,
    start_payment_gateway,
)

pytestmark = pytest.mark.stack


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def refused(
    client: httpx.AsyncClient,
    stack: Stack,
    payer: Payer,
    method: str,
    path: str,
    authorization: str,
    *,
    status: int = 402,
    kind: str,
    body: bytes | None = None,
) -> httpx.Response:
    """Send the attack; check the refusal and that nothing was forwarded, recorded or paid."""
    balance = payer.devnet.balance(payer.address)
    request_id = rid()
    response = await client.request(
        method,
        path,
        content=body,
        headers={
            "authorization": authorization,
            "x-request-id": request_id,
            "content-type": "application/json",
        },
    )
    assert response.status_code == status, response.text
    assert problem_type(response) == kind, response.text
    if status == 402:
        assert challenges(response), "a refused credential gets a fresh challenge"
    assert core_saw(stack, request_id) == []
    assert payer.devnet.balance(payer.address) == balance
    return response


async def challenge_for(
    client: httpx.AsyncClient, method: str, path: str, body: bytes | None = None
) -> Challenge:
    [challenge] = challenges(await client.request(method, path, content=body))
    return challenge


async def test_replayed_credential(anon: httpx.AsyncClient, payer: Payer, stack: Stack) -> None:
    challenge = await challenge_for(anon, "GET", "/sandbox")
    authorization = await payer.authorization(challenge)
    first = await anon.get("/sandbox", headers={"authorization": authorization})
    assert first.status_code == 200, first.text
    await refused(anon, stack, payer, "GET", "/sandbox", authorization, kind="invalid-challenge")
    assert len(await ledger(stack, payer.address)) == 1


async def test_cheap_credential_on_an_expensive_route(
    anon: httpx.AsyncClient, payer: Payer, stack: Stack
) -> None:
    cheap = await challenge_for(anon, "GET", "/sandbox")  # $0.0001
    authorization = await payer.authorization(cheap)
    await refused(anon, stack, payer, "POST", "/sandbox", authorization, kind="invalid-challenge", body=b"{}")
    # Same price, another resource: the path is bound too.
    other = await challenge_for(anon, "GET", "/sandbox/someone-else")
    authorization = await payer.authorization(other)
    await refused(anon, stack, payer, "GET", "/sandbox", authorization, kind="invalid-challenge")
    # ... and the query.
    query = await challenge_for(anon, "GET", "/sandbox/x/toolbox/files?path=/a")
    authorization = await payer.authorization(query)
    await refused(
        anon, stack, payer, "GET", "/sandbox/x/toolbox/files?path=/b", authorization, kind="invalid-challenge"
    )
    assert await ledger(stack, payer.address) == []


async def test_credential_for_another_body(anon: httpx.AsyncClient, payer: Payer, stack: Stack) -> None:
    challenge = await challenge_for(anon, "POST", "/v1/sandboxes", b'{"name":"a"}')
    authorization = await payer.authorization(challenge)
    await refused(
        anon,
        stack,
        payer,
        "POST",
        "/v1/sandboxes",
        authorization,
        kind="invalid-challenge",
        body=b'{"name":"b"}',
    )


@pytest.fixture(scope="module")
def short_lived(
    stack: Stack, devnet: Devnet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PayGateway]:
    """A gateway whose challenges expire after 2 s."""
    gateway = start_payment_gateway(
        stack, devnet.url, tmp_path_factory.mktemp("short"), DNAH_PAYMENT_EXPIRES_S="2"
    )
    yield gateway
    gateway.stop()


async def test_expired_challenge(short_lived: PayGateway, payer: Payer, stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=short_lived.url, timeout=30) as client:
        challenge = await challenge_for(client, "GET", "/sandbox")
        authorization = await payer.authorization(challenge)
        await asyncio.sleep(2.5)
        await refused(client, stack, payer, "GET", "/sandbox", authorization, kind="payment-expired")


def tampered(challenge: Challenge, **changes: object) -> Challenge:
    """The challenge with its request edited and re-encoded, keeping the original id."""
    request = {**challenge.request, **changes}
    return replace(challenge, request=request, request_b64=b64url(rfc8785.dumps(request)))


@pytest.mark.parametrize(
    "change",
    [{"amount": "1"}, {"recipient": "0x" + "66" * 20}, {"methodDetails": {"chainId": 4217}}],
    ids=["amount", "recipient", "chain"],
)
async def test_tampered_request(
    anon: httpx.AsyncClient, payer: Payer, stack: Stack, change: dict[str, object]
) -> None:
    challenge = await challenge_for(anon, "POST", "/sandbox", b"{}")
    forged = tampered(challenge, **change)
    raw = payer.signed_transfer(forged, amount=int(str(forged.request["amount"])))
    await refused(
        anon,
        stack,
        payer,
        "POST",
        "/sandbox",
        payer.credential_for(forged, raw),
        kind="invalid-challenge",
        body=b"{}",
    )


async def test_forged_challenge_id(anon: httpx.AsyncClient, payer: Payer, stack: Stack) -> None:
    challenge = await challenge_for(anon, "GET", "/sandbox")
    forged = replace(challenge, id=b64url(secrets.token_bytes(32)))
    raw = payer.signed_transfer(forged)
    await refused(
        anon, stack, payer, "GET", "/sandbox", payer.credential_for(forged, raw), kind="invalid-challenge"
    )


async def test_transaction_for_another_chain(anon: httpx.AsyncClient, payer: Payer, stack: Stack) -> None:
    challenge = await challenge_for(anon, "GET", "/sandbox")
    raw = payer.signed_transfer(challenge, chain_id=42431)
    authorization = payer.credential_for(challenge, raw, chain_id=42431)
    await refused(anon, stack, payer, "GET", "/sandbox", authorization, kind="verification-failed")
    # Honest about the source, lying about the chain inside the transaction: still refused.
    authorization = payer.credential_for(challenge, raw)
    await refused(anon, stack, payer, "GET", "/sandbox", authorization, kind="verification-failed")


async def test_transfer_without_the_challenge_memo(
    anon: httpx.AsyncClient, payer: Payer, stack: Stack
) -> None:
    challenge = await challenge_for(anon, "GET", "/sandbox")
    plain = payer.signed_transfer(challenge, plain=True)
    await refused(
        anon,
        stack,
        payer,
        "GET",
        "/sandbox",
        payer.credential_for(challenge, plain),
        kind="verification-failed",
    )
    other = await challenge_for(anon, "GET", "/sandbox")
    foreign = payer.signed_transfer(challenge, memo=attribution_memo(other.id, other.realm, None))
    await refused(
        anon,
        stack,
        payer,
        "GET",
        "/sandbox",
        payer.credential_for(challenge, foreign),
        kind="verification-failed",
    )


async def test_transfer_to_someone_else_or_for_less(
    anon: httpx.AsyncClient, payer: Payer, stack: Stack
) -> None:
    challenge = await challenge_for(anon, "GET", "/sandbox")
    elsewhere = payer.signed_transfer(challenge, recipient="0x" + "77" * 20)
    await refused(
        anon,
        stack,
        payer,
        "GET",
        "/sandbox",
        payer.credential_for(challenge, elsewhere),
        kind="verification-failed",
    )
    less = payer.signed_transfer(challenge, amount=1)
    await refused(
        anon,
        stack,
        payer,
        "GET",
        "/sandbox",
        payer.credential_for(challenge, less),
        kind="verification-failed",
    )


async def test_someone_elses_transaction(
    anon: httpx.AsyncClient, payer: Payer, devnet: Devnet, stack: Stack
) -> None:
    """The credential names the attacker as source but carries the victim's signed transfer."""
    victim = new_payer(devnet)
    balance = devnet.balance(victim.address)
    challenge = await challenge_for(anon, "GET", "/sandbox")
    raw = victim.signed_transfer(challenge)
    await refused(
        anon,
        stack,
        payer,
        "GET",
        "/sandbox",
        payer.credential_for(challenge, raw),
        kind="verification-failed",
    )
    assert devnet.balance(victim.address) == balance


async def test_concurrent_copies_of_one_credential(
    anon: httpx.AsyncClient, payer: Payer, stack: Stack
) -> None:
    challenge = await challenge_for(anon, "GET", "/sandbox")
    authorization = await payer.authorization(challenge)
    before = payer.devnet.balance(payer.address)
    responses = await asyncio.gather(
        *(anon.get("/sandbox", headers={"authorization": authorization}) for _ in range(4))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == 1, [(r.status_code, r.text) for r in responses]
    assert all(s in (200, 402, 409) for s in statuses), statuses
    assert len(await ledger(stack, payer.address)) == 1
    spent = before - payer.devnet.balance(payer.address)
    [row] = await ledger(stack, payer.address)
    assert spent == row["amount"] + payer.devnet.fee(row["tx_hash"])


async def test_unpaid_request_has_no_side_effects(
    anon: httpx.AsyncClient, stack: Stack, payer: Payer
) -> None:
    """What ``tempo request --dry-run`` does: send the real request and read the 402."""
    request_id = rid()
    response = await anon.post("/v1/sandboxes", json={"name": "dry"}, headers={"x-request-id": request_id})
    assert response.status_code == 402
    assert core_saw(stack, request_id) == []


@pytest.fixture
async def plain(pay_gateway: PayGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=pay_gateway.url, timeout=30) as client:
        yield client


async def test_payer_header_from_a_client_is_dropped(
    payer: Payer, pay_gateway: PayGateway, devnet: Devnet, stack: Stack
) -> None:
    """A client naming another payer still acts as itself: the gateway sets ``x-dnah-payer``."""
    victim = new_payer(devnet)
    async with victim.client(pay_gateway.url) as v:
        sid = (await v.post("/sandbox", json={})).json()["id"]
    try:
        async with payer.client(pay_gateway.url, headers={"x-dnah-payer": victim.address}) as p:
            assert (await p.get(f"/sandbox/{sid}")).status_code == 404
    finally:
        async with victim.client(pay_gateway.url) as v:
            await v.delete(f"/sandbox/{sid}")


async def test_encoded_slash_is_refused(plain: httpx.AsyncClient) -> None:
    response = await plain.post("/sandbox/x%2Fresize", json={})
    assert response.status_code == 400 and problem_type(response) == "bad-request"


async def test_credential_with_a_swapped_source(anon: httpx.AsyncClient, payer: Payer, stack: Stack) -> None:
    """A valid transfer with a ``source`` naming someone else is refused (the payer is the
    transaction's signer, never what the client claims)."""
    challenge = await challenge_for(anon, "GET", "/sandbox")
    authorization = await payer.authorization(challenge)
    credential = Credential.from_authorization(authorization)
    lying = replace(credential, source="did:pkh:eip155:1337:0x" + "55" * 20)
    await refused(anon, stack, payer, "GET", "/sandbox", lying.to_authorization(), kind="verification-failed")
