"""Hostile inputs through every hop: each one is a clean 4xx with the usual error body
(``{statusCode, message, code}``), and none of them changes anything.

The table is the outside tester's list (issue 10) plus what the wire types now declare
(docs/reliability.md, "Bad input"): NUL bytes where Postgres or execve cannot take them,
numbers out of range, wrong types, unknown enum values and query parameters, wrong content
types, missing and unexpected bodies, huge labels, and — once the process-wide gate lands —
JSON nested 2,000 deep and invalid UTF-8. Every case goes through the gateway (bearer mode);
a subset goes straight to the core's port, and the hostd-level ones straight to hostd with its
host token, because hostd trusts the core's token, not its data.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import cast

import asyncpg
import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from cli.stack import Stack
from tests.support import mint_key

NUL = "\u0000"
WIDE = "\U0001f600"
"""A character of four UTF-8 bytes: the kernel counts bytes, the types characters."""
DEEP = 2000


@dataclass(frozen=True)
class Case:
    """One hostile request: ``{sid}`` in ``path`` is the test's sandbox. ``body`` is sent as
    JSON, ``raw`` as it is (with ``content_type``)."""

    name: str
    method: str
    path: str
    status: int
    code: str
    body: object = None
    raw: bytes | None = None
    content_type: str = "application/json"
    params: dict[str, str] = field(default_factory=dict)


def case(
    name: str,
    route: str,
    body: object = None,
    *,
    status: int = 400,
    code: str = "bad_request",
    raw: bytes | None = None,
    content_type: str = "application/json",
    params: dict[str, str] | None = None,
) -> Case:
    """A ``Case`` from ``"METHOD /path"``; most hostile inputs are a 400 ``bad_request``."""
    method, path = route.split(" ", 1)
    return Case(name, method, path, status, code, body, raw, content_type, params or {})


CREATE = "POST /v1/sandboxes"
LIST = "GET /v1/sandboxes"
EXEC = "POST /v1/sandboxes/{sid}/exec"
RUN_CODE = "POST /v1/sandboxes/{sid}/run-code"
LABELS = "PUT /v1/sandboxes/{sid}/labels"
SESSIONS = "POST /v1/sandboxes/{sid}/sessions"
SESSION_EXEC = "POST /v1/sandboxes/{sid}/sessions/hostile/exec"
FIND = "GET /v1/sandboxes/{sid}/files/find"
CLONE = "POST /v1/sandboxes/{sid}/git/clone"
WEBHOOKS = "POST /v1/webhooks"
DAYTONA_CREATE = "POST /sandbox"
DAYTONA_LIST = "GET /sandbox"
DAYTONA_LABELS = "PUT /sandbox/{sid}/labels"
EXECUTE = "POST /toolbox/{sid}/process/execute"
PTY = "POST /toolbox/{sid}/process/pty"


def deep(levels: int) -> bytes:
    """A JSON value nested ``levels`` arrays deep."""
    return b"[" * levels + b"]" * levels


def with_body(prefix: bytes, value: bytes, suffix: bytes = b"}") -> bytes:
    return prefix + value + suffix


def _cases() -> list[Case]:
    s = "{sid}"
    big = "x" * (1024 * 1024)
    many = {f"k{i}": "v" for i in range(10_000)}
    cases = [
        # --- NUL where Postgres or execve cannot take it ---------------------------------------
        case("create: NUL in label key", CREATE, {"labels": {f"a{NUL}": "b"}}),
        case("create: NUL in label value", CREATE, {"labels": {"a": f"b{NUL}"}}),
        case("create: NUL in name", CREATE, {"name": f"n{NUL}"}),
        case("create: NUL in env key", CREATE, {"env": {f"A{NUL}": "1"}}),
        case("create: NUL in env value", CREATE, {"env": {"A": f"1{NUL}"}}),
        case("create: NUL in template", CREATE, {"template": f"t{NUL}"}),
        case("create: NUL in E2B metadata", CREATE, {"metadata": {NUL: "x"}}),
        case("daytona create: NUL in label", DAYTONA_CREATE, {"labels": {NUL: "x"}}),
        case("daytona create: NUL in env", DAYTONA_CREATE, {"env": {"A": NUL}}),
        case("daytona create: NUL in snapshot", DAYTONA_CREATE, {"snapshot": NUL}),
        case("labels: NUL in key", LABELS, {"labels": {NUL: "x"}}),
        case("daytona labels: NUL in value", DAYTONA_LABELS, {"labels": {"a": NUL}}),
        case("exec: NUL in argv", EXEC, {"cmd": ["echo", f"a{NUL}b"]}),
        case("exec: NUL in env key", EXEC, {"cmd": ["true"], "env": {f"A{NUL}": "1"}}),
        case("exec: NUL in env value", EXEC, {"cmd": ["true"], "env": {"A": NUL}}),
        case("exec: NUL in cwd", EXEC, {"cmd": ["true"], "cwd": f"/tmp{NUL}"}),
        case("run-code: NUL in code", RUN_CODE, {"code": f"print(1){NUL}"}),
        case("run-code: NUL in argv", RUN_CODE, {"code": "1", "argv": [NUL]}),
        case("daytona execute: NUL in command", EXECUTE, {"command": f"echo {NUL}"}),
        case("daytona execute: NUL in cwd", EXECUTE, {"command": "true", "cwd": NUL}),
        case("daytona execute: NUL in envs", EXECUTE, {"command": "true", "envs": {NUL: "1"}}),
        case(
            "daytona code-run: NUL in argv",
            f"POST /toolbox/{s}/process/code-run",
            {"code": "1", "argv": [NUL]},
        ),
        case("session: NUL in id", SESSIONS, {"id": f"s{NUL}"}),
        case("session: NUL in cwd", SESSIONS, {"cwd": NUL}),
        case("session: NUL in command", SESSION_EXEC, {"cmd": f"echo {NUL}"}),
        case("session: NUL in path id", f"POST /v1/sandboxes/{s}/sessions/a%00b/exec", {"cmd": "true"}),
        case("daytona session: NUL in id", f"POST /toolbox/{s}/process/session", {"sessionId": NUL}),
        case(
            "daytona session: NUL in command",
            f"POST /toolbox/{s}/process/session/hostile/exec",
            {"command": NUL},
        ),
        case("pty: NUL in id", PTY, {"id": NUL}),
        case("pty: NUL in cwd", PTY, {"cwd": NUL}),
        case("pty: NUL in env", PTY, {"envs": {"A": NUL}}),
        case("pty: NUL in path id", f"DELETE /toolbox/{s}/process/pty/a%00b"),
        case(
            "files: NUL in ?path (list)", f"GET /v1/sandboxes/{s}/files/list", params={"path": f"/tmp{NUL}"}
        ),
        case("files: NUL in ?path (stat)", f"GET /v1/sandboxes/{s}/files/stat", params={"path": NUL}),
        case("files: NUL in ?path (download)", f"GET /v1/sandboxes/{s}/files", params={"path": NUL}),
        case(
            "files: NUL in ?path (upload)",
            f"PUT /v1/sandboxes/{s}/files",
            raw=b"x",
            content_type="application/octet-stream",
            params={"path": f"/tmp/a{NUL}"},
        ),
        case("files: NUL in ?path (mkdir)", f"POST /v1/sandboxes/{s}/files/mkdir", params={"path": NUL}),
        case("files: NUL in ?path (delete)", f"DELETE /v1/sandboxes/{s}/files", params={"path": NUL}),
        case("files: NUL in ?pattern (find)", FIND, params={"path": "/tmp", "pattern": NUL}),
        case(
            "files: NUL in move body",
            f"POST /v1/sandboxes/{s}/files/move",
            {"source": NUL, "destination": "/tmp/x"},
        ),
        case("files: NUL in chmod body", f"POST /v1/sandboxes/{s}/files/chmod", {"path": NUL, "mode": "644"}),
        case(
            "files: NUL in replace body",
            f"POST /v1/sandboxes/{s}/files/replace",
            {"find": "a", "replace": "b", "files": [NUL]},
        ),
        case("daytona files: NUL in ?path (list)", f"GET /toolbox/{s}/files", params={"path": NUL}),
        case(
            "daytona files: NUL in ?path (download)", f"GET /toolbox/{s}/files/download", params={"path": NUL}
        ),
        case(
            "daytona files: NUL in ?source (move)",
            f"POST /toolbox/{s}/files/move",
            params={"source": NUL, "destination": "/tmp/x"},
        ),
        case(
            "daytona files: NUL in ?mode (folder)",
            f"POST /toolbox/{s}/files/folder",
            params={"path": "/tmp/x", "mode": NUL},
        ),
        case(
            "daytona files: NUL in bulk-download path",
            f"POST /toolbox/{s}/files/bulk-download",
            {"paths": [NUL]},
        ),
        case(
            "daytona files: NUL in JSON upload path",
            f"POST /toolbox/{s}/files/upload",
            {"path": NUL, "content": ""},
        ),
        case("git: NUL in clone url", CLONE, {"url": f"https://example.invalid/{NUL}", "path": "r"}),
        case(
            "git: NUL in clone branch",
            CLONE,
            {"url": "https://example.invalid/r", "path": "r", "branch": NUL},
        ),
        case("git: NUL in ?path (status)", f"GET /v1/sandboxes/{s}/git/status", params={"path": NUL}),
        case("daytona git: NUL in clone url", f"POST /toolbox/{s}/git/clone", {"url": NUL, "path": "r"}),
        case("webhook: NUL in url", WEBHOOKS, {"url": f"https://example.invalid/{NUL}", "events": ["*"]}),
        case(
            "webhook: NUL in secret",
            WEBHOOKS,
            {"url": "https://example.invalid/h", "events": ["*"], "secret": "s" * 20 + NUL},
        ),
        case("list: NUL in ?cursor", LIST, params={"cursor": "MjAyMC0wMS0wMVQwMDowMDowMHxhAGI="}),
        case("daytona list: NUL in ?labels", DAYTONA_LIST, params={"labels": json.dumps({NUL: "x"})}),
        case("restore: NUL in snapshot id", f"POST /v1/sandboxes/{s}/restore", {"snapshot_id": NUL}),
        case("fork: NUL in name", f"POST /v1/sandboxes/{s}/fork", {"name": NUL}),
        # --- numbers out of range, and not numbers ---------------------------------------------
        case("create: cpu negative", CREATE, {"cpu": -1}),
        case("create: cpu zero", CREATE, {"cpu": 0}),
        case("create: cpu 2**31", CREATE, {"cpu": 2**31}),
        case("create: ram_mb 2**63", CREATE, {"ram_mb": 2**63}),
        case("create: disk_gb 2**64", CREATE, {"disk_gb": 2**64}),
        case("create: cpu 1e308", CREATE, raw=b'{"cpu": 1e308}'),
        case("create: cpu NaN", CREATE, raw=b'{"cpu": NaN}'),
        case("create: cpu Infinity", CREATE, raw=b'{"cpu": Infinity}'),
        case("create: cpu float", CREATE, {"cpu": 1.5}),
        case("create: cpu bool", CREATE, {"cpu": True}),
        case("create: auto_stop 2**63", CREATE, {"auto_stop_minutes": 2**63 - 1}),
        case("create: auto_archive_days 2**40", CREATE, {"auto_archive_days": 2**40}),
        case("create: E2B timeout 2**63", CREATE, {"timeout": 2**63}),
        case("daytona create: memory 2**53", DAYTONA_CREATE, {"memory": 2**53}),
        case("daytona create: cpu negative", DAYTONA_CREATE, {"cpu": -4}),
        case("daytona create: gpu 2**31", DAYTONA_CREATE, {"gpu": 2**31}),
        case("daytona create: autoStopInterval 2**63", DAYTONA_CREATE, {"autoStopInterval": 2**63 - 1}),
        case("daytona create: autoDeleteInterval -2**63", DAYTONA_CREATE, {"autoDeleteInterval": -(2**63)}),
        case("resize: cpu 2**31", f"POST /v1/sandboxes/{s}/resize", {"cpu": 2**31}),
        case("resize: ram_mb negative", f"POST /v1/sandboxes/{s}/resize", {"ram_mb": -1}),
        case("daytona resize: memory 2**53", f"POST /sandbox/{s}/resize", {"memory": 2**53}),
        case("daytona autostop: 2**63", f"POST /sandbox/{s}/autostop/{2**63}"),
        case("daytona autodelete: -2**63", f"POST /sandbox/{s}/autodelete/{-(2**63)}"),
        case("exec: timeout_ms zero", EXEC, {"cmd": ["true"], "timeout_ms": 0}),
        case("exec: timeout_ms 2**63", EXEC, {"cmd": ["true"], "timeout_ms": 2**63}),
        case("exec: timeout_ms float", EXEC, {"cmd": ["true"], "timeout_ms": 1000.5}),
        case("daytona execute: timeout negative", EXECUTE, {"command": "true", "timeout": -1}),
        case("daytona execute: timeout 2**31", EXECUTE, {"command": "true", "timeout": 2**31}),
        case("session exec: timeout_ms bool", SESSION_EXEC, {"cmd": "true", "timeout_ms": True}),
        case("pty: cols 2**31", PTY, {"cols": 2**31}),
        case("pty: rows negative", PTY, {"rows": -1}),
        case(
            "pty resize: cols zero", f"POST /toolbox/{s}/process/pty/hostile/resize", {"cols": 0, "rows": 24}
        ),
        case(
            "git clone: depth 2**63", CLONE, {"url": "https://example.invalid/r", "path": "r", "depth": 2**63}
        ),
        case(
            "files: ?depth huge",
            f"GET /v1/sandboxes/{s}/files/list",
            params={"path": "/tmp", "depth": "99999999999999"},
        ),
        case("files: ?max negative", FIND, params={"path": "/tmp", "pattern": "*", "max": "-1"}),
        case("list: ?limit=-1", LIST, params={"limit": "-1"}),
        case("list: ?limit=0", LIST, params={"limit": "0"}),
        case("list: ?limit huge", LIST, params={"limit": "99999999999999"}),
        case("list: ?limit not a number", LIST, params={"limit": "ten"}),
        case("daytona list: ?limit huge", DAYTONA_LIST, params={"limit": "99999999999999"}),
        case("git log: ?limit=-1", f"GET /v1/sandboxes/{s}/git/log", params={"path": "r", "limit": "-1"}),
        case(
            "deliveries: ?limit huge", "GET /v1/webhooks/none/deliveries", params={"limit": "99999999999999"}
        ),
        # --- wrong types, unknown enum values --------------------------------------------------
        case("create: labels a list", CREATE, {"labels": ["a"]}),
        case("create: label value a number", CREATE, {"labels": {"a": 1}}),
        case("create: body an array", CREATE, [1, 2]),
        case("create: unknown lifecycle", CREATE, {"lifecycle": "forever"}),
        case("create: unknown language", CREATE, {"language": "cobol"}),
        case("create: unknown field", CREATE, {"cpus": 2}),
        case("exec: cmd a string", EXEC, {"cmd": "ls -l"}),
        case("exec: cmd empty", EXEC, {"cmd": []}),
        case("exec: argv item a number", EXEC, {"cmd": ["echo", 1]}),
        case("run-code: unknown lang", RUN_CODE, {"code": "1", "lang": "cobol"}),
        case(
            "webhook: unknown event",
            WEBHOOKS,
            {"url": "https://example.invalid/h", "events": ["sandbox.exploded"]},
        ),
        case("list: unknown ?state", LIST, params={"state": "exploded"}),
        case("daytona list: unknown ?states", DAYTONA_LIST, params={"states": "exploded"}),
        case("daytona list: ?labels not an object", DAYTONA_LIST, params={"labels": "[1]"}),
        # --- unknown query parameters where a typo changes the meaning (native API) ------------
        case("list: ?states on the native API", LIST, params={"states": "started"}),
        case("list: ?limt", LIST, params={"limt": "1"}),
        case(
            "files: ?recursive on native delete",
            f"DELETE /v1/sandboxes/{s}/files",
            params={"path": "/tmp/x", "recursive": "true"},
        ),
        case(
            "files: ?limit on native find (it is ?max)",
            FIND,
            params={"path": "/tmp", "pattern": "*", "limit": "1"},
        ),
        # --- content types and bodies ----------------------------------------------------------
        case(
            "create: text/plain",
            CREATE,
            status=415,
            code="unsupported_media_type",
            raw=b'{"cpu": 1}',
            content_type="text/plain",
        ),
        case(
            "create: form",
            CREATE,
            status=415,
            code="unsupported_media_type",
            raw=b"cpu=1",
            content_type="application/x-www-form-urlencoded",
        ),
        case(
            "exec: text/plain",
            EXEC,
            status=415,
            code="unsupported_media_type",
            raw=b'{"cmd": ["true"]}',
            content_type="text/plain",
        ),
        case(
            "daytona execute: form",
            EXECUTE,
            status=415,
            code="unsupported_media_type",
            raw=b"command=true",
            content_type="application/x-www-form-urlencoded",
        ),
        case("exec: empty body", EXEC, raw=b""),
        case("labels: empty body", LABELS, raw=b""),
        case("daytona execute: empty body", EXECUTE, raw=b""),
        case("stop: a body where none is expected", f"POST /v1/sandboxes/{s}/stop", {"force": True}),
        case("create: JSON not terminated", CREATE, raw=b'{"cpu": 1'),
        # --- size ------------------------------------------------------------------------------
        case("create: 10,000 labels", CREATE, {"labels": many}),
        case("create: 1 MB label value", CREATE, {"labels": {"a": big}}),
        case("labels: 10,000 labels", LABELS, {"labels": many}),
        case("daytona labels: 1 MB value", DAYTONA_LABELS, {"labels": {"a": big}}),
        case("create: 1 MB env value", CREATE, {"env": {"A": big * 2}}),
        case("exec: 100,000 argv items", EXEC, {"cmd": ["true"] * 100_000}),
        case("exec: over 1 MiB of arguments", EXEC, {"cmd": ["true"] + ["x" * 30_000] * 40}),
        case("exec: a variable over 128 KiB", EXEC, {"cmd": ["true"], "env": {WIDE * 1024: WIDE * 32_000}}),
        case("daytona execute: a 200 KB command", EXECUTE, {"command": "true " + "x" * 200_000}),
        case(
            "git: a 200 KB commit message",
            f"POST /v1/sandboxes/{s}/git/commit",
            {"path": "r", "message": big[:200_000]},
        ),
        case(
            "git: a 10 KB password",
            CLONE,
            {"url": "https://example.invalid/r", "path": "r", "password": big[:10_000]},
        ),
        # --- the process-wide gate (JSON depth, UTF-8): another part of issue 10 ---------------
        case("create: labels nested 2,000 deep", CREATE, raw=with_body(b'{"labels": ', deep(DEEP))),
        case("exec: env nested 2,000 deep", EXEC, raw=with_body(b'{"cmd": ["true"], "env": ', deep(DEEP))),
        case(
            "daytona execute: nested 2,000 deep",
            EXECUTE,
            raw=with_body(b'{"command": "true", "x": ', deep(DEEP)),
        ),
        case("create: invalid UTF-8", CREATE, raw=b'{"name": "a\xff\xfe"}'),
        case("exec: invalid UTF-8 in argv", EXEC, raw=b'{"cmd": ["echo", "\xc3\x28"]}'),
        case("labels: invalid UTF-8 in a key", LABELS, raw=b'{"labels": {"\xed\xa0\x80": "x"}}'),
    ]
    return cases


CASES = _cases()


def send(client: httpx.Client, case: Case, sid: str) -> httpx.Response:
    content = case.raw
    if content is None and case.body is not None:
        content = json.dumps(case.body).encode()
    headers = {"content-type": case.content_type} if content is not None else {}
    return client.request(
        case.method,
        case.path.replace("{sid}", sid),
        params=case.params or None,
        content=content,
        headers=headers,
    )


def mismatch(case: Case, resp: httpx.Response) -> str | None:
    """Why ``resp`` is not ``case``'s clean 4xx, or None."""
    try:
        body = resp.json()
    except ValueError:
        return f"{case.name}: {resp.status_code}, not JSON: {resp.text[:200]!r}"
    expected = {"statusCode": case.status, "code": case.code}
    got = {k: body.get(k) for k in expected} if isinstance(body, dict) else body
    if resp.status_code != case.status or got != expected or not isinstance(body.get("message"), str):
        return f"{case.name}: {resp.status_code} {resp.text[:300]!r}"
    return None


