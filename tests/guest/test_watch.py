"""The agent's file watchers (``guest/watch.py``): what each change of a directory reports,
recursion into present and future subdirectories, the bounds and their overflow, the errors;
the polling fallback; and the whole path through a real agent process, an upload included.

Events come from the kernel through the watcher's own thread, so every check waits for a
*marker*: a file created last, whose ``create`` comes after everything done before it (inotify
keeps the order). What arrived before the marker is then complete, and compared whole.
"""

from __future__ import annotations

import os
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from contracts import guest
from guest import framing, inotify, watch
from guest.framing import FsWatchRequest
from hosts.agent_client import AgentClient, wait_ready
from tests.guest.test_agent import StartAgent, start_agent, workdir
from tests.guest.test_transfer import upload
from tests.support import await_for, wait_for

__all__ = ["start_agent", "workdir"]  # fixtures used by this module

Events = list[tuple[str, str]]


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["inotify", "polling"])
def registry(request: pytest.FixtureRequest, clock: Clock) -> Iterator[watch.Registry]:
    registry = watch.Registry(polling=request.param == "polling", clock=clock)
    yield registry
    registry.close()


@pytest.fixture
def notified(clock: Clock) -> Iterator[watch.Registry]:
    """A registry on inotify only (what renames, coalescing and recursion need)."""
    registry = watch.Registry(clock=clock)
    yield registry
    registry.close()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "watched"
    path.mkdir()
    return path


def ask(registry: watch.Registry, home: Path, kind: str, **fields: object) -> dict:
    return watch.answer(registry, FsWatchRequest(1, kind, **fields), str(home))  # type: ignore[arg-type]


def create(registry: watch.Registry, path: Path, *, recursive: bool = False) -> str:
    reply = ask(registry, path.parent, "fs.watch.create", path=path.name, recursive=recursive)
    assert reply["t"] == "fs.watch.created", reply
    return str(reply["watch_id"])


def until_marker(registry: watch.Registry, watch_id: str, marker: Path) -> Events:
    """Create ``marker`` and return every event before its ``create``; the marker's events
    (and anything after them) are dropped."""
    marker.write_bytes(b"")
    name = marker.name
    seen: Events = []

    def arrived() -> bool:
        events, overflow = registry.events(watch_id)
        assert not overflow
        seen.extend(events)
        return any(event == (name, "create") or event[0].endswith(f"/{name}") for event in seen)

    wait_for(arrived, what=f"the marker {name}", timeout_s=60)
    return seen[: next(i for i, event in enumerate(seen) if event[0].split("/")[-1] == name)]


def test_each_change_is_reported_with_its_type_and_name(notified: watch.Registry, root: Path) -> None:
    watch_id = create(notified, root)
    (root / "a.txt").write_text("hello")
    os.chmod(root / "a.txt", 0o600)
    os.rename(root / "a.txt", root / "b.txt")
    os.remove(root / "b.txt")
    (root / "sub").mkdir()
    assert until_marker(notified, watch_id, root / "zz") == [
        ("a.txt", "create"),
        ("a.txt", "write"),
        ("a.txt", "chmod"),
        ("a.txt", "rename"),
        ("b.txt", "create"),
        ("b.txt", "remove"),
        ("sub", "create"),
    ]
    assert notified.backend == "inotify"


def test_events_are_taken_once(notified: watch.Registry, root: Path) -> None:
    watch_id = create(notified, root)
    (root / "one").write_bytes(b"")
    assert until_marker(notified, watch_id, root / "m1") == [("one", "create")]
    assert notified.events(watch_id) == ([], False)
    (root / "two").write_bytes(b"")
    assert until_marker(notified, watch_id, root / "m2") == [("two", "create")]


def test_repeated_writes_are_one_event(notified: watch.Registry, root: Path, tmp_path: Path) -> None:
    (root / "big").write_bytes(b"")
    watch_id = create(notified, root)
    with open(root / "big", "wb") as f:
        for _ in range(50):
            f.write(b"x" * 4096)
            f.flush()
    barrier(notified, tmp_path)  # all of them queued before the one look
    assert notified.events(watch_id) == ([("big", "write")], False)


def test_a_plain_watch_does_not_look_into_subdirectories(notified: watch.Registry, root: Path) -> None:
    (root / "sub").mkdir()
    watch_id = create(notified, root)
    (root / "sub" / "inside").write_text("x")
    assert until_marker(notified, watch_id, root / "zz") == []


