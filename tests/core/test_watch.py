"""File watchers through the core's ``WatchService`` into a real sandbox (core → hostd's relay
→ the agent's inotify watcher): changes made by a command and by an upload, recursion, the
errors as core errors, and another org's sandbox being out of reach."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import httpx
import pytest

from contracts import guest
from core.config import CoreConfig
from core.errors import BadRequest, NotFound
from core.hostclient import HostClient
from core.services.sandboxes import SandboxService
from core.services.toolbox.watch import WatchService
from tests.support import await_for

CONFIG = CoreConfig(database_url="unused", redis_url="unused", bootstrap_token="unused")


@pytest.fixture
async def sandboxes(stack_db: asyncpg.Pool) -> AsyncIterator[SandboxService]:
    hosts = HostClient(timeout_s=30)
    yield SandboxService(stack_db, hosts, CONFIG)
    await hosts.close()


def sh(client: httpx.Client, sid: str, script: str) -> None:
    resp = client.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": ["sh", "-c", script]})
    assert resp.status_code == 200 and resp.json()["exit_code"] == 0, resp.text


async def test_watch_a_directory_in_a_sandbox(
    org: httpx.Client, stack_db: asyncpg.Pool, sandboxes: SandboxService
) -> None:
    made = org.post("/v1/sandboxes", json={})
    assert made.status_code == 201, made.text
    sid = made.json()["id"]
    org_id = await stack_db.fetchval("SELECT org_id FROM sandboxes WHERE id = $1", sid)
    watches = WatchService(sandboxes)
    sh(org, sid, "mkdir -p ~/w/old && echo x > ~/file")

    watch_id = await watches.create(org_id, sid, "w", recursive=True)
    sh(
        org,
        sid,
        "cd ~/w && echo a > f && mv f f2 && chmod 600 f2 && mkdir -p new/deep && echo b > old/g && rm f2",
    )

    seen: list[tuple[str, str]] = []

    def until(event: tuple[str, str]) -> Callable[[], Awaitable[bool]]:
        async def arrived() -> bool:
            result = await watches.events(org_id, sid, watch_id)
            assert isinstance(result, guest.FsWatchEventsResult) and not result.overflow, result
            seen.extend((event.name, event.type) for event in result.events)
            return event in seen

        return arrived

    # the agent reports new/deep once it watches it (found by a look into new, or notified)
    await await_for(until(("new/deep", "create")), what="new/deep watched", timeout_s=60)

    async def chunks() -> AsyncIterator[bytes]:
        yield b"uploaded"

    await sandboxes.upload(org_id, sid, "w/new/deep/up.txt", chunks())
    sh(org, sid, "touch ~/w/zz")
    await await_for(until(("zz", "create")), what="the marker's event", timeout_s=60)
    assert seen[:6] == [
        ("f", "create"),
        ("f", "write"),
        ("f", "rename"),
        ("f2", "create"),
        ("f2", "chmod"),
        ("new", "create"),
    ]
    rest = seen[6:]
    assert rest.index(("old/g", "create")) < rest.index(("old/g", "write")) < rest.index(("f2", "remove"))
    upload = rest.index(("new/deep/up.txt", "create"))  # an upload looks like a write in place
    assert rest[upload + 1 : rest.index(("zz", "create"))] == [("new/deep/up.txt", "write")]
    assert not any(".dnah-upload-" in name for name, _ in seen)

    with pytest.raises(NotFound):
        await watches.create(org_id, sid, "missing")
    with pytest.raises(BadRequest):
        await watches.create(org_id, sid, "file")
    other_org = await stack_db.fetchval("SELECT id FROM orgs WHERE id <> $1 LIMIT 1", org_id)
    with pytest.raises(NotFound):  # another org's sandbox does not exist for it
        await watches.events(other_org, sid, watch_id)
    await watches.remove(org_id, sid, watch_id)
    with pytest.raises(NotFound):
        await watches.events(org_id, sid, watch_id)
    with pytest.raises(NotFound):
        await watches.remove(org_id, sid, watch_id)
