"""Webhooks end to end: the /v1/webhooks API through the gateway, and deliveries from the
core's dispatcher to real HTTP receivers on loopback — signed, in order, retried, and not
lost when the core is killed mid-delivery."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest

from cli.stack import Stack
from core.config import ConfigError, WebhookConfig, load_config
from core.db import webhooks as webhooks_db
from core.db.migrate import migrate
from core.db.pool import create_pool
from core.db.webhooks import WebhookRecord
from core.services.webhook_dispatch import Dispatcher, retry_delay
from tests.support import free_port, mint_key, wait_for

COLD = {"ram_mb": 512}
"""A size the warm pool does not hold: these creates boot cold, so their events go through
``creating`` (a warm claim's start with ``started``; see tests/core/test_warm_pool.py)."""


class Received(msgspec.Struct, frozen=True):
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def payload(self) -> dict:
        return json.loads(self.body)


class Receiver:
    """A webhook receiver: records every request; answers the next status of ``statuses``
    (then 200); the first request waits for ``hold`` when one is given."""

    def __init__(self, statuses: list[int] | None = None, port: int = 0, hold: threading.Event | None = None):
        self.received: list[Received] = []
        self.statuses = list(statuses or [])
        self.hold = hold
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver._lock:
                    first = not receiver.received
                    receiver.received.append(
                        Received(
                            self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic()
                        )
                    )
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                if first and receiver.hold is not None:
                    receiver.hold.wait(60)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait(self, done: Callable[[list[Received]], bool], timeout_s: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                got = list(self.received)
            if done(got):
                return got
            time.sleep(0.05)
        raise AssertionError(f"receiver did not get what was expected in {timeout_s} s: {got}")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def subscribe(client: httpx.Client, url: str, events: list[str], **extra: object) -> dict:
    resp = client.post("/v1/webhooks", json={"url": url, "events": events, **extra})
    assert resp.status_code == 201, resp.text
    return resp.json()


def sandbox_events(received: list[Received], sandbox_id: str) -> list[Received]:
    return [
        r
        for r in received
        if r.headers["x-dnah-event"] == "sandbox.state_updated" and r.payload["data"]["id"] == sandbox_id
    ]


def first_copies(received: list[Received]) -> list[Received]:
    """One per delivery id, in the order first received (delivery is at least once)."""
    seen: dict[str, Received] = {}
    for r in received:
        seen.setdefault(r.headers["x-dnah-delivery-id"], r)
    return list(seen.values())


def states(received: list[Received]) -> list[tuple[str | None, str]]:
    return [(r.payload["data"]["previous_state"], r.payload["data"]["state"]) for r in received]


LIFECYCLE = [
    (None, "creating"),
    ("creating", "started"),
    ("started", "destroying"),
    ("destroying", "destroyed"),
]


def sql(stack: Stack, query: str, *args: object) -> list[asyncpg.Record]:
    async def go() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(stack.database_url)
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    return asyncio.run(go())


# the API ------------------------------------------------------------------------------------


def test_create_list_delete_and_the_secret_is_shown_once(org: httpx.Client, gateway: httpx.Client) -> None:
    made = subscribe(org, "https://example.test/hooks?x=1", ["sandbox.state_updated"])
    assert made["secret"].startswith("whsec_") and len(made["secret"]) > 30
    assert made["events"] == ["sandbox.state_updated"] and made["created_at"].endswith("Z")
    given = subscribe(org, "http://127.0.0.1:9/h", ["*"], secret="s" * 20)
    assert given["secret"] == "s" * 20

    items = org.get("/v1/webhooks").json()["items"]
    assert [w["id"] for w in items] == [made["id"], given["id"]]
    assert all(w["secret"] == "[redacted]" for w in items)
    assert made["secret"] not in json.dumps(items)

    with httpx.Client(
        base_url=org.base_url, headers={"authorization": f"Bearer {mint_key(gateway, 'other')}"}
    ) as other:
        assert other.get("/v1/webhooks").json()["items"] == []
        assert other.delete(f"/v1/webhooks/{made['id']}").status_code == 404
        assert other.get(f"/v1/webhooks/{made['id']}/deliveries").status_code == 404

    assert org.delete(f"/v1/webhooks/{made['id']}").status_code == 204
    assert org.delete(f"/v1/webhooks/{made['id']}").status_code == 404
    assert [w["id"] for w in org.get("/v1/webhooks").json()["items"]] == [given["id"]]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"url": "ftp://example.test/", "events": ["*"]}, "http:// or https://"),
        ({"url": "https://user:pw@example.test/", "events": ["*"]}, "credentials"),
        ({"url": "https:///nohost", "events": ["*"]}, "no host"),
        ({"url": "https://example.test:99999/", "events": ["*"]}, "not a valid URL"),
        ({"url": "https://example.test/", "events": []}, "at least one event"),
        ({"url": "https://example.test/", "events": ["sandbox.created"]}, "unknown event 'sandbox.created'"),
        ({"url": "https://example.test/", "events": ["*"], "secret": "short"}, "16 to 256"),
        ({"url": "https://example.test/", "events": ["*"], "secret": "has a space in it ok"}, "whitespace"),
        ({"url": "https://example.test/", "events": ["*"], "retries": 3}, "retries"),
        ({"events": ["*"]}, "url"),
    ],
)
def test_bad_input_is_a_clear_400(org: httpx.Client, body: dict, needle: str) -> None:
    resp = org.post("/v1/webhooks", json=body)
    assert resp.status_code == 400, resp.text
    assert needle in resp.json()["message"], resp.json()