def test_a_recursive_watch_follows_present_and_new_subdirectories(
    notified: watch.Registry, root: Path, tmp_path: Path
) -> None:
    (root / "old" / "deep").mkdir(parents=True)
    watch_id = create(notified, root, recursive=True)
    (root / "old" / "deep" / "f").write_text("x")
    (root / "new" / "a" / "b").mkdir(parents=True)
    (root / "new" / "a" / "b" / "g").write_text("y")
    events = until_marker(notified, watch_id, root / "zz")
    assert events[:3] == [("old/deep/f", "create"), ("old/deep/f", "write"), ("new", "create")]
    # the new tree is watched as it appears: each level's creation is reported, by the kernel
    # or by the look into a directory just watched, whichever saw it first
    assert {name for name, kind in events[3:] if kind == "create"} == {"new/a", "new/a/b", "new/a/b/g"}
    assert ("new/a/b/g", "write") in events or ("new/a/b/g", "create") in events

    os.rename(root / "new", root / "renamed")  # within the tree: followed under its new name
    shutil.move(root / "old", tmp_path / "away")  # out of the tree: no longer watched
    (root / "renamed" / "a" / "h").write_text("z")
    (tmp_path / "away" / "deep" / "f").write_text("unseen")
    assert until_marker(notified, watch_id, root / "renamed" / "a" / "zz") == [
        ("new", "rename"),
        ("renamed", "create"),
        ("old", "rename"),
        ("renamed/a/h", "create"),
        ("renamed/a/h", "write"),
    ]


def test_uploads_look_like_writes_in_place(notified: watch.Registry, root: Path) -> None:
    """``guest/transfer.py`` writes a temporary ``.dnah-upload-*`` file and renames it over
    the target (the real thing runs in ``test_through_the_agent``)."""
    (root / "target").write_text("old")
    watch_id = create(notified, root)
    temporary = root / ".dnah-upload-x1"
    temporary.write_text("new")
    os.chmod(temporary, 0o644)
    os.rename(temporary, root / "target")
    assert until_marker(notified, watch_id, root / "zz") == [("target", "create"), ("target", "write")]


def test_the_polling_fallback_reports_changes(clock: Clock, root: Path) -> None:
    registry = watch.Registry(polling=True, clock=clock)
    try:
        (root / "kept").write_text("1")
        (root / "sub").mkdir()
        watch_id = create(registry, root, recursive=True)
        assert registry.backend == "polling"
        seen: Events = []

        def saw(*expected: tuple[str, str]) -> bool:
            seen.extend(registry.events(watch_id)[0])
            return all(event in seen for event in expected)

        (root / "sub" / "new").write_text("x")
        wait_for(lambda: saw(("sub/new", "create")), what="a create")
        (root / "kept").write_text("22")
        os.chmod(root / "sub" / "new", 0o600)
        wait_for(lambda: saw(("kept", "write"), ("sub/new", "chmod")), what="a write and a chmod")
        os.rename(root / "kept", root / "moved")
        wait_for(lambda: saw(("kept", "remove"), ("moved", "create")), what="a rename")
        assert all(kind in ("create", "write", "chmod", "remove") for _, kind in seen)
    finally:
        registry.close()


# bounds ---------------------------------------------------------------------------------------


def barrier(registry: watch.Registry, tmp_path: Path) -> None:
    """Wait until the watcher thread has read everything the kernel queued so far: a marker
    made in a directory of its own, watched apart, arrives after all of it."""
    elsewhere = tmp_path / "barrier"
    elsewhere.mkdir(exist_ok=True)
    until_marker(registry, create(registry, elsewhere), elsewhere / "marker")


