"""Rate limits (``gateway/ratelimit.py``): real gateways under Granian, a real Redis, and
``tests/gateway/upstream.py`` as the core, whose request log shows that a refused request
never reached it.

Budgets are long-windowed (``N/1h``) wherever a test counts requests, so nothing refills while
it counts, whatever the machine's pace; the one test about refilling waits for what
``Retry-After`` said and no more.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from pathlib import Path

import httpx
import pytest
from redis import Redis as SyncRedis
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from cli.datastores import Redis
from gateway.config import ConfigError, Rate, RateLimitConfig, load_config
from tests.gateway.payment_fixtures import Devnet, Payer, challenges, new_payer
from tests.gateway.redis_server import redis_url
from tests.gateway.servers import Server, StartGateway, free_port, gateway_env, start
from tests.support import wait_for

__all__ = ["redis_url"]  # fixtures used by this module

RATE_HEADERS = ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "ratelimit-policy")


@pytest.fixture
def redis(redis_url: str) -> str:
    """The session's Redis, emptied: every test starts with full buckets."""
    with SyncRedis.from_url(redis_url) as r:
        r.flushall()
    return redis_url


def seen(upstream: Server) -> list[str]:
    answer: list[str] = httpx.get(upstream.url + "/control/seen", timeout=10).json()["seen"]
    return answer