def sql(stack: Stack, query: str, *args: object) -> list[asyncpg.Record]:
    async def go() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(stack.database_url)
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    return asyncio.run(go())


def hostd(stack: Stack) -> httpx.Client:
    """A client for hostd's internal API, with the token the core holds for it."""
    host = sql(stack, "SELECT api_url, api_token FROM hosts WHERE name = $1", stack.config.host_name)[0]
    return httpx.Client(
        base_url=host["api_url"], headers={"authorization": f"Bearer {host['api_token']}"}, timeout=60
    )


def world(stack: Stack, client: httpx.Client, org_id: str) -> dict[str, object]:
    """Everything a hostile input could have changed: the org's sandboxes as both APIs list
    them (every field, timestamps included), its rows (destroyed ones too), its webhooks, the
    shell sessions and terminals in its sandboxes, what the host runs of it, and any sandbox
    on the host the database does not know."""
    with hostd(stack) as host:
        on_host = host.get("/sandboxes").json()
        ours_running = [s["id"] for s in on_host if s["state"] == "running"]
        # asked of the agents through hostd: through the core, asking would count as activity
        agents = {
            sid: [
                {
                    k: v
                    for k, v in host.post(f"/sandboxes/{sid}/agent", json={"t": t}).json().items()
                    if k != "id"
                }
                for t in ("session.list", "pty.list")
            ]
            for sid in ours_running
        }
    # confirmed_at is the host's heartbeat saying the sandbox still runs, not a change
    rows = sql(
        stack,
        "SELECT to_jsonb(s) - 'confirmed_at' AS row FROM sandboxes s WHERE org_id = $1 ORDER BY id",
        org_id,
    )
    ours = {json.loads(r["row"])["id"] for r in rows}
    known = {
        r["id"] for r in sql(stack, "SELECT id FROM sandboxes WHERE id = ANY($1)", [s["id"] for s in on_host])
    }
    inventory = {
        "ours": sorted(json.dumps(s, sort_keys=True) for s in on_host if s["id"] in ours),
        "unknown to the database": sorted(s["id"] for s in on_host if s["id"] not in known),
    }
    return {
        "native": client.get("/v1/sandboxes").json()["items"],
        "daytona": client.get("/sandbox").json(),
        "rows": [r["row"] for r in rows],
        "webhooks": client.get("/v1/webhooks").json(),
        "agents": {sid: agents[sid] for sid in sorted(agents) if sid in ours},
        "host": inventory,
    }