def test_a_full_queue_drops_events_and_says_so(
    notified: watch.Registry, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(framing, "FS_WATCH_QUEUE", 5)
    watch_id = create(notified, root)
    for i in range(20):
        (root / f"f{i:02}").write_bytes(b"")
    barrier(notified, tmp_path)
    assert notified.events(watch_id) == ([(f"f{i:02}", "create") for i in range(5)], True)
    assert notified.events(watch_id) == ([], False)
    (root / "after").write_bytes(b"")
    assert until_marker(notified, watch_id, root / "zz") == [("after", "create")]


def test_the_queue_is_bounded_in_bytes(
    notified: watch.Registry, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(framing, "FS_WATCH_QUEUE_BYTES", 300)  # one 200-character name fits
    watch_id = create(notified, root)
    names = [f"{'n' * 200}{i}" for i in range(3)]
    for name in names:
        (root / name).write_bytes(b"")
    barrier(notified, tmp_path)
    assert notified.events(watch_id) == ([(names[0], "create")], True)


def test_watchers_are_bounded_and_idle_ones_make_room(
    notified: watch.Registry, root: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(framing, "FS_WATCH_MAX", 2)
    first = create(notified, root)
    clock.now += 1
    second = create(notified, root)
    refused = ask(notified, root, "fs.watch.create", path=str(root))
    assert (refused["t"], refused["code"]) == ("error", "conflict")
    clock.now += framing.FS_WATCH_IDLE_MS / 1000 - 1  # second has not been idle long enough
    notified.events(first)  # and first was just asked
    assert ask(notified, root, "fs.watch.create", path=str(root))["code"] == "conflict"
    clock.now += 2
    third = create(notified, root)  # second, asked least recently and idle long enough, goes
    assert ask(notified, root, "fs.watch.events", watch_id=second)["code"] == "not_found"
    (root / "x").write_bytes(b"")
    assert until_marker(notified, first, root / "zz") == [("x", "create")]
    assert until_marker(notified, third, root / "zz2") == [("x", "create"), ("zz", "create")]


def test_watched_directories_are_bounded(
    notified: watch.Registry, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(framing, "FS_WATCH_DIRS", 3)
    for name in ("a", "b", "c"):
        (root / "big" / name).mkdir(parents=True)
    refused = ask(notified, root, "fs.watch.create", path="big", recursive=True)  # 4 directories
    assert (refused["t"], refused["code"]) == ("error", "bad_request")
    assert "3 directories" in refused["message"]
    shutil.rmtree(root / "big" / "c")
    watch_id = create(notified, root / "big", recursive=True)  # 3: nothing of the refusal is left
    (root / "big" / "d").mkdir()  # a 4th cannot be watched: said, not silent
    wait_for(lambda: notified.events(watch_id)[1], what="an overflow")
    notified.remove(watch_id)
    assert create(notified, root / "big")  # removing released every watch: one more fits


# errors ---------------------------------------------------------------------------------------


def test_errors(registry: watch.Registry, root: Path) -> None:
    missing = ask(registry, root, "fs.watch.create", path="missing")
    assert (missing["t"], missing["code"]) == ("error", "not_found")
    (root / "file").write_text("x")
    not_dir = ask(registry, root, "fs.watch.create", path="file")
    assert (not_dir["t"], not_dir["code"]) == ("error", "bad_request")
    for kind in ("fs.watch.events", "fs.watch.remove"):
        unknown = ask(registry, root, kind, watch_id="no-such-watcher")
        assert (unknown["t"], unknown["code"]) == ("error", "not_found")
    watch_id = create(registry, root)
    assert ask(registry, root, "fs.watch.remove", watch_id=watch_id) == {"t": "fs.done", "id": 1}
    assert ask(registry, root, "fs.watch.events", watch_id=watch_id)["code"] == "not_found"
    empty = ask(registry, root, "fs.watch.create", path="")
    assert (empty["t"], empty["code"]) == ("error", "bad_request")


def test_inotify_events_parse_whole_and_names_are_text() -> None:
    def event(wd: int, mask: int, cookie: int, name: bytes) -> bytes:
        padded = name + b"\0" * (16 - len(name)) if name else b""
        return struct.pack("iIII", wd, mask, cookie, len(padded)) + padded

    data = event(1, inotify.IN_CREATE, 0, b"caf\xe9") + event(-1, inotify.IN_Q_OVERFLOW, 0, b"")
    parsed = inotify.parse(data)
    assert [(e.wd, e.mask, e.name) for e in parsed] == [
        (1, inotify.IN_CREATE, "caf\ufffd"),
        (-1, inotify.IN_Q_OVERFLOW, ""),
    ]


# through a real agent ---------------------------------------------------------------------------


async def test_through_the_agent(start_agent: StartAgent, tmp_path: Path) -> None:
    agent = start_agent(init=True)
    root = tmp_path / "box"
    root.mkdir()
    client: AgentClient = await wait_ready(agent.socket_path, timeout=10)
    try:
        created = await client.call(guest.FsWatchCreate(id=0, path=str(root), recursive=True))
        assert isinstance(created, guest.FsWatchCreated), created
        written = await upload(agent, root / "up.txt", b"x" * 300_000, chunk=65536)
        assert isinstance(written, guest.FsWritten), written
        (root / "zz").write_bytes(b"")
        seen: list[guest.FsWatchEvent] = []

        async def until_marker() -> bool:
            reply = await client.call(guest.FsWatchEvents(id=0, watch_id=created.watch_id))
            assert isinstance(reply, guest.FsWatchEventsResult) and not reply.overflow, reply
            seen.extend(reply.events)
            return any(event.name == "zz" for event in seen)

        await await_for(until_marker, what="the marker")
        assert [(e.name, e.type) for e in seen] == [
            ("up.txt", "create"),
            ("up.txt", "write"),
            ("zz", "create"),
        ]
        removed = await client.call(guest.FsWatchRemove(id=0, watch_id=created.watch_id))
        assert isinstance(removed, guest.FsDone)
        gone = await client.call(guest.FsWatchEvents(id=0, watch_id=created.watch_id))
        assert isinstance(gone, guest.Error) and gone.code == "not_found"
    finally:
        await client.close()
