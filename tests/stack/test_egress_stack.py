"""Egress policies and secrets end to end: set through the gateway's API (native and Daytona
shapes), they decide what a real sandbox reaches and what it sends.

A stack of this module's own with egress on (``StackConfig.egress="nat"``; the shared test
stack has none, so nothing leaves it at all), whose hostd resolves through, and trusts the
HTTPS servers of, the stand-in internet of ``tests/netns_internet.py``: a network namespace
the test makes in 198.19.n.0/24 (the benchmarking range) with HTTP/HTTPS/TCP echo servers and
a DNS server. Nothing outside the machine is involved. The sandboxes run ``CLIENT`` of
``tests/hosts/test_egress.py``, which reports per operation what the server echoed (which
address served it, the headers it got) or the error.
"""

from __future__ import annotations

import json
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from cli.stack import Stack
from tests.hosts.test_egress import CLIENT
from tests.netns_internet import Internet, internet
from tests.private_stack import stack_config
from tests.support import exclusive_index, mint_key, wait_for


@pytest.fixture(scope="module")
def net() -> Iterator[Internet]:
    with internet(metadata=False) as stand_in:  # no metadata route: it would wait for other sessions
        yield stand_in


@pytest.fixture(scope="module")
def egress_stack(net: Internet) -> Iterator[Stack]:
    with exclusive_index("stack") as n:
        var = Path(tempfile.mkdtemp(prefix=f"dnah-egress{n}-"))
        extra = {
            "DNAH_RECONCILE_S": "1",
            "DNAH_DNS_UPSTREAM": net.dns,
            "DNAH_EGRESS_CA_BUNDLE": str(net.ca_path),
        }
        config = stack_config(n, var, f"egress-host-{n}", extra)
        stack = Stack(msgspec.structs.replace(config, egress="nat"), say=lambda _: None)
        try:
            stack.start()
            yield stack
        finally:
            stack.remove()


@pytest.fixture(scope="module")
def target(net: Internet) -> str:
    """The stand-in's TCP echo on pypi.org's address."""
    return f"{net.ip(10)}:7000"


@pytest.fixture
def client(egress_stack: Stack) -> Iterator[httpx.Client]:
    """A fresh org's client, through the gateway."""
    url = egress_stack.config.gateway_url
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {egress_stack.admin_token}"}) as admin:
        key = mint_key(admin)
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {key}"}, timeout=60) as org:
        yield org
        for item in org.get("/v1/sandboxes").json().get("items", []):
            org.delete(f"/v1/sandboxes/{item['id']}")


def probe(client: httpx.Client, sid: str, *ops: dict[str, Any]) -> list[dict[str, Any]]:
    resp = client.post(
        f"/v1/sandboxes/{sid}/exec",
        json={"cmd": ["python3", "-c", CLIENT, json.dumps(list(ops))], "timeout_ms": 110_000},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["exit_code"] == 0, resp.json()
    answers: list[dict[str, Any]] = json.loads(resp.json()["stdout"])
    return answers


def reach(client: httpx.Client, sid: str, target: str) -> str:
    """What a TCP connection from inside the sandbox to ``target`` comes to: ``ok`` or the
    error (a refusal by the rules may be a timeout or an error, never ``ok``)."""
    address, port = target.rsplit(":", 1)
    (answer,) = probe(client, sid, {"kind": "tcp", "ip": address, "host": address, "port": int(port)})
    return "ok" if answer.get("ok") == "ping" else str(answer)


def reaches(client: httpx.Client, sid: str, target: str) -> bool:
    """Whether the sandbox reaches ``target``, allowing a loaded machine to lose a probe or two
    (a refusal is checked with one probe: it can never turn into an ``ok`` by waiting)."""
    wait_for(lambda: reach(client, sid, target) == "ok", what=f"{sid} to reach {target}", timeout_s=60)
    return True


def served_by(answer: dict[str, Any]) -> str | None:
    """The address of the server that answered, None when refused (an error, or hostd's 403)."""
    ok = answer.get("ok")
    return ok.get("served_by") if isinstance(ok, dict) else None


def daytona(client: httpx.Client, **body: object) -> str:
    resp = client.post("/sandbox", json=body)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["id"])


def test_created_with_block_all_or_an_allow_list(client: httpx.Client, target: str) -> None:
    open_ = daytona(client)
    assert reaches(client, open_, target)  # the operator's default lets it out: the probe works
    blocked = daytona(client, networkBlockAll=True)
    assert reach(client, blocked, target) != "ok"
    listed = daytona(client, networkAllowList=target.split(":")[0] + "/32")
    assert reaches(client, listed, target)
    elsewhere = daytona(client, networkAllowList="192.0.2.0/24")
    assert reach(client, elsewhere, target) != "ok"