def assert_unchanged(before: dict[str, object], after: dict[str, object]) -> None:
    """``after`` is ``before``; otherwise fail naming what changed, field by field for rows."""
    changes = []
    for key in before:
        if before[key] == after[key]:
            continue
        if key == "rows":
            old_rows = {json.loads(r)["id"]: json.loads(r) for r in cast("list[str]", before[key])}
            new_rows = {json.loads(r)["id"]: json.loads(r) for r in cast("list[str]", after[key])}
            for sid in old_rows.keys() | new_rows.keys():
                old, new = old_rows.get(sid, {}), new_rows.get(sid, {})
                fields = {
                    f: (old.get(f), new.get(f)) for f in old.keys() | new.keys() if old.get(f) != new.get(f)
                }
                if fields:
                    changes.append(f"row {sid}: {fields}")
        else:
            changes.append(f"{key}: {str(before[key])[:500]} -> {str(after[key])[:500]}")
    assert not changes, "\n".join(changes)


@pytest.fixture
def target(stack: Stack, gateway: httpx.Client) -> Iterator[tuple[httpx.Client, str, str]]:
    """A fresh org with one started sandbox (and a session named ``hostile``): the gateway
    client, the sandbox id and the org id."""
    key = mint_key(gateway, "hostile")
    with httpx.Client(
        base_url=stack.config.gateway_url, headers={"authorization": f"Bearer {key}"}, timeout=120
    ) as client:
        created = client.post("/v1/sandboxes", json={"labels": {"keep": "me"}})
        assert created.status_code == 201, created.text
        sandbox = created.json()
        session = client.post(f"/v1/sandboxes/{sandbox['id']}/sessions", json={"id": "hostile"})
        assert session.status_code == 201, session.text
        try:
            yield client, sandbox["id"], sandbox["org_id"]
        finally:
            for item in client.get("/v1/sandboxes").json().get("items", []):
                client.delete(f"/v1/sandboxes/{item['id']}")


