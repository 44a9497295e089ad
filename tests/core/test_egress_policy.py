"""Egress policies at the core: the native and Daytona routes, what is stored and when the host
is told. Through the whole stack (gateway → core → hostd → real sandboxes); whether the host
then really refuses or lets traffic through is ``tests/stack/test_egress_stack.py``'s part.
"""

from __future__ import annotations

import asyncpg
import httpx

from cli.stack import Stack
from tests.core.test_lifecycle import wait_state
from tests.support import mint_key

DEFAULT = {"mode": "default", "cidrs": [], "domains": []}


def create(client: httpx.Client, **body: object) -> dict:
    resp = client.post("/v1/sandboxes", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()


def policy(client: httpx.Client, sid: str) -> dict:
    resp = client.get(f"/v1/sandboxes/{sid}/egress-policy")
    assert resp.status_code == 200, resp.text
    return resp.json()


def set_policy(client: httpx.Client, sid: str, body: dict, status: int = 200) -> dict:
    resp = client.post(f"/v1/sandboxes/{sid}/egress-policy", json=body)
    assert resp.status_code == status, resp.text
    return resp.json()


def test_a_running_sandbox_gets_its_policy_at_once(org: httpx.Client) -> None:
    sid = create(org)["id"]
    assert policy(org, sid) == {**DEFAULT, "live": True}

    rules = {
        "mode": "deny",
        "cidrs": ["198.18.0.0/15", "2001:db8::1"],
        "domains": ["PyPI.org", "*.github.com"],
    }
    want = {"mode": "deny", "cidrs": rules["cidrs"], "domains": ["pypi.org", "*.github.com"], "live": True}
    assert set_policy(org, sid, rules) == want
    assert policy(org, sid) == want

    assert set_policy(org, sid, {"mode": "allow", "cidrs": ["203.0.113.0/24"]})["mode"] == "allow"
    assert policy(org, sid)["cidrs"] == ["203.0.113.0/24"]


def test_back_to_the_operators_default(org: httpx.Client) -> None:
    sid = create(org, egress={"mode": "deny"})["id"]
    assert set_policy(org, sid, {"mode": "default"}) == {**DEFAULT, "live": True}
    assert policy(org, sid) == {**DEFAULT, "live": True}


def test_a_stopped_sandbox_keeps_it_for_its_next_start(org: httpx.Client) -> None:
    sid = create(org)["id"]
    assert org.post(f"/v1/sandboxes/{sid}/stop").json()["state"] == "stopped"
    stored = set_policy(org, sid, {"mode": "deny", "cidrs": ["198.18.0.0/15"]})
    assert stored == {"mode": "deny", "cidrs": ["198.18.0.0/15"], "domains": [], "live": False}
    assert org.post(f"/v1/sandboxes/{sid}/start").json()["state"] == "started"
    assert policy(org, sid) == {**stored, "live": True}


def test_a_fork_keeps_its_parents_policy(org: httpx.Client) -> None:
    parent = create(org, egress={"mode": "deny", "cidrs": ["198.18.0.0/15"]})["id"]
    resp = org.post(f"/v1/sandboxes/{parent}/fork")
    assert resp.status_code == 201, resp.text
    assert policy(org, resp.json()["id"]) == policy(org, parent)


def test_create_takes_a_policy(org: httpx.Client) -> None:
    sbx = create(org, egress={"mode": "deny", "domains": ["Example.COM"]})
    assert policy(org, sbx["id"]) == {"mode": "deny", "cidrs": [], "domains": ["example.com"], "live": True}
    bad = org.post("/v1/sandboxes", json={"egress": {"mode": "deny", "cidrs": ["300.1.2.3/8"]}})
    assert bad.status_code == 400 and "300.1.2.3/8" in bad.json()["message"], bad.text


def test_bad_policies_are_refused_and_change_nothing(org: httpx.Client) -> None:
    sid = create(org)["id"]
    for body, needle in [
        ({"mode": "deny", "cidrs": ["10.0.0.0/33"]}, "10.0.0.0/33"),
        ({"mode": "deny", "domains": ["bad domain"]}, "not a lower-case domain"),
        ({"mode": "deny", "domains": ["198.18.0.1"]}, "address"),
        ({"mode": "default", "cidrs": ["10.0.0.0/8"]}, "default"),
        ({"mode": "block"}, "mode"),
        ({"mode": "deny", "cidr": ["10.0.0.0/8"]}, "cidr"),
        ({"mode": "deny", "cidrs": ["10.0.0.0/8"] * 257}, "256"),
    ]:
        resp = org.post(f"/v1/sandboxes/{sid}/egress-policy", json=body)
        assert resp.status_code == 400, (body, resp.text)
        assert needle in resp.json()["message"], (body, resp.text)
    assert policy(org, sid) == {**DEFAULT, "live": True}


def test_other_orgs_and_unknown_sandboxes_are_404(
    org: httpx.Client, gateway: httpx.Client, stack: Stack
) -> None:
    sid = create(org)["id"]
    with httpx.Client(
        base_url=stack.config.gateway_url, headers={"authorization": f"Bearer {mint_key(gateway)}"}
    ) as other:
        assert other.get(f"/v1/sandboxes/{sid}/egress-policy").status_code == 404
        assert other.post(f"/v1/sandboxes/{sid}/egress-policy", json={"mode": "deny"}).status_code == 404
        assert (
            other.post(f"/sandbox/{sid}/network-settings", json={"networkBlockAll": True}).status_code == 404
        )
    assert org.get("/v1/sandboxes/no-such-sandbox/egress-policy").status_code == 404
    assert policy(org, sid) == {**DEFAULT, "live": True}


async def test_mid_operation_is_409(org: httpx.Client, stack_db: asyncpg.Pool) -> None:
    """A start or resume under way may already have sent the old policy: refused, not lost."""
    sid = create(org)["id"]
    await stack_db.execute("UPDATE sandboxes SET state = 'resuming', updated_at = now() WHERE id = $1", sid)
    resp = org.post(f"/v1/sandboxes/{sid}/egress-policy", json={"mode": "deny"})
    assert resp.status_code == 409 and "resuming" in resp.json()["message"], resp.text
    # the sweeper settles the row from the host (still running) within seconds
    assert wait_state(org, sid, {"started", "error"}) == "started"
    assert policy(org, sid) == {**DEFAULT, "live": True}


def test_daytona_network_fields(org: httpx.Client) -> None:
    blocked = org.post("/sandbox", json={"networkBlockAll": True})
    assert blocked.status_code == 200, blocked.text
    dto = blocked.json()
    assert (dto["networkBlockAll"], dto["networkAllowList"], dto["domainAllowList"]) == (True, None, None)
    assert policy(org, dto["id"])["mode"] == "deny"

    listed = org.post(
        "/sandbox", json={"networkAllowList": "198.18.0.0/15, 192.0.2.0/24", "domainAllowList": "PyPI.org"}
    )
    assert listed.status_code == 200, listed.text
    dto = listed.json()
    assert dto["networkBlockAll"] is False
    assert (dto["networkAllowList"], dto["domainAllowList"]) == ("198.18.0.0/15,192.0.2.0/24", "pypi.org")
    assert org.get(f"/sandbox/{dto['id']}").json()["networkAllowList"] == "198.18.0.0/15,192.0.2.0/24"

    plain = org.post("/sandbox", json={}).json()
    assert (plain["networkBlockAll"], plain["networkAllowList"]) == (False, None)
    assert policy(org, plain["id"])["mode"] == "default"

    bad = org.post("/sandbox", json={"networkAllowList": "198.18.0.0/15,not-a-network"})
    assert bad.status_code == 400 and "not-a-network" in bad.json()["message"], bad.text


def test_daytona_update_network_settings(org: httpx.Client) -> None:
    sid = org.post("/sandbox", json={}).json()["id"]

    def update(body: dict, status: int = 200) -> dict:
        resp = org.post(f"/sandbox/{sid}/network-settings", json=body)
        assert resp.status_code == status, resp.text
        return resp.json()

    assert update({"networkBlockAll": True})["networkBlockAll"] is True
    assert policy(org, sid) == {"mode": "deny", "cidrs": [], "domains": [], "live": True}
    dto = update({"networkAllowList": "198.18.0.0/15"})
    assert (dto["networkBlockAll"], dto["networkAllowList"]) == (False, "198.18.0.0/15")
    # False restores general access (and clears the list), as in Daytona
    dto = update({"networkBlockAll": False})
    assert (dto["networkBlockAll"], dto["networkAllowList"], dto["domainAllowList"]) == (False, None, None)
    assert policy(org, sid)["mode"] == "allow"
    assert "networkBlockAll" in update({}, 400)["message"]
    assert update({"networkAllowList": "10.0.0.0/99"}, 400)["code"] == "bad_request"
    assert (
        org.post("/sandbox/no-such-sandbox/network-settings", json={"networkBlockAll": True}).status_code
        == 404
    )