def get(server: Server, path: str, **headers: str) -> httpx.Response:
    return httpx.get(server.url + path, headers=headers, timeout=30)


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_an_api_key_spends_its_own_budget(start_gateway: StartGateway, upstream: Server, redis: str) -> None:
    gateway = start_gateway(upstream.url, DNAH_REDIS_URL=redis, DNAH_RATELIMIT_API_KEY="3/1h")
    marker = uuid.uuid4().hex
    answers = [get(gateway, f"/v1/x-{marker}-{n}", **bearer("dnah_a")) for n in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    for n, answer in enumerate(answers[:3]):
        assert answer.headers["ratelimit-limit"] == "3"
        assert answer.headers["ratelimit-remaining"] == str(2 - n)
        assert answer.headers["ratelimit-policy"] == "3;w=3600"
        assert 0 < int(answer.headers["ratelimit-reset"]) <= 3600
        assert "retry-after" not in answer.headers
    refused = answers[3]
    assert refused.json()["code"] == "rate_limited"
    assert refused.json()["statusCode"] == 429
    assert "API key" in refused.json()["message"]
    # the fourth request is allowed once a third of the hour has passed since the first
    assert 1100 < int(refused.headers["retry-after"]) <= 1200
    assert refused.headers["ratelimit-remaining"] == "0"
    assert refused.headers["x-request-id"]
    assert [line for line in seen(upstream) if marker in line] == [
        f"GET /v1/x-{marker}-{n}" for n in range(3)
    ]
    entry = gateway.log_entry(refused.headers["x-request-id"])
    assert entry["status"] == 429 and entry["error"] == "rate_limited:key"
    # another key, and requests without one, have budgets of their own
    assert get(gateway, "/v1/y", **bearer("dnah_b")).status_code == 200
    assert get(gateway, "/v1/y").status_code == 200


def test_unauthenticated_requests_spend_the_address_budget(
    start_gateway: StartGateway, upstream: Server, redis: str
) -> None:
    gateway = start_gateway(upstream.url, DNAH_REDIS_URL=redis, DNAH_RATELIMIT_ADDRESS="2/1h")
    assert [get(gateway, "/v1/x").status_code for _ in range(3)] == [200, 200, 429]
    assert "client address" in get(gateway, "/v1/x").json()["message"]
    assert get(gateway, "/v1/x", **bearer("dnah_a")).status_code == 200
    assert all(get(gateway, "/health").status_code == 200 for _ in range(5))


def test_two_gateways_share_one_budget(start_gateway: StartGateway, upstream: Server, redis: str) -> None:
    first, second = (
        start_gateway(upstream.url, DNAH_REDIS_URL=redis, DNAH_RATELIMIT_API_KEY="4/1h") for _ in range(2)
    )
    answers = [get(server, "/v1/x", **bearer("dnah_shared")) for server in (first, second, first, second)]
    assert [a.status_code for a in answers] == [200] * 4
    assert [a.headers["ratelimit-remaining"] for a in answers] == ["3", "2", "1", "0"]
    assert get(first, "/v1/x", **bearer("dnah_shared")).status_code == 429
    assert get(second, "/v1/x", **bearer("dnah_shared")).status_code == 429


def test_exemptions(start_gateway: StartGateway, upstream: Server, redis: str) -> None:
    exempt = "dnah_exempt_key"
    gateway = start_gateway(
        upstream.url,
        DNAH_REDIS_URL=redis,
        DNAH_RATELIMIT_API_KEY="1/1h",
        DNAH_RATELIMIT_ADDRESS="1/1h",
        DNAH_RATELIMIT_EXEMPT_KEYS=hashlib.sha256(exempt.encode()).hexdigest(),
        DNAH_RATELIMIT_EXEMPT_CIDRS="10.0.0.0/8, 127.0.0.0/8",
    )
    for _ in range(3):
        answer = get(gateway, "/v1/x", **bearer(exempt))
        assert answer.status_code == 200
        assert not [h for h in RATE_HEADERS if h in answer.headers]
        assert get(gateway, "/v1/x").status_code == 200  # 127.0.0.1 is exempt
    assert [get(gateway, "/v1/x", **bearer("dnah_other")).status_code for _ in range(2)] == [200, 429]


def test_retry_after_says_when_a_request_passes(
    start_gateway: StartGateway, upstream: Server, redis: str
) -> None:
    gateway = start_gateway(upstream.url, DNAH_REDIS_URL=redis, DNAH_RATELIMIT_API_KEY="2/4s")
    for _ in range(20):
        answer = get(gateway, "/v1/x", **bearer("dnah_retry"))
        if answer.status_code == 429:
            break
    assert answer.status_code == 429
    wait_s = int(answer.headers["retry-after"])
    assert 1 <= wait_s <= 2  # one request every 2 s
    time.sleep(wait_s)
    assert get(gateway, "/v1/x", **bearer("dnah_retry")).status_code == 200


def test_the_client_address_behind_trusted_proxies(
    start_gateway: StartGateway, upstream: Server, redis: str
) -> None:
    gateway = start_gateway(
        upstream.url, DNAH_REDIS_URL=redis, DNAH_RATELIMIT_ADDRESS="1/1h", DNAH_TRUSTED_PROXIES="127.0.0.1/32"
    )

    def status(forwarded: str) -> int:
        return get(gateway, "/v1/x", **{"x-forwarded-for": forwarded}).status_code

    assert status("198.51.100.7") == 200
    assert status("198.51.100.7") == 429
    assert status("198.51.100.7, 198.51.100.8") == 200  # the rightmost untrusted entry counts
    assert status("203.0.113.9, 198.51.100.7") == 429  # whatever the client wrote to its left
    assert status("2001:db8::1") == 200
    assert status("2001:db8::2") == 429  # IPv6 per /64
    assert status("2001:db8:0:1::1") == 200


def test_forwarded_for_from_an_untrusted_peer_is_ignored(
    start_gateway: StartGateway, upstream: Server, redis: str
) -> None:
    gateway = start_gateway(upstream.url, DNAH_REDIS_URL=redis, DNAH_RATELIMIT_ADDRESS="1/1h")
    assert get(gateway, "/v1/x", **{"x-forwarded-for": "198.51.100.1"}).status_code == 200
    assert get(gateway, "/v1/x", **{"x-forwarded-for": "198.51.100.2"}).status_code == 429


def test_preview_traffic_spends_its_sandbox_budget(
    start_gateway: StartGateway, upstream: Server, redis: str
) -> None:
    gateway = start_gateway(
        upstream.url,
        DNAH_REDIS_URL=redis,
        DNAH_PREVIEW_DOMAIN="preview.test",
        DNAH_RATELIMIT_PREVIEW="2/1h",
        DNAH_RATELIMIT_ADDRESS="1/1h",
    )
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    first = get(gateway, f"/preview/{a}/3000/")
    assert first.status_code == 200
    assert first.headers["ratelimit-policy"] == "2;w=3600"
    assert get(gateway, "/", host=f"8080-{a}.preview.test").status_code == 200  # any port, same sandbox
    refused = get(gateway, f"/preview/{a}/3000/x")
    assert refused.status_code == 429
    assert "sandbox" in refused.json()["message"]
    assert not [line for line in seen(upstream) if f"/preview/{a}/3000/x" in line]
    assert get(gateway, f"/preview/{b}/3000/").status_code == 200
    # preview traffic spent nothing of the address budget
    assert [get(gateway, "/v1/x").status_code for _ in range(2)] == [200, 429]


def test_a_websocket_over_the_limit_is_429(tmp_path: Path, redis: str) -> None:
    upstream = start(
        "tests.gateway.upstream:create_app", dict(os.environ), tmp_path / "up.log", websockets=True
    )
    env = gateway_env(
        upstream.url, DNAH_REDIS_URL=redis, DNAH_RATELIMIT_PREVIEW="1/1h", DNAH_RATELIMIT_API_KEY="1/1h"
    )
    gateway = start("gateway.app:create_app", env, tmp_path / "gw.log", websockets=True)
    try:
        base = gateway.url.replace("http://", "ws://")
        for path, headers in ((f"/preview/{uuid.uuid4()}/3000/ws", {}), ("/v1/ws", bearer("dnah_ws"))):
            with ws_connect(base + path, additional_headers=headers, open_timeout=20, proxy=None) as conn:
                conn.recv(timeout=15)
            with pytest.raises(InvalidStatus) as refused:
                ws_connect(base + path, additional_headers=headers, open_timeout=20, proxy=None)
            response = refused.value.response
            assert response.status_code == 429
            assert int(response.headers["retry-after"]) > 0
            assert response.headers["ratelimit-limit"] == "1"
    finally:
        gateway.stop()
        upstream.stop()


def test_402_issuance_is_limited_per_address(
    start_gateway: StartGateway, upstream: Server, redis: str
) -> None:
    gateway = start_gateway(
        upstream.url,
        DNAH_REDIS_URL=redis,
        DNAH_RATELIMIT_ADDRESS="2/1h",
        DNAH_GATEWAY_MODE="payment",
        DNAH_EDGE_TOKEN="e" * 40,
        DNAH_MPP_SECRET="s" * 48,
        DNAH_PAYMENT_NETWORK="devnet",
        DNAH_PAYMENT_RPC_URL="http://127.0.0.1:9/",
        DNAH_PAYMENT_RECIPIENT="0x" + "ab" * 20,
    )
    answers = [httpx.post(gateway.url + "/sandbox", json={}, timeout=30) for _ in range(3)]
    assert [a.status_code for a in answers] == [402, 402, 429]
    assert answers[0].headers["ratelimit-remaining"] == "1"
    assert "www-authenticate" in answers[1].headers
    assert "www-authenticate" not in answers[2].headers
    assert int(answers[2].headers["retry-after"]) > 0


# Redis unavailable: fail open --------------------------------------------------------------------


def test_no_redis_at_all_means_no_limits(start_gateway: StartGateway, upstream: Server) -> None:
    gateway = start_gateway(upstream.url, DNAH_RATELIMIT_API_KEY="1/1h")
    for _ in range(3):
        answer = get(gateway, "/v1/x", **bearer("dnah_a"))
        assert answer.status_code == 200
        assert "ratelimit-limit" not in answer.headers
    assert "ratelimit_off" in gateway.log.read_text()


def test_redis_down_fails_open_and_recovers(
    start_gateway: StartGateway, upstream: Server, tmp_path: Path
) -> None:
    own = Redis(tmp_path / "redis")
    own.start()
    try:
        gateway = start_gateway(upstream.url, DNAH_REDIS_URL=own.url, DNAH_RATELIMIT_API_KEY="2/1h")
        assert [get(gateway, "/v1/x", **bearer("dnah_a")).status_code for _ in range(3)] == [200, 200, 429]
        own.stop()
        for _ in range(3):
            answer = get(gateway, "/v1/x", **bearer("dnah_a"))
            assert answer.status_code == 200
            assert "ratelimit-limit" not in answer.headers
        assert wait_for(
            lambda: "ratelimit_unavailable" in gateway.log.read_text(), what="the outage's log line"
        )
        own.start()  # empty: the old bucket is gone, a new one is counted

        def limited_again() -> bool:
            return "ratelimit-limit" in get(gateway, "/v1/x", **bearer("dnah_a")).headers

        wait_for(limited_again, what="limits once Redis is back")
    finally:
        own.stop()


def test_an_unreachable_redis_never_blocks_a_request(start_gateway: StartGateway, upstream: Server) -> None:
    gateway = start_gateway(
        upstream.url, DNAH_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", DNAH_RATELIMIT_ADDRESS="1/1h"
    )
    assert [get(gateway, "/v1/x").status_code for _ in range(4)] == [200] * 4
    assert wait_for(lambda: "ratelimit_unavailable" in gateway.log.read_text(), what="the log line")


def payment_env(redis: str, rpc_url: str, **env: str) -> dict[str, str]:
    """A payment-mode gateway in front of the upstream; only the devnet is real (the ledger
    calls reach the upstream, which cannot answer them: a request that gets that far is not
    served, which is beside the point here)."""
    return {
        "DNAH_REDIS_URL": redis,
        "DNAH_GATEWAY_MODE": "payment",
        "DNAH_EDGE_TOKEN": "e" * 40,
        "DNAH_MPP_SECRET": "s" * 48,
        "DNAH_PAYMENT_NETWORK": "devnet",
        "DNAH_PAYMENT_RPC_URL": rpc_url,
        "DNAH_PAYMENT_RECIPIENT": "0x" + "ab" * 20,
        **env,
    }


async def test_a_payer_spends_its_own_budget(
    start_gateway: StartGateway, upstream: Server, redis: str, devnet: Devnet
) -> None:
    alice, bob, carol = (new_payer(devnet) for _ in range(3))
    gateway = start_gateway(
        upstream.url,
        **payment_env(
            redis, devnet.url, DNAH_RATELIMIT_PAYER="1/1h", DNAH_RATELIMIT_EXEMPT_PAYERS=carol.account.address
        ),
    )
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as client:

        async def attempt(payer: Payer) -> httpx.Response:
            challenge = challenges(await client.post("/sandbox", json={}))[0]
            credential = await payer.authorization(challenge)
            return await client.post("/sandbox", json={}, headers={"authorization": credential})

        first = await attempt(alice)
        assert first.status_code not in (402, 429), first.text  # validated: the payer is known
        refused = await attempt(alice)
        assert refused.status_code == 429, refused.text
        assert refused.json()["code"] == "rate_limited" and "payer" in refused.json()["message"]
        assert int(refused.headers["retry-after"]) > 0
        assert refused.headers["ratelimit-limit"] == "1"
        assert (await attempt(bob)).status_code not in (402, 429)
        assert [(await attempt(carol)).status_code == 429 for _ in range(2)] == [False, False]


# settings ----------------------------------------------------------------------------------------


def test_the_default_limits() -> None:
    config = load_config({})
    assert config.redis_url is None and config.preview_domain is None
    assert config.ratelimit == RateLimitConfig(
        api_key=Rate(6000, 60), payer=Rate(6000, 60), address=Rate(6000, 60), preview=Rate(12000, 60)
    )


@pytest.mark.parametrize(
    ("raw", "rate"),
    [
        ("600/1m", Rate(600, 60)),
        ("10/s", Rate(10, 1)),
        ("100/30s", Rate(100, 30)),
        ("5/2h", Rate(5, 7200)),
        ("0", None),
        ("0/1m", None),
        (" 7/M ", Rate(7, 60)),
    ],
)
def test_a_limit_is_n_per_window(raw: str, rate: Rate | None) -> None:
    assert load_config({"DNAH_RATELIMIT_PAYER": raw}).ratelimit.payer == rate


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("DNAH_RATELIMIT_API_KEY", "10"),
        ("DNAH_RATELIMIT_ADDRESS", "10/0s"),
        ("DNAH_RATELIMIT_PREVIEW", "-1/s"),
        ("DNAH_RATELIMIT_PAYER", "10/1d"),
        ("DNAH_RATELIMIT_EXEMPT_KEYS", "dnah_a_plain_token"),
        ("DNAH_RATELIMIT_EXEMPT_PAYERS", "alice"),
        ("DNAH_RATELIMIT_EXEMPT_CIDRS", "10.0.0.0/33"),
        ("DNAH_TRUSTED_PROXIES", "proxy.internal"),
        ("DNAH_PREVIEW_DOMAIN", "preview example.com"),
        ("DNAH_PREVIEW_DOMAIN", "preview.example.com:99999"),
        ("DNAH_REDIS_URL", "http://127.0.0.1:6379"),
    ],
)
def test_a_bad_setting_is_refused_by_name(name: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_config({name: raw})


def test_exemptions_and_proxies_are_read() -> None:
    digest = hashlib.sha256(b"dnah_k").hexdigest()
    config = load_config(
        {
            "DNAH_REDIS_URL": "redis://127.0.0.1:6379/0",
            "DNAH_RATELIMIT_EXEMPT_KEYS": digest.upper(),
            "DNAH_RATELIMIT_EXEMPT_PAYERS": "0x" + "AB" * 20,
            "DNAH_RATELIMIT_EXEMPT_CIDRS": "10.0.0.0/8, 2001:db8::/32",
            "DNAH_TRUSTED_PROXIES": "192.0.2.1",
            "DNAH_PREVIEW_DOMAIN": "Preview.Example.com.",
        }
    )
    assert config.redis_url == "redis://127.0.0.1:6379/0"
    assert config.ratelimit.exempt_keys == {digest}
    assert config.ratelimit.exempt_payers == {"0x" + "ab" * 20}
    assert [str(n) for n in config.ratelimit.exempt_cidrs] == ["10.0.0.0/8", "2001:db8::/32"]
    assert [str(n) for n in config.ratelimit.trusted_proxies] == ["192.0.2.1/32"]
    assert config.preview_domain == "preview.example.com"
