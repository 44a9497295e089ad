"""E2B's envd at the core, file watchers: ``CreateWatcher``/``GetWatcherEvents``/``RemoveWatcher``
(the SDK's ``watch_dir``) and the ``WatchDir`` stream, over the agent's inotify watcher, with
E2B's ``EVENT_TYPE_*`` names. Plain HTTP in E2B's wire shapes against the core."""

from __future__ import annotations

import httpx

from tests.core.e2b_envd_support import STREAM, envelope, read_stream, unary
from tests.core.test_e2b_envd_files import envd, sid
from tests.support import wait_for

__all__ = ["envd", "sid"]  # fixtures used below


def test_polling_watcher(envd: httpx.Client) -> None:
    assert unary(envd, "filesystem.Filesystem/MakeDir", {"path": "watched"}).status_code == 200
    created = unary(envd, "filesystem.Filesystem/CreateWatcher", {"path": "watched", "recursive": True})
    assert created.status_code == 200, created.text
    watcher = {"watcherId": created.json()["watcherId"]}
    envd.post("/files", files=[("file", ("watched/sub/f.txt", b"x"))]).raise_for_status()
    seen: list[dict[str, str]] = []

    def saw_file() -> bool:
        resp = unary(envd, "filesystem.Filesystem/GetWatcherEvents", watcher)
        assert resp.status_code == 200, resp.text
        seen.extend(resp.json().get("events", []))
        return {"name": "sub/f.txt", "type": "EVENT_TYPE_CREATE"} in seen

    wait_for(saw_file, what="the new file's create event")
    assert all(e["type"].startswith("EVENT_TYPE_") for e in seen)
    removed = unary(envd, "filesystem.Filesystem/RemoveWatcher", watcher)
    assert removed.status_code == 200 and removed.json() == {}, removed.text
    after = unary(envd, "filesystem.Filesystem/GetWatcherEvents", watcher)
    assert after.json()["code"] == "not_found", after.text
    missing = unary(envd, "filesystem.Filesystem/CreateWatcher", {"path": "no/such/dir"})
    assert missing.json()["code"] == "not_found", missing.text


def test_watch_dir_stream(envd: httpx.Client) -> None:
    assert unary(envd, "filesystem.Filesystem/MakeDir", {"path": "streamed"}).status_code == 200
    request = envd.build_request(
        "POST",
        "/filesystem.Filesystem/WatchDir",
        content=envelope({"path": "streamed"}),
        headers={"Content-Type": STREAM, "Keepalive-Ping-Interval": "1"},
    )
    resp = envd.send(request, stream=True)
    try:
        messages = read_stream(resp)
        assert next(messages) == (0, {"start": {}})
        envd.post("/files", files=[("file", ("streamed/new.txt", b"x"))]).raise_for_status()
        for flags, message in messages:
            assert flags == 0, message
            if message.get("filesystem") == {"name": "new.txt", "type": "EVENT_TYPE_CREATE"}:
                break
            assert "filesystem" in message or message == {"keepalive": {}}, message
    finally:
        resp.close()