def test_every_hostile_input_is_a_clean_4xx_and_changes_nothing(
    stack: Stack, target: tuple[httpx.Client, str, str]
) -> None:
    client, sid, org_id = target
    before = world(stack, client, org_id)
    failures = [m for case in CASES if (m := mismatch(case, send(client, case, sid)))]
    assert not failures, f"{len(failures)} of {len(CASES)} cases:\n" + "\n".join(failures)
    assert_unchanged(before, world(stack, client, org_id))


CORE_SUBSET = [
    c
    for c in CASES
    if c.name
    in {
        "create: NUL in label key",
        "create: NUL in env value",
        "exec: NUL in argv",
        "exec: NUL in cwd",
        "daytona execute: NUL in command",
        "files: NUL in ?path (list)",
        "files: NUL in ?path (upload)",
        "create: ram_mb 2**63",
        "create: cpu float",
        "list: ?limit huge",
        "list: NUL in ?cursor",
        "list: ?limt",
        "create: text/plain",
        "create: 10,000 labels",
        "session: NUL in path id",
    }
]


def test_the_core_itself_answers_the_same(
    stack: Stack, core: httpx.Client, target: tuple[httpx.Client, str, str]
) -> None:
    """The core does not count on the gateway: straight at its port, the same 4xx."""
    client, sid, org_id = target
    key = client.headers["authorization"]
    before = world(stack, client, org_id)
    with httpx.Client(base_url=stack.config.core_url, headers={"authorization": key}, timeout=120) as direct:
        failures = [m for case in CORE_SUBSET if (m := mismatch(case, send(direct, case, sid)))]
    assert len(CORE_SUBSET) == 15
    assert not failures, "\n".join(failures)
    assert_unchanged(before, world(stack, client, org_id))


