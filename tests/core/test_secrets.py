"""Secrets at the core: write-only values, sealed at rest, given to sandboxes as placeholders.

Through the whole stack (gateway → core → hostd → a real sandbox). What hostd does with a
grant (the egress proxy putting the value in place of the placeholder) is tested with hostd
(``tests/hosts``) and end to end in ``tests/stack/test_egress_stack.py``.
"""

from __future__ import annotations

import base64
import re
import secrets
from pathlib import Path

import asyncpg
import httpx
import nacl.secret
import pytest

from cli.stack import Stack
from core.config import ConfigError, _secrets_key
from tests.core.test_files import sh
from tests.support import mint_key

PLACEHOLDER = re.compile(r"^dnah_secret_[0-9a-f]{32}$")


def new_value() -> str:
    """A value that can only be found where it was put: random, so a match is no accident."""
    return "sk-test-" + secrets.token_hex(20)


def add_secret(client: httpx.Client, name: str, value: str, hosts: list[str]) -> dict:
    resp = client.post("/v1/secrets", json={"name": name, "value": value, "hosts": hosts})
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_values_go_in_and_never_come_out(org: httpx.Client, gateway: httpx.Client, stack: Stack) -> None:
    value = new_value()
    answers = [
        org.post("/v1/secrets", json={"name": "OPENAI_KEY", "value": value, "hosts": ["API.OpenAI.com"]})
    ]
    assert answers[0].status_code == 201, answers[0].text
    made = answers[0].json()
    assert set(made) == {"name", "hosts", "created_at", "updated_at"}
    assert (made["name"], made["hosts"]) == ("OPENAI_KEY", ["api.openai.com"])

    answers.append(org.get("/v1/secrets"))
    assert [s["name"] for s in answers[-1].json()["items"]] == ["OPENAI_KEY"]
    answers.append(org.post("/v1/secrets", json={"name": "OPENAI_KEY", "value": value, "hosts": ["x.org"]}))
    assert answers[-1].status_code == 409, answers[-1].text

    # another org sees nothing of it, and cannot delete it
    with httpx.Client(
        base_url=stack.config.gateway_url, headers={"authorization": f"Bearer {mint_key(gateway)}"}
    ) as other:
        assert other.get("/v1/secrets").json()["items"] == []
        assert other.delete("/v1/secrets/OPENAI_KEY").status_code == 404

    sandbox = org.post(
        "/v1/sandboxes", json={"secrets": ["OPENAI_KEY"], "env": {"PLAIN": "yes"}, "language": "bash"}
    )
    assert sandbox.status_code == 201, sandbox.text
    answers += [sandbox, org.get(f"/v1/sandboxes/{sandbox.json()['id']}"), org.get("/v1/sandboxes")]
    answers += [org.get(f"/sandbox/{sandbox.json()['id']}"), org.get("/sandbox")]
    for answer in answers:
        assert value not in answer.text, answer.request.url

    assert org.delete("/v1/secrets/OPENAI_KEY").status_code == 204
    assert org.delete("/v1/secrets/OPENAI_KEY").status_code == 404
    assert org.get("/v1/secrets").json()["items"] == []

    # the core's, the gateway's and hostd's logs never held it either
    logs = sorted((stack.var / "log").glob("*.log"))
    assert logs
    for log in logs:
        assert value not in log.read_text(errors="replace"), log.name


async def test_a_secret_is_replaced_in_place(org: httpx.Client, stack_db: asyncpg.Pool) -> None:
    first, second = new_value(), new_value()
    made = add_secret(org, "ROTATED", first, ["a.example.com"])
    sealed = await stack_db.fetchval("SELECT sealed FROM secrets WHERE name = 'ROTATED'")
    resp = org.put(
        "/v1/secrets/ROTATED", json={"value": second, "hosts": ["B.example.com", "*.c.example.com"]}
    )
    assert resp.status_code == 200, resp.text
    assert first not in resp.text and second not in resp.text
    replaced = resp.json()
    assert (replaced["name"], replaced["hosts"]) == ("ROTATED", ["b.example.com", "*.c.example.com"])
    assert replaced["created_at"] == made["created_at"] and replaced["updated_at"] > made["updated_at"]
    assert await stack_db.fetchval("SELECT sealed FROM secrets WHERE name = 'ROTATED'") != sealed
    assert org.get("/v1/secrets").json()["items"] == [replaced]

    missing = org.put("/v1/secrets/NOPE", json={"value": second, "hosts": ["a.example.com"]})
    assert missing.status_code == 404, missing.text
    bad = org.put("/v1/secrets/ROTATED", json={"value": second, "hosts": ["not a host"]})
    assert bad.status_code == 400, bad.text
    assert org.get("/v1/secrets").json()["items"] == [replaced]


