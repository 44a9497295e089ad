"""The payment proxy's own quick start, step by step, as its users run it: ``dnah request``
(our ``tempo request``) in its own process against the payment-mode gateway, paying each call.

The steps are the documented ones — create with ``{}``, execute a Python one-liner, upload
``/home/daytona/hello.py`` as JSON with base64 content, list ``/home/daytona``, clone a
repository, stop, delete — with one change: the clone's remote is a bare repository inside the
sandbox (``file://``), because tests stay off the network. Each step's effect is checked inside
the sandbox, not just its status.
"""

# The fixtures are imported from payment_fixtures, so test arguments "redefine" them.
# ruff: noqa: F811

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

import pytest

from cli.stack import Stack
from tests.gateway.payment_fixtures import (  # noqa: F401 - fixtures are used by name
    Devnet,
    Payer,
    PayGateway,
    devnet,
    ledger,
    pay_gateway,
    payer,
    rpc_proxy,
    wait_for,
)
from tests.gateway.servers import REPO

pytestmark = pytest.mark.stack

REMOTE = """
set -e
git init -q --bare -b main /tmp/hello-world.git
git init -q -b main /tmp/seed && cd /tmp/seed
git -c user.name=Octo -c user.email=octo@example.com commit -q --allow-empty -m first
echo "Hello World!" > README && git add README
git -c user.name=Octo -c user.email=octo@example.com commit -q -m readme
git push -q /tmp/hello-world.git main
"""


def tempo_request(payer: Payer, devnet: Devnet, *args: str) -> str:
    """One ``dnah request`` run, as a person runs it; the response body on success."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DNAH_")}
    env["DNAH_PRIVATE_KEY"] = "0x" + payer.account.private_key.removeprefix("0x")
    done = subprocess.run(
        [sys.executable, "-m", "cli.request_cmd", "--network", "devnet", "--rpc", devnet.url, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, f"dnah request {args}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


async def test_the_quick_start_works_paid_through_the_gateway(
    payer: Payer, devnet: Devnet, pay_gateway: PayGateway, stack: Stack
) -> None:
    url = pay_gateway.url

    def execute(sid: str, command: str) -> dict[str, object]:
        body = json.dumps({"command": command})
        result: dict[str, object] = json.loads(
            tempo_request(
                payer, devnet, "-X", "POST", "--json", body, f"{url}/sandbox/{sid}/toolbox/process/execute"
            )
        )
        return result

    # 1. create with defaults
    created = json.loads(tempo_request(payer, devnet, "-X", "POST", "--json", "{}", f"{url}/sandbox"))
    sid = created["id"]
    assert created["state"] == "started"

    # 2. execute a command
    ran = execute(sid, 'python3 -c "print(42)"')
    assert (ran["exitCode"], str(ran["result"]).strip()) == (0, "42")

    # 3. upload a file, content base64 in a JSON body
    content = base64.b64encode(b"print('hello')").decode()
    assert content == "cHJpbnQoJ2hlbGxvJyk="
    upload = json.dumps({"path": "/home/daytona/hello.py", "content": content})
    tempo_request(payer, devnet, "-X", "POST", "--json", upload, f"{url}/sandbox/{sid}/toolbox/files/upload")
    ran = execute(sid, "python3 /home/daytona/hello.py")
    assert (ran["exitCode"], str(ran["result"]).strip()) == (0, "hello")

    # 4. list files
    listed = json.loads(tempo_request(payer, devnet, f"{url}/sandbox/{sid}/toolbox/files?path=/home/daytona"))
    assert "hello.py" in {entry["name"] for entry in listed}

    # 5. clone a repository (a local one: tests stay off the network)
    assert execute(sid, f"sh -c '{REMOTE}'")["exitCode"] == 0
    clone = json.dumps({"url": "file:///tmp/hello-world.git", "path": "/home/daytona/hello-world"})
    tempo_request(payer, devnet, "-X", "POST", "--json", clone, f"{url}/sandbox/{sid}/toolbox/git/clone")
    ran = execute(sid, "cat /home/daytona/hello-world/README")
    assert str(ran["result"]).strip() == "Hello World!"

    # 6. stop and delete
    tempo_request(payer, devnet, "-X", "POST", f"{url}/sandbox/{sid}/stop")
    got = json.loads(tempo_request(payer, devnet, f"{url}/sandbox/{sid}"))
    assert got["state"] == "stopped"
    tempo_request(payer, devnet, "-X", "DELETE", f"{url}/sandbox/{sid}")

    async def every_call_settled() -> bool:
        rows = await ledger(stack, payer.address)
        return len(rows) == 11 and all(row["completed_at"] is not None for row in rows)

    await wait_for(every_call_settled)
    statuses = [row["upstream_status"] for row in await ledger(stack, payer.address)]
    assert all(status < 400 for status in statuses), statuses
