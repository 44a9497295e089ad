"""The E2B SDKs' ``get_host(port)`` through the gateway's host routing: a stack of this module's
own with ``DNAH_PREVIEW_DOMAIN`` (the shared one serves path-based previews), the SDKs given
the same domain as ``E2B_DOMAIN``. ``get_host`` names ``{port}-{id}.{domain}``; a request for
that host reaches the server the flow started in the sandbox. (envd itself stays on
``E2B_SANDBOX_URL``: for a domain of one's own the SDKs insist on https, which a test stack
has no certificate for.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cli.stack import Stack
from tests.private_stack import private_stack
from tests.sdk.test_e2b_sdk import HERE, e2b_node, e2b_python, run_flow
from tests.support import mint_key

__all__ = ["e2b_node", "e2b_python"]  # fixtures used by this module

DOMAIN = "e2b.localhost"


@pytest.fixture(scope="module")
def hosted() -> Iterator[Stack]:
    with private_stack({"DNAH_PREVIEW_DOMAIN": DOMAIN}) as stack:
        yield stack


@pytest.fixture
def key(hosted: Stack) -> str:
    with httpx.Client(
        base_url=hosted.config.gateway_url,
        headers={"authorization": f"Bearer {hosted.admin_token}"},
        timeout=60,
    ) as admin:
        return mint_key(admin, "e2b-hosts")


WANT = {
    "port_by_headers": {"status": 200, "body": "hello from the sandbox\n"},
    "get_host": {"host": True, "body": "hello from the sandbox\n"},
    "cleanup": True,
}


@pytest.mark.parametrize("sdk", ["python", "js"])
def test_get_host_reaches_a_server_in_the_sandbox(
    hosted: Stack, key: str, e2b_python: Path, e2b_node: Path, sdk: str
) -> None:
    url = hosted.config.gateway_url
    argv = (
        [str(e2b_python), str(HERE / "e2b_flow.py")]
        if sdk == "python"
        else ["node", str(HERE / "e2b_flow.mjs")]
    )
    report = run_flow(
        [*argv, "ports"],
        url,
        key,
        E2B_DOMAIN=DOMAIN,
        DNAH_HOST_PROXY=url,
        DNAH_NPM_PREFIX=str(e2b_node),
    )
    assert {name: report["steps"].get(name, "not run") for name in WANT} == WANT