HOSTD_CASES = [
    ("exec: NUL in argv", "POST", "/sandboxes/{sid}/exec", {"cmd": ["echo", f"a{NUL}"]}),
    ("exec: NUL in env", "POST", "/sandboxes/{sid}/exec", {"cmd": ["true"], "env": {"A": NUL}}),
    ("exec: NUL in cwd", "POST", "/sandboxes/{sid}/exec", {"cmd": ["true"], "cwd": NUL}),
    ("exec: timeout_ms 2**63", "POST", "/sandboxes/{sid}/exec", {"cmd": ["true"], "timeout_ms": 2**63}),
    ("exec: timeout_ms negative", "POST", "/sandboxes/{sid}/exec", {"cmd": ["true"], "timeout_ms": -5}),
    ("agent: NUL in exec argv", "POST", "/sandboxes/{sid}/agent", {"t": "exec", "argv": [NUL]}),
    (
        "agent: NUL in code",
        "POST",
        "/sandboxes/{sid}/agent",
        {"t": "code.run", "language": "python", "code": NUL},
    ),
    (
        "agent: NUL in session command",
        "POST",
        "/sandboxes/{sid}/agent",
        {"t": "session.exec", "session_id": "hostile", "command": NUL},
    ),
    ("agent: NUL in session id", "POST", "/sandboxes/{sid}/agent", {"t": "session.get", "session_id": NUL}),
    ("agent: NUL in fs path", "POST", "/sandboxes/{sid}/agent", {"t": "fs.stat", "path": NUL}),
    ("agent: NUL in git url", "POST", "/sandboxes/{sid}/agent", {"t": "git.clone", "url": NUL, "path": "r"}),
    ("agent: NUL in env.set", "POST", "/sandboxes/{sid}/agent", {"t": "env.set", "env": {NUL: "x"}}),
    (
        "agent: fs.list depth 2**63",
        "POST",
        "/sandboxes/{sid}/agent",
        {"t": "fs.list", "path": "/", "depth": 2**63},
    ),
    (
        "agent: fs.grep max negative",
        "POST",
        "/sandboxes/{sid}/agent",
        {"t": "fs.grep", "path": "/", "pattern": "x", "max": -1},
    ),
    ("agent: pty cols 2**31", "POST", "/sandboxes/{sid}/agent", {"t": "pty.create", "cols": 2**31}),
    ("agent: unknown operation", "POST", "/sandboxes/{sid}/agent", {"t": "rm.rf"}),
    ("resize: cpu 2**63", "POST", "/sandboxes/{sid}/resize", {"cpu": 2**63}),
    ("resize: ram_mb negative", "POST", "/sandboxes/{sid}/resize", {"ram_mb": -1}),
    (
        "create: NUL in env",
        "POST",
        "/sandboxes",
        {"id": "hostile-x", "template": "base", "cpu": 1, "ram_mb": 512, "disk_gb": 1, "env": {"A": NUL}},
    ),
    (
        "create: cpu 2**63",
        "POST",
        "/sandboxes",
        {"id": "hostile-x", "template": "base", "cpu": 2**63, "ram_mb": 512, "disk_gb": 1},
    ),
    (
        "create: NUL in template",
        "POST",
        "/sandboxes",
        {"id": "hostile-x", "template": NUL, "cpu": 1, "ram_mb": 512, "disk_gb": 1},
    ),
    ("snapshot: NUL in id", "POST", "/sandboxes/{sid}/snapshots", {"snapshot_id": NUL}),
]