def test_changes_apply_to_a_running_sandbox_and_survive_a_restart(client: httpx.Client, target: str) -> None:
    sid = daytona(client)
    net = target.split(":")[0] + "/32"

    resp = client.post(f"/sandbox/{sid}/network-settings", json={"networkBlockAll": True})
    assert resp.status_code == 200 and resp.json()["networkBlockAll"] is True, resp.text
    assert reach(client, sid, target) != "ok"

    resp = client.post(f"/v1/sandboxes/{sid}/egress-policy", json={"mode": "deny", "cidrs": [net]})
    assert resp.status_code == 200 and resp.json()["live"] is True, resp.text
    assert reaches(client, sid, target)

    # allow: everything but the listed
    resp = client.post(f"/v1/sandboxes/{sid}/egress-policy", json={"mode": "allow", "cidrs": [net]})
    assert resp.status_code == 200, resp.text
    assert reach(client, sid, target) != "ok"

    assert client.post(f"/v1/sandboxes/{sid}/stop").json()["state"] == "stopped"
    assert client.post(f"/v1/sandboxes/{sid}/start").json()["state"] == "started"
    assert reach(client, sid, target) != "ok"

    # changed while stopped: taken by the next start
    assert client.post(f"/v1/sandboxes/{sid}/stop").json()["state"] == "stopped"
    resp = client.post(f"/v1/sandboxes/{sid}/egress-policy", json={"mode": "deny", "cidrs": [net]})
    assert resp.status_code == 200 and resp.json()["live"] is False, resp.text
    assert client.post(f"/v1/sandboxes/{sid}/start").json()["state"] == "started"
    assert reaches(client, sid, target)


def test_a_fork_is_as_confined_as_its_parent(client: httpx.Client, target: str) -> None:
    parent = daytona(client, networkBlockAll=True)
    resp = client.post(f"/v1/sandboxes/{parent}/fork")
    assert resp.status_code == 201, resp.text
    assert reach(client, resp.json()["id"], target) != "ok"


def test_domain_allow_lists(client: httpx.Client, net: Internet) -> None:
    sid = daytona(client, domainAllowList="PyPI.org")
    pypi, other, by_address = probe(
        client,
        sid,
        {"kind": "http", "host": "pypi.org"},
        {"kind": "http", "host": "other.test"},
        {"kind": "tcp", "ip": net.ip(15), "host": net.ip(15)},
    )
    assert served_by(pypi) == net.ip(10), pypi
    assert served_by(other) is None, other
    assert "error" in by_address, by_address

    resp = client.post(
        f"/v1/sandboxes/{sid}/egress-policy", json={"mode": "deny", "domains": ["*.github.com"]}
    )
    assert resp.status_code == 200, resp.text
    below, itself, pypi = probe(
        client,
        sid,
        {"kind": "https", "host": "x.github.com", "ca": net.ca_pem},
        {"kind": "http", "host": "github.com"},
        {"kind": "http", "host": "pypi.org"},
    )
    assert served_by(below) == net.ip(11), below
    assert served_by(itself) is None and served_by(pypi) is None, (itself, pypi)


def test_secrets_reach_only_their_hosts(client: httpx.Client, net: Internet, egress_stack: Stack) -> None:
    value = "sk-stack-" + secrets.token_hex(16)  # random: found only where it was put
    made = client.post("/v1/secrets", json={"name": "API_KEY", "value": value, "hosts": ["API.secret.test"]})
    assert made.status_code == 201, made.text
    created = client.post("/v1/sandboxes", json={"secrets": ["API_KEY"]})
    assert created.status_code == 201, created.text
    sid, placeholder = created.json()["id"], created.json()["env"]["API_KEY"]
    auth = {"Authorization": f"Bearer {placeholder}"}

    http, https, other = probe(
        client,
        sid,
        {"kind": "http", "host": "api.secret.test", "headers": auth},
        {"kind": "https", "host": "api.secret.test", "headers": auth},  # the sandbox's own trust store
        {"kind": "http", "host": "other.test", "headers": auth},
    )
    for answer in (http, https):
        assert served_by(answer) == net.ip(13), answer
        assert answer["ok"]["headers"]["Authorization"] == f"Bearer {value}"
    assert served_by(other) == net.ip(15), other
    assert other["ok"]["headers"]["Authorization"] == f"Bearer {placeholder}"

    # after a restart (a new spec from the core) the value still goes where it may
    assert client.post(f"/v1/sandboxes/{sid}/stop").json()["state"] == "stopped"
    assert client.post(f"/v1/sandboxes/{sid}/start").json()["state"] == "started"
    (again,) = probe(client, sid, {"kind": "http", "host": "api.secret.test", "headers": auth})
    assert again["ok"]["headers"]["Authorization"] == f"Bearer {value}", again

    # a new value reaches a sandbox with its next start, the placeholder unchanged
    rotated = "sk-stack-" + secrets.token_hex(16)
    resp = client.put("/v1/secrets/API_KEY", json={"value": rotated, "hosts": ["api.secret.test"]})
    assert resp.status_code == 200, resp.text
    assert client.post(f"/v1/sandboxes/{sid}/stop").json()["state"] == "stopped"
    assert client.post(f"/v1/sandboxes/{sid}/start").json()["state"] == "started"
    (again,) = probe(client, sid, {"kind": "http", "host": "api.secret.test", "headers": auth})
    assert again["ok"]["headers"]["Authorization"] == f"Bearer {rotated}", again

    # nothing the stack logged holds either value
    for log in sorted((egress_stack.var / "log").glob("*.log")):
        text = log.read_text(errors="replace")
        assert value not in text and rotated not in text, log.name
