"""`make up PAYMENTS=devnet` as a newcomer uses it: the stack starts the devnet, puts the
gateway in payment mode, funds the demo wallet, and the printed `dnah request` lines work."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cli.stack import Stack, StackConfig
from tests.support import exclusive_index, free_port


@pytest.fixture(scope="module")
def paid_stack() -> Iterator[Stack]:
    with exclusive_index("paid-stack") as n:
        config = StackConfig(
            var_dir=Path(tempfile.mkdtemp(prefix=f"dnah-paystack{n}-")),
            gateway_port=free_port(),
            core_port=free_port(),
            hostd_port=free_port(),
            ssh_port=free_port(),
            devnet_port=free_port(),
            bridge=f"dnahp{n}",
            subnet=f"10.219.{n}.0/24",
            cgroup=f"dnahp{n}",
            host_name=f"paid-host-{n}",
            egress="none",
            payments="devnet",
        )
        stack = Stack(config, say=lambda _: None)
        try:
            stack.start()
            yield stack
        finally:
            stack.remove()


def dnah_request(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"DNAH_PRIVATE_KEY": stack.key("demo.key"), "PATH": "/usr/bin:/bin"}
    argv = [sys.executable, "-m", "cli.main", "request", "--rpc", stack.config.devnet_url, *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_the_printed_walkthrough_pays_for_a_sandbox_and_a_command(paid_stack: Stack) -> None:
    url = paid_stack.config.gateway_url
    dry = dnah_request(paid_stack, "--dry-run", "-X", "POST", "--json", "{}", f"{url}/sandbox")
    assert dry.returncode == 0, dry.stderr
    assert "$0.01 (10000 base units)" in dry.stdout

    made = dnah_request(paid_stack, "-X", "POST", "--json", "{}", f"{url}/sandbox")
    assert made.returncode == 0, made.stderr
    sid = json.loads(made.stdout)["id"]
    ran = dnah_request(
        paid_stack,
        "-X",
        "POST",
        "--json",
        '{"command":"echo paid"}',
        f"{url}/sandbox/{sid}/toolbox/process/execute",
    )
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == {"exitCode": 0, "result": "paid\n"}
    gone = dnah_request(paid_stack, "-X", "DELETE", f"{url}/sandbox/{sid}")
    assert json.loads(gone.stdout)["state"] == "destroyed"


def test_unpaid_calls_get_402_and_discovery_is_free(paid_stack: Stack) -> None:
    url = paid_stack.config.gateway_url
    unpaid = httpx.post(f"{url}/sandbox", json={})
    assert unpaid.status_code == 402
    assert unpaid.headers["cache-control"] == "no-store"
    assert unpaid.headers["www-authenticate"].startswith("Payment ")
    for free in ("/llms.txt", "/openapi.json", "/__mpp/health", "/__mpp/config", "/health"):
        assert httpx.get(url + free).status_code == 200, free
    # The admin key is no way around payment in payment mode.
    admin = httpx.post(
        f"{url}/sandbox", json={}, headers={"authorization": f"Bearer {paid_stack.admin_token}"}
    )
    assert admin.status_code == 402