def test_bad_secrets_are_refused(org: httpx.Client) -> None:
    def refused(body: dict, needle: str) -> None:
        resp = org.post("/v1/secrets", json=body)
        assert resp.status_code == 400, resp.text
        assert needle in resp.json()["message"], resp.text

    refused({"name": "1BAD", "value": "v", "hosts": ["a.org"]}, "name")
    refused({"name": "OK", "value": "", "hosts": ["a.org"]}, "value")
    refused({"name": "OK", "value": "v", "hosts": []}, "hosts")
    refused({"name": "OK", "value": "v", "hosts": ["not a domain"]}, "not a lower-case domain")
    refused({"name": "OK", "value": "v", "hosts": ["10.0.0.1"]}, "address")
    refused({"name": "OK", "value": "v", "hosts": ["a.org"], "extra": 1}, "extra")
    assert org.get("/v1/secrets").json()["items"] == []


def test_a_sandbox_sees_placeholders_and_keeps_them_across_restarts(org: httpx.Client) -> None:
    value = new_value()
    add_secret(org, "GH_TOKEN", value, ["*.github.com", "github.com"])
    resp = org.post("/v1/sandboxes", json={"secrets": ["GH_TOKEN", "GH_TOKEN"], "env": {"PLAIN": "yes"}})
    assert resp.status_code == 201, resp.text
    sbx = resp.json()
    placeholder = sbx["env"]["GH_TOKEN"]
    assert PLACEHOLDER.match(placeholder), placeholder
    assert sh(org, sbx["id"], "echo $GH_TOKEN $PLAIN") == f"{placeholder} yes\n"
    assert value not in sh(org, sbx["id"], "env")

    # a start builds the spec again: the same placeholder, still no value
    assert org.post(f"/v1/sandboxes/{sbx['id']}/stop").json()["state"] == "stopped"
    assert org.post(f"/v1/sandboxes/{sbx['id']}/start").json()["state"] == "started"
    assert sh(org, sbx["id"], "echo $GH_TOKEN") == f"{placeholder}\n"

    # each sandbox gets its own placeholder
    second = org.post("/v1/sandboxes", json={"secrets": ["GH_TOKEN"]}).json()
    assert PLACEHOLDER.match(second["env"]["GH_TOKEN"]) and second["env"]["GH_TOKEN"] != placeholder


def test_an_unknown_secret_creates_nothing(org: httpx.Client) -> None:
    add_secret(org, "KNOWN", new_value(), ["a.example.com"])
    resp = org.post("/v1/sandboxes", json={"secrets": ["KNOWN", "MISSING"], "name": "never"})
    assert resp.status_code == 400, resp.text
    assert "MISSING" in resp.json()["message"] and "KNOWN" not in resp.json()["message"]
    clash = org.post("/v1/sandboxes", json={"secrets": ["KNOWN"], "env": {"KNOWN": "x"}})
    assert clash.status_code == 400 and "KNOWN" in clash.json()["message"], clash.text
    assert org.get("/v1/sandboxes", params={"state": "destroyed,started,creating"}).json()["items"] == []
    # the name was not taken by a half-made sandbox
    assert org.post("/v1/sandboxes", json={"name": "never"}).status_code == 201


async def test_values_are_sealed_at_rest(org: httpx.Client, stack: Stack, stack_db: asyncpg.Pool) -> None:
    value = new_value()
    add_secret(org, "SEALED", value, ["a.example.com"])
    sealed: bytes = await stack_db.fetchval("SELECT sealed FROM secrets WHERE name = 'SEALED'")
    assert value.encode() not in sealed
    key = base64.b64decode(Path(stack.var, "secrets.key").read_text())
    assert nacl.secret.SecretBox(key).decrypt(sealed).decode() == value
    # another seal of the same value differs (a fresh nonce each time)
    add_secret(org, "SEALED_TOO", value, ["a.example.com"])
    again: bytes = await stack_db.fetchval("SELECT sealed FROM secrets WHERE name = 'SEALED_TOO'")
    assert again != sealed


def test_the_key_is_given_or_made_once_in_the_var_dir(tmp_path: Path) -> None:
    given = base64.b64encode(bytes(range(32))).decode()
    assert _secrets_key({"DNAH_SECRETS_KEY": given, "DNAH_VAR_DIR": str(tmp_path)}) == bytes(range(32))
    assert not (tmp_path / "secrets.key").exists()

    made = _secrets_key({"DNAH_VAR_DIR": str(tmp_path)})
    assert len(made) == 32 and (tmp_path / "secrets.key").stat().st_mode & 0o777 == 0o600
    assert _secrets_key({"DNAH_VAR_DIR": str(tmp_path)}) == made  # kept: a restart opens old values
    assert [p.name for p in tmp_path.iterdir()] == ["secrets.key"]  # no temporary file left

    # neither: a key of this process's own (values sealed with it do not outlive it)
    assert len(_secrets_key({})) == 32 and _secrets_key({}) != _secrets_key({})

    for env, needle in [
        ({"DNAH_SECRETS_KEY": base64.b64encode(b"short").decode()}, "32 bytes"),
        ({"DNAH_SECRETS_KEY": "not base64!"}, "32 bytes"),
    ]:
        with pytest.raises(ConfigError, match=needle):
            _secrets_key(env)