# deliveries ---------------------------------------------------------------------------------


def test_a_sandbox_lifecycle_is_delivered_signed_and_in_order(
    stack: Stack, org: httpx.Client, gateway: httpx.Client, receiver: Receiver
) -> None:
    hook = subscribe(org, receiver.url, ["sandbox.state_updated"])
    # Neither a webhook for templates only nor another org's webhook gets these events.
    templates_only, other_org = Receiver(), Receiver()
    subscribe(org, templates_only.url, ["template.state_updated"])
    with httpx.Client(
        base_url=org.base_url, headers={"authorization": f"Bearer {mint_key(gateway, 'other')}"}
    ) as other:
        subscribe(other, other_org.url, ["*"])

    sbx = org.post("/v1/sandboxes", json={"name": "hooked", **COLD}).json()
    assert org.delete(f"/v1/sandboxes/{sbx['id']}").status_code == 200
    got = sandbox_events(receiver.wait(lambda r: len(sandbox_events(r, sbx["id"])) >= 4), sbx["id"])
    assert states(got) == LIFECYCLE

    for r in got:
        assert r.headers["content-type"] == "application/json"
        assert r.headers["x-dnah-event"] == "sandbox.state_updated"
        expected = hmac.new(hook["secret"].encode(), r.body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(r.headers["x-dnah-signature"], f"sha256={expected}")
        body = r.payload
        assert set(body) == {"event", "timestamp", "data"} and body["event"] == "sandbox.state_updated"
        assert body["timestamp"].endswith("Z")
        assert body["data"]["name"] == "hooked" and body["data"]["org_id"] == sbx["org_id"]
    assert len({r.headers["x-dnah-delivery-id"] for r in got}) == 4

    # The receiver has each body before the sender records the answer: wait for the records.
    def all_delivered() -> list[dict[str, Any]] | None:
        items: list[dict[str, Any]] = org.get(f"/v1/webhooks/{hook['id']}/deliveries").json()["items"]
        return items if [d["status"] for d in items] == ["delivered"] * 4 else None

    listed = wait_for(all_delivered, what="the four deliveries recorded as delivered")
    assert {d["id"] for d in listed} == {r.headers["x-dnah-delivery-id"] for r in got}
    # A barrier before the negative check: a template flip reaches both receivers, and each
    # webhook's deliveries go out in order, so once it is in, anything sent for the sandbox
    # (created before it) would be in too.
    template = f"wh-barrier-{free_port()}"
    sql(stack, "UPDATE hosts SET templates = array_append(templates, $1)", template)
    sql(stack, "UPDATE hosts SET templates = array_remove(templates, $1)", template)

    def flipped(received: list[Received]) -> bool:
        return sum(r.payload["data"].get("template") == template for r in received) >= 2

    for other_receiver in (templates_only, other_org):
        got_there = other_receiver.wait(flipped)
        assert not [r for r in got_there if r.payload["data"].get("id") == sbx["id"]], got_there
    assert all(r.headers["x-dnah-event"] == "template.state_updated" for r in templates_only.received)
    templates_only.close()
    other_org.close()


def test_event_filters_and_template_events(stack: Stack, org: httpx.Client) -> None:
    everything, sandboxes_only, templates_only = Receiver(), Receiver(), Receiver()
    subscribe(org, everything.url, ["*"])
    subscribe(org, sandboxes_only.url, ["sandbox.state_updated"])
    subscribe(org, templates_only.url, ["template.state_updated"])

    template = f"wh-tpl-{free_port()}"
    sql(stack, "UPDATE hosts SET templates = array_append(templates, $1)", template)
    sql(stack, "UPDATE hosts SET templates = array_remove(templates, $1)", template)
    sid = org.post("/v1/sandboxes", json=COLD).json()["id"]

    def mine(r: Received) -> bool:
        data = r.payload["data"]
        return data.get("id") == sid or (data.get("template") == template and "id" not in data)

    def flips(received: list[Received]) -> list[tuple[str, str]]:
        return [
            (r.payload["data"]["previous_state"], r.payload["data"]["state"])
            for r in received
            if r.headers["x-dnah-event"] == "template.state_updated"
            and r.payload["data"]["template"] == template
        ]

    all_got = everything.wait(lambda r: len([x for x in r if mine(x)]) >= 4)
    assert flips(all_got) == [("inactive", "active"), ("active", "inactive")]
    assert flips(templates_only.wait(lambda r: len(flips(r)) >= 2)) == [
        ("inactive", "active"),
        ("active", "inactive"),
    ]
    assert (
        states(sandbox_events(sandboxes_only.wait(lambda r: len(sandbox_events(r, sid)) >= 2), sid))
        == (LIFECYCLE[:2])
    )
    assert all(r.headers["x-dnah-event"] == "sandbox.state_updated" for r in sandboxes_only.received)
    assert all(r.headers["x-dnah-event"] == "template.state_updated" for r in templates_only.received)
    for r in (everything, sandboxes_only, templates_only):
        r.close()


def test_a_failing_receiver_is_retried_with_backoff_then_delivered_once(org: httpx.Client) -> None:
    receiver = Receiver(statuses=[500, 503, 200])
    hook = subscribe(org, receiver.url, ["sandbox.state_updated"])
    sid = org.post("/v1/sandboxes", json=COLD).json()["id"]
    got = receiver.wait(lambda r: len(sandbox_events(r, sid)) >= 4)  # 3 tries for the first, then the next
    first = [r for r in got if r.payload["data"]["state"] == "creating"]
    assert len(first) == 3 and len({r.headers["x-dnah-delivery-id"] for r in first}) == 1
    assert first[0].body == first[1].body == first[2].body
    gaps = [b.at - a.at for a, b in itertools.pairwise(first)]
    assert gaps[0] >= 0.9 and gaps[1] >= 1.9, gaps  # 1 s, then 2 s (plus jitter and polling)
    assert states(first_copies(sandbox_events(got, sid))[:2]) == LIFECYCLE[:2]  # order kept behind it

    listed = org.get(f"/v1/webhooks/{hook['id']}/deliveries").json()["items"]
    creating = next(d for d in listed if d["id"] == first[0].headers["x-dnah-delivery-id"])
    assert (creating["status"], creating["attempts"], creating["last_status"]) == ("delivered", 3, 200)
    receiver.close()


def test_a_receiver_that_is_down_gets_the_event_when_it_comes_up(org: httpx.Client) -> None:
    port = free_port()
    hook = subscribe(org, f"http://127.0.0.1:{port}/hook", ["sandbox.state_updated"])
    sid = org.post("/v1/sandboxes", json=COLD).json()["id"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        listed = org.get(f"/v1/webhooks/{hook['id']}/deliveries").json()["items"]
        head = listed[-1]
        if head["attempts"] >= 2:
            break
        time.sleep(0.2)
    assert head["status"] == "pending" and head["last_status"] is None
    assert "Connect" in head["last_error"] and head["next_attempt_at"]
    receiver = Receiver(port=port)
    got = receiver.wait(lambda r: len(sandbox_events(r, sid)) >= 2)
    assert states(first_copies(sandbox_events(got, sid))) == LIFECYCLE[:2]
    receiver.close()


def test_an_event_survives_the_core_being_killed_mid_delivery(stack: Stack, org: httpx.Client) -> None:
    """The core is SIGKILLed while the receiver holds the first delivery open: the events
    committed meanwhile are in the outbox, and the restarted core sends them all, the
    interrupted one again (same delivery id: receivers dedupe)."""
    release = threading.Event()
    receiver = Receiver(hold=release)
    subscribe(org, receiver.url, ["sandbox.state_updated"])
    sid = org.post("/v1/sandboxes", json=COLD).json()["id"]  # creating → started, both committed
    receiver.wait(lambda r: len(r) >= 1)
    stack.restart("core", hard=True)
    release.set()
    got = receiver.wait(lambda r: len(first_copies(sandbox_events(r, sid))) >= 2, timeout_s=40)
    assert states(first_copies(sandbox_events(got, sid))) == LIFECYCLE[:2]
    creating = [r for r in got if r.payload["data"]["state"] == "creating"]
    assert len(creating) == 2 and creating[0].body == creating[1].body  # sent again, identically
    assert creating[0].headers["x-dnah-delivery-id"] == creating[1].headers["x-dnah-delivery-id"]
    receiver.close()


def test_two_dispatchers_never_send_one_delivery_twice(stack: Stack, org: httpx.Client) -> None:
    """Two more dispatchers race the core's own over 60 deliveries to 6 webhooks."""
    receiver = Receiver()
    hooks = [subscribe(org, receiver.url + f"/{i}", ["sandbox.state_updated"]) for i in range(6)]
    org_id = sql(stack, "SELECT org_id FROM webhooks WHERE id = $1", hooks[0]["id"])[0]["org_id"]

    async def race() -> None:
        db = await create_pool(stack.database_url)
        config = WebhookConfig(poll_interval_s=0.05, allow_private=True)
        dispatchers = [Dispatcher(db, config), Dispatcher(db, config)]
        try:
            async with db.acquire() as conn:
                for i in range(10):
                    data = {"id": f"sbx_race{i}", "state": "started"}  # the pool encodes jsonb
                    await conn.execute(
                        "SELECT dnah_emit_event($1, 'sandbox.state_updated', $2::jsonb)", org_id, data
                    )
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and len(first_copies(receiver.received)) < 60:
                await asyncio.gather(*(d.run_once() for d in dispatchers))
                await asyncio.sleep(0.01)
        finally:
            for d in dispatchers:
                await d.close()
            await db.close()

    asyncio.run(race())
    got = receiver.wait(lambda r: len(first_copies(r)) >= 60)
    # A barrier before the negative check: one more event for all six webhooks, sent by the
    # core's dispatcher after everything before it on each webhook (deliveries go out in
    # order), so a late second copy of any of the 60 would arrive before it.
    emit = "SELECT dnah_emit_event($1, 'sandbox.state_updated', $2::jsonb)"
    sql(stack, emit, org_id, json.dumps({"id": "sbx_barrier", "state": "started"}))

    def barrier(r: Received) -> bool:
        return r.payload["data"]["id"] == "sbx_barrier"

    receiver.wait(lambda r: len({x.path for x in r if barrier(x)}) == 6)
    ids = [r.headers["x-dnah-delivery-id"] for r in receiver.received if not barrier(r)]
    assert len(ids) == 60 and len(set(ids)) == 60, "a delivery was sent twice"
    for i in range(6):  # and each webhook got its events in order
        assert [r.payload["data"]["id"] for r in got if r.path == f"/hook/{i}"] == [
            f"sbx_race{n}" for n in range(10)
        ]
    receiver.close()


# the outbox triggers and the dispatcher alone, on a scratch database ---------------------------


@pytest.fixture
async def scratch(stack: Stack) -> AsyncIterator[asyncpg.Pool]:
    """A database of its own, migrated from scratch: no core dispatches from it."""
    name = f"hooks_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(stack.database_url)
    await admin.execute(f"CREATE DATABASE {name}")
    pool = await create_pool(stack.database_url.replace("/dnah?", f"/{name}?"))
    async with pool.acquire() as conn:
        await migrate(conn)
    await pool.execute("INSERT INTO orgs (id, name) VALUES ('org_a', 'a'), ('org_b', 'b')")
    try:
        yield pool
    finally:
        await pool.close()
        await admin.execute(f"DROP DATABASE {name}")
        await admin.close()


async def add_webhook(db: asyncpg.Pool, org_id: str, url: str, events: list[str]) -> str:
    rec = WebhookRecord(
        id=f"wh_{uuid.uuid4().hex[:8]}",
        org_id=org_id,
        url=url,
        events=events,
        secret="s" * 16,
        created_at=datetime.now(UTC),
    )
    return (await webhooks_db.insert(db, rec)).id


async def set_host(
    db: asyncpg.Pool | asyncpg.Connection, name: str, templates: list[str], state: str = "ready"
) -> None:
    await db.execute(
        "INSERT INTO hosts (id, name, api_url, api_token, runtime, cpu, ram_mb, disk_gb, templates, state)"
        " VALUES ($1, $1, 'http://127.0.0.1:9', 't', 'namespace', 1, 1, 1, $2, $3)"
        " ON CONFLICT (name) DO UPDATE SET templates = EXCLUDED.templates, state = EXCLUDED.state",
        name,
        templates,
        state,
    )


async def test_template_events_follow_the_cluster_not_each_host(scratch: asyncpg.Pool) -> None:
    await add_webhook(scratch, "org_a", "http://127.0.0.1:9/a", ["template.state_updated"])
    await add_webhook(scratch, "org_b", "http://127.0.0.1:9/b", ["*"])
    await set_host(scratch, "h1", ["base"])  # base: active
    await set_host(scratch, "h2", ["base", "py"])  # py: active; base already was
    await set_host(scratch, "h1", ["base"], state="draining")  # h2 still has base: nothing
    await set_host(scratch, "h2", ["base"])  # py: inactive
    await scratch.execute("DELETE FROM hosts WHERE name = 'h2'")  # base: inactive
    events = await scratch.fetch("SELECT org_id, event, payload FROM webhook_events ORDER BY id")
    assert [(e["org_id"], e["event"]) for e in events] == [(None, "template.state_updated")] * 4
    assert [(e["payload"]["data"]["template"], e["payload"]["data"]["state"]) for e in events] == [
        ("base", "active"),
        ("py", "active"),
        ("py", "inactive"),
        ("base", "inactive"),
    ]
    # Cluster-wide events go to every org's subscribed webhooks.
    assert await scratch.fetchval("SELECT count(*) FROM webhook_deliveries") == 8


async def test_an_event_nobody_subscribes_to_is_not_stored(scratch: asyncpg.Pool) -> None:
    await add_webhook(scratch, "org_a", "http://127.0.0.1:9/a", ["template.state_updated"])
    await scratch.execute("SELECT dnah_emit_event('org_a', 'sandbox.state_updated', '{}'::jsonb)")
    await scratch.execute("SELECT dnah_emit_event('org_b', 'template.state_updated', '{}'::jsonb)")
    assert await scratch.fetchval("SELECT count(*) FROM webhook_events") == 0
    await set_host(scratch, "h1", ["base"])
    assert await scratch.fetchval("SELECT count(*) FROM webhook_events") == 1


async def test_no_event_without_a_committed_change(scratch: asyncpg.Pool) -> None:
    await add_webhook(scratch, "org_a", "http://127.0.0.1:9/a", ["*"])
    with contextlib.suppress(RuntimeError):
        async with scratch.acquire() as conn, conn.transaction():
            await set_host(conn, "h1", ["base"])
            raise RuntimeError("rolled back")
    assert await scratch.fetchval("SELECT count(*) FROM webhook_events") == 0
    assert await scratch.fetchval("SELECT count(*) FROM webhook_deliveries") == 0


async def test_a_delivery_is_dead_after_max_attempts(scratch: asyncpg.Pool) -> None:
    receiver = Receiver(statuses=[500] * 10)
    hook = await add_webhook(scratch, "org_a", receiver.url, ["*"])
    await add_webhook(scratch, "org_b", receiver.url + "/other-org", ["*"])
    await scratch.execute(
        "SELECT dnah_emit_event('org_a', 'sandbox.state_updated', '{\"id\": \"x\"}'::jsonb)"
    )
    dispatcher = Dispatcher(
        scratch, WebhookConfig(max_attempts=3, backoff_s=0.05, poll_interval_s=0.05, allow_private=True)
    )
    try:
        for _ in range(100):
            await dispatcher.run_once()
            if await scratch.fetchval("SELECT status FROM webhook_deliveries") == "dead":
                break
            await asyncio.sleep(0.02)
    finally:
        await dispatcher.close()
    (row,) = await webhooks_db.deliveries(scratch, hook, 10)
    assert (row.status, row.attempts, row.last_status) == ("dead", 3, 500)
    assert row.last_error == "the receiver answered 500"
    assert [r.path for r in receiver.received] == ["/hook"] * 3  # never the other org's webhook
    receiver.close()


def test_the_dispatcher_settings_come_from_the_environment() -> None:
    base = {"DNAH_DATABASE_URL": "postgresql://x", "DNAH_REDIS_URL": "redis://x", "DNAH_BOOTSTRAP_TOKEN": "t"}
    assert load_config(base).webhooks == WebhookConfig()
    tuned = load_config({**base, "DNAH_WEBHOOK_MAX_ATTEMPTS": "3", "DNAH_WEBHOOK_BACKOFF_S": "0.5"}).webhooks
    assert (tuned.max_attempts, tuned.backoff_s) == (3, 0.5)
    assert load_config({**base, "DNAH_WEBHOOK_ALLOW_PRIVATE": "1"}).webhooks.allow_private is True
    with pytest.raises(ConfigError, match="DNAH_WEBHOOK_TIMEOUT_S"):
        load_config({**base, "DNAH_WEBHOOK_TIMEOUT_S": "soon"})


def test_the_retry_schedule_doubles_up_to_its_cap_then_gives_up() -> None:
    config = WebhookConfig(max_attempts=5, backoff_s=1.0, backoff_max_s=3.0)
    delays = [retry_delay(config, n) for n in range(1, 6)]
    assert delays[4] is None
    for got, base in zip(delays[:4], [1.0, 2.0, 3.0, 3.0], strict=True):
        assert got is not None and base <= got <= base * 1.1


async def test_old_finished_deliveries_are_pruned_and_pending_ones_kept(scratch: asyncpg.Pool) -> None:
    hook = await add_webhook(scratch, "org_a", "http://127.0.0.1:9/hook", ["*"])
    for n in range(3):
        await scratch.execute(
            "SELECT dnah_emit_event('org_a', 'sandbox.state_updated', jsonb_build_object('n', $1::int))", n
        )
    rows = await scratch.fetch("SELECT id FROM webhook_deliveries WHERE webhook_id = $1 ORDER BY seq", hook)
    old_done, old_pending, new_done = (r["id"] for r in rows)
    await scratch.execute(
        "UPDATE webhook_deliveries SET status = 'delivered', created_at = now() - interval '10 days'"
        " WHERE id = $1",
        old_done,
    )
    await scratch.execute(
        "UPDATE webhook_deliveries SET created_at = now() - interval '10 days' WHERE id = $1", old_pending
    )
    await scratch.execute("UPDATE webhook_deliveries SET status = 'dead' WHERE id = $1", new_done)
    assert await webhooks_db.prune(scratch, 7) == 1
    left = {r["id"] for r in await scratch.fetch("SELECT id FROM webhook_deliveries")}
    assert left == {old_pending, new_done}
    assert await scratch.fetchval("SELECT count(*) FROM webhook_events") == 2  # the pruned one's event went


def test_a_dead_delivery_can_be_sent_again(stack: Stack, org: httpx.Client) -> None:
    receiver = Receiver()
    hook = subscribe(org, receiver.url, ["sandbox.state_updated"])
    sid = org.post("/v1/sandboxes", json=COLD).json()["id"]
    first = receiver.wait(lambda r: len(sandbox_events(r, sid)) >= 2)[0]
    delivery_id = first.headers["x-dnah-delivery-id"]
    base = f"/v1/webhooks/{hook['id']}/deliveries"
    refused = org.post(f"{base}/{delivery_id}/retry")
    assert refused.status_code == 409 and "delivered" in refused.json()["message"]
    assert org.post(f"{base}/00000000-0000-0000-0000-000000000000/retry").status_code == 404
    # as if every attempt had failed
    sql(
        stack, "UPDATE webhook_deliveries SET status = 'dead', attempts = 10 WHERE id::text = $1", delivery_id
    )
    again = org.post(f"{base}/{delivery_id}/retry")
    assert again.status_code == 202, again.text
    assert (again.json()["status"], again.json()["attempts"]) == ("pending", 0)
    copies = receiver.wait(lambda r: [x.headers["x-dnah-delivery-id"] for x in r].count(delivery_id) >= 2)
    resent = [r for r in copies if r.headers["x-dnah-delivery-id"] == delivery_id]
    assert resent[0].body == resent[1].body  # the same event, byte for byte
    listed = {d["id"]: d for d in org.get(base).json()["items"]}
    assert listed[delivery_id]["status"] == "delivered"
    receiver.close()
