"""Webhook destinations cannot be aimed at the core's own network unless allowed
(``DNAH_WEBHOOK_ALLOW_PRIVATE``): address literals are refused at create, host names are
resolved and checked before every delivery."""

from __future__ import annotations

import pytest

from core.errors import BadRequest
from core.services.webhooks import check_destination, check_url

LOCAL = [
    "http://127.0.0.1:9000/hook",
    "http://localhost/hook",
    "http://api.localhost/hook",
    "http://10.1.2.3/hook",
    "http://192.168.0.5/hook",
    "http://172.16.0.1/hook",
    "http://169.254.169.254/latest/meta-data",  # cloud metadata
    "http://[::1]:8080/hook",
    "http://[fd00::1]/hook",
    "http://0.0.0.0/hook",
]


@pytest.mark.parametrize("url", LOCAL)
def test_local_addresses_are_refused_at_create(url: str) -> None:
    with pytest.raises(BadRequest, match="DNAH_WEBHOOK_ALLOW_PRIVATE"):
        check_url(url)
    assert check_url(url, allow_private=True) == url


def test_public_names_and_addresses_are_accepted_at_create() -> None:
    for url in ("https://hooks.example.com/x", "http://93.184.216.34/x"):
        assert check_url(url) == url


@pytest.mark.parametrize("url", LOCAL)
async def test_local_destinations_are_refused_before_delivery(url: str) -> None:
    reason = await check_destination(url)
    assert reason is not None and ("local" in reason or "this machine" in reason)


@pytest.mark.parametrize("url", ["http://127.1/hook", "http://2130706433/hook", "http://0x7f000001/hook"])
async def test_other_spellings_of_loopback_are_caught_after_resolution(url: str) -> None:
    """Not address literals to ``ipaddress`` (so accepted at create), but the resolver turns
    them into 127.0.0.1 — the check before each delivery looks at what they resolve to."""
    assert check_url(url) == url
    reason = await check_destination(url)
    assert (
        reason is not None and "resolves to a loopback, private or link-local address (127.0.0.1)" in reason
    )
    assert await check_destination("http://93.184.216.34/x") is None  # a global literal needs no lookup