def test_hostd_refuses_what_the_core_would_never_send(
    stack: Stack, target: tuple[httpx.Client, str, str]
) -> None:
    """hostd trusts the core's token, not its data: a hostile body is its own 400."""
    client, sid, org_id = target
    before = world(stack, client, org_id)
    failures = []
    with hostd(stack) as host:
        for name, method, path, body in HOSTD_CASES:
            resp = host.request(method, path.replace("{sid}", sid), content=json.dumps(body).encode())
            if resp.status_code != 400 or resp.json().get("code") != "bad_request":
                failures.append(f"{name}: {resp.status_code} {resp.text[:300]!r}")
        # The byte-stream routes hand their query to the agent, whose refusal is hostd's
        # documented 422 with the agent's error (contracts/host.py): a 4xx all the same.
        for name, method, params in [
            ("upload: NUL in ?path", "PUT", {"path": NUL}),
            ("upload: NUL in ?mode", "PUT", {"path": "/tmp/x", "mode": NUL}),
            ("download: NUL in ?path", "GET", {"path": f"/etc/hostname{NUL}"}),
        ]:
            resp = host.request(method, f"/sandboxes/{sid}/files", params=params, content=b"x")
            if resp.status_code != 422 or resp.json().get("code") != "bad_request":
                failures.append(f"{name}: {resp.status_code} {resp.text[:300]!r}")
    assert not failures, "\n".join(failures)
    assert_unchanged(before, world(stack, client, org_id))


