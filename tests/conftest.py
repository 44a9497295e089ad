"""Fixtures shared by every suite: the whole stack, started once per pytest-xdist worker.

The stack is the same ``cli.stack.Stack`` that ``make up`` runs, with its own var dir, ports,
bridge, subnet and cgroup parent derived from the worker id, so two workers (and a live
``make up``) never collide. The base template comes from the shared, content-hashed cache.
"""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cli.stack import Stack
from contracts.snapshots import encode_verify_key, parse_signing_key
from tests.private_stack import stack_config
from tests.support import exclusive_index, mint_key

# The payment fixtures (devnet, payment-mode gateways, funded payers) and the QEMU stack of
# the ``vm`` suites, for every suite.
pytest_plugins = ["tests.gateway.payment_fixtures", "tests.vm_stack"]

ROTATED_SIGNING_KEY = "rotated-1:" + base64.b64encode(bytes(range(32))).decode()
"""A test-only key the stack's core still *verifies* with (as after a key rotation) but no
longer signs with: tests sign snapshots with it to prove rotation works."""
ROTATED_VERIFY_KEY = "rotated-1:" + encode_verify_key(parse_signing_key(ROTATED_SIGNING_KEY)[1].verify_key)


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    with exclusive_index("stack") as n:
        var = Path(tempfile.mkdtemp(prefix=f"dnah-stack{n}-"))
        # the reaper every second, so tests that backdate a timer see it act promptly
        extra_env = {
            "DNAH_REAPER_S": "1",
            "DNAH_SNAPSHOT_VERIFY_KEYS": ROTATED_VERIFY_KEY,
            # abandoned operations are settled within seconds (the crash tests need it)
            "DNAH_RECONCILE_S": "1",
            "DNAH_STALE_OPERATION_S": "3",
            "DNAH_STALE_LONG_OPERATION_S": "20",
            # the webhook tests' receivers listen on loopback
            "DNAH_WEBHOOK_ALLOW_PRIVATE": "1",
            # the E2B code-interpreter tests' first create need not copy its 1.4 GiB template
            "DNAH_PREPARE_TEMPLATES": "code-interpreter-v1",
        }
        config = stack_config(n, var, f"test-host-{n}", extra_env)
        stack = Stack(config, say=lambda _: None)
        try:
            stack.start()
            yield stack
        finally:
            stack.remove()


@pytest.fixture(scope="session")
def gateway(stack: Stack) -> Iterator[httpx.Client]:
    """An admin-authenticated client talking to the gateway."""
    with httpx.Client(
        base_url=stack.config.gateway_url,
        headers={"authorization": f"Bearer {stack.admin_token}"},
        timeout=60,
    ) as client:
        yield client


@pytest.fixture(scope="session")
def core(stack: Stack) -> Iterator[httpx.Client]:
    """An admin-authenticated client talking to the core directly."""
    with httpx.Client(
        base_url=stack.config.core_url, headers={"authorization": f"Bearer {stack.admin_token}"}, timeout=60
    ) as client:
        yield client


@pytest.fixture
def org(stack: Stack, gateway: httpx.Client) -> Iterator[httpx.Client]:
    """A client for a fresh org of its own (through the gateway)."""
    key = mint_key(gateway, "org-fixture")
    with httpx.Client(
        base_url=stack.config.gateway_url, headers={"authorization": f"Bearer {key}"}, timeout=60
    ) as client:
        yield client
        for item in client.get("/v1/sandboxes").json().get("items", []):
            client.delete(f"/v1/sandboxes/{item['id']}")