def test_terminal_openers_are_refused_before_the_upgrade(
    stack: Stack, target: tuple[httpx.Client, str, str]
) -> None:
    """A terminal's hostile query is an HTTP 400 in place of the upgrade, as on REST routes."""
    client, sid, org_id = target
    before = world(stack, client, org_id)
    base = stack.config.gateway_url.replace("http://", "ws://")
    auth = {"authorization": client.headers["authorization"]}
    for query in (
        f"/v1/sandboxes/{sid}/terminal?cwd=%00",
        f"/v1/sandboxes/{sid}/terminal?session_id=a%00b",
        f"/v1/sandboxes/{sid}/terminal?cols=99999999999999999999",
        f"/toolbox/{sid}/process/pty/create-connect?id=a%00b",
        f"/toolbox/{sid}/process/pty/a%00b/connect",
    ):
        with pytest.raises(InvalidStatus) as refused:
            connect(base + query, additional_headers=auth, open_timeout=20, proxy=None).close()
        body = json.loads(refused.value.response.body or b"{}")
        assert (refused.value.response.status_code, body.get("code")) == (400, "bad_request"), (query, body)
    assert_unchanged(before, world(stack, client, org_id))


def test_the_largest_command_allowed_still_runs(target: tuple[httpx.Client, str, str]) -> None:
    """The caps sit below the kernel's own limits: an argument of the most characters allowed,
    each four bytes, and nearly 1 MiB of arguments in all, run (where the kernel's E2BIG
    would be a 502)."""
    client, sid, _ = target
    widest = WIDE * 32_000  # 128,000 bytes, under MAX_ARG_STRLEN
    resp = client.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": ["printf", "%s", widest]})
    assert resp.status_code == 200, resp.text[:300]
    assert resp.json()["stdout"] == widest
    resp = client.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": ["true", *[widest] * 8]})  # 1,024,000 bytes
    assert resp.status_code == 200 and resp.json()["exit_code"] == 0, resp.text[:300]
    resp = client.post(f"/toolbox/{sid}/process/execute", json={"command": "echo " + "y" * 131_000})
    assert resp.status_code == 200 and resp.json()["exitCode"] == 0, resp.text[:300]
