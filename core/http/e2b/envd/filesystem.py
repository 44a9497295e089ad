"""envd's ``filesystem.Filesystem`` Connect service over ``FileService`` (and the watch service).

The mapping onto our file operations, where envd's semantics differ from ours:

- ``Stat``/``ListDir``: ``EntryInfo`` from our entries (``type`` from the mode's first letter,
  ``mode`` the permission bits, ``permissions`` the ``-rw-r--r--`` string, ``size`` as a
  string, ``modifiedTime`` RFC 3339); ``depth`` 0 lists one level, as 1 does.
- ``MakeDir``: envd's ``already_exists`` when the path exists (our ``mkdir -p`` takes it).
- ``Move``: an existing destination is ``already_exists`` (ours refuses to replace it).
- ``Remove``: a directory goes with everything in it, as envd's does.
- ``WatchDir`` streams what ``CreateWatcher``/``GetWatcherEvents`` poll: the agent's watcher,
  asked every ``WATCH_POLL_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import msgspec

from contracts import guest
from core.errors import NotFound
from core.http.e2b.envd import connect
from core.http.e2b.envd.context import Envd
from guard.reply import Receive, Scope, Send

WATCH_POLL_S = 0.1
"""How often a ``WatchDir`` stream asks the agent's watcher for events."""

_TYPES = {"d": "FILE_TYPE_DIRECTORY", "L": "FILE_TYPE_SYMLINK", "-": "FILE_TYPE_FILE"}
_EVENTS = {
    "create": "EVENT_TYPE_CREATE",
    "write": "EVENT_TYPE_WRITE",
    "remove": "EVENT_TYPE_REMOVE",
    "rename": "EVENT_TYPE_RENAME",
    "chmod": "EVENT_TYPE_CHMOD",
}


class _Camel(msgspec.Struct, rename="camel", omit_defaults=True, forbid_unknown_fields=False):
    pass


class EntryInfo(_Camel):
    name: str
    type: str
    path: str
    size: str
    mode: int
    permissions: str
    owner: str
    group: str
    modified_time: str
    symlink_target: str | None = None


class PathRequest(_Camel):
    path: str = ""


class ListDirRequest(_Camel):
    path: str = ""
    depth: int = 0


class MoveRequest(_Camel):
    source: str = ""
    destination: str = ""


class WatchRequest(_Camel):
    path: str = ""
    recursive: bool = False
    include_entry: bool = False
    allow_network_mounts: bool = False


class WatcherRequest(_Camel):
    watcher_id: str = ""


class EntryResponse(_Camel):
    entry: EntryInfo


class ListDirResponse(_Camel):
    entries: list[EntryInfo]


class Empty(_Camel):
    pass


class FilesystemEvent(_Camel):
    name: str
    type: str


class CreateWatcherResponse(_Camel):
    watcher_id: str


class GetWatcherEventsResponse(_Camel):
    events: list[FilesystemEvent]


class WatchDirResponse(_Camel):
    start: Empty | None = None
    filesystem: FilesystemEvent | None = None
    keepalive: Empty | None = None


def entry_info(entry: guest.FsEntry) -> EntryInfo:
    modified = datetime.fromtimestamp(entry.mtime_ns / 1e9, UTC)
    return EntryInfo(
        name=entry.name,
        type=_TYPES.get(entry.mode[:1], "FILE_TYPE_UNSPECIFIED"),
        path=entry.path,
        size=str(entry.size),
        mode=int(entry.permissions, 8) if entry.permissions.isdigit() else 0,
        permissions=entry.mode,
        owner=entry.owner,
        group=entry.group,
        modified_time=modified.isoformat().replace("+00:00", "Z"),
        symlink_target=entry.link_target,
    )


def _required(value: str, field: str) -> str:
    if not value:
        raise connect.RpcError("invalid_argument", f"{field} is required")
    return value


async def _stat(envd: Envd, body: bytes) -> EntryResponse:
    req = connect.decode(body, PathRequest)
    entry = await envd.files.stat(envd.org_id, envd.sandbox_id, _required(req.path, "path"))
    return EntryResponse(entry=entry_info(entry))


async def _list_dir(envd: Envd, body: bytes) -> ListDirResponse:
    req = connect.decode(body, ListDirRequest)
    if req.depth < 0:
        raise connect.RpcError("invalid_argument", "depth must be 0 or more")
    listed = await envd.files.list_dir(envd.org_id, envd.sandbox_id, req.path or ".", depth=max(req.depth, 1))
    return ListDirResponse(entries=[entry_info(e) for e in listed.entries])


async def _make_dir(envd: Envd, body: bytes) -> EntryResponse:
    path = _required(connect.decode(body, PathRequest).path, "path")
    if await _exists(envd, path):
        raise connect.RpcError("already_exists", f"{path} already exists")
    await envd.files.make_dir(envd.org_id, envd.sandbox_id, path)
    return EntryResponse(entry=entry_info(await envd.files.stat(envd.org_id, envd.sandbox_id, path)))


async def _move(envd: Envd, body: bytes) -> EntryResponse:
    req = connect.decode(body, MoveRequest)
    source, destination = _required(req.source, "source"), _required(req.destination, "destination")
    await envd.files.move(envd.org_id, envd.sandbox_id, source, destination)
    return EntryResponse(entry=entry_info(await envd.files.stat(envd.org_id, envd.sandbox_id, destination)))


async def _remove(envd: Envd, body: bytes) -> Empty:
    path = _required(connect.decode(body, PathRequest).path, "path")
    await envd.files.remove(envd.org_id, envd.sandbox_id, path, recursive=True)
    return Empty()


async def _exists(envd: Envd, path: str) -> bool:
    try:
        await envd.files.stat(envd.org_id, envd.sandbox_id, path)
    except NotFound:
        return False
    return True


def _event(event: guest.FsWatchEvent) -> FilesystemEvent:
    return FilesystemEvent(name=event.name, type=_EVENTS[event.type])


def _watch_path(req: WatchRequest) -> str:
    if req.include_entry:
        raise connect.RpcError("invalid_argument", "include_entry needs envd 0.6.3; this envd is older")
    return _required(req.path, "path")


async def _create_watcher(envd: Envd, body: bytes) -> CreateWatcherResponse:
    req = connect.decode(body, WatchRequest)
    path = _watch_path(req)
    watch_id = await envd.watches.create(envd.org_id, envd.sandbox_id, path, recursive=req.recursive)
    return CreateWatcherResponse(watcher_id=watch_id)


async def _get_watcher_events(envd: Envd, body: bytes) -> GetWatcherEventsResponse:
    watch_id = _required(connect.decode(body, WatcherRequest).watcher_id, "watcherId")
    result = await envd.watches.events(envd.org_id, envd.sandbox_id, watch_id)
    return GetWatcherEventsResponse(events=[_event(e) for e in result.events])


async def _remove_watcher(envd: Envd, body: bytes) -> Empty:
    watch_id = _required(connect.decode(body, WatcherRequest).watcher_id, "watcherId")
    await envd.watches.remove(envd.org_id, envd.sandbox_id, watch_id)
    return Empty()


async def _watch_events(envd: Envd, body: bytes) -> AsyncIterator[WatchDirResponse]:
    """``start``, then the watcher's events as it is polled, until the client leaves (or its
    deadline passes); the watcher is removed at the end."""
    req = connect.decode(connect.single_envelope(body), WatchRequest)
    path = _watch_path(req)
    watch_id = await envd.watches.create(envd.org_id, envd.sandbox_id, path, recursive=req.recursive)
    try:
        yield WatchDirResponse(start=Empty())
        while True:
            result = await envd.watches.events(envd.org_id, envd.sandbox_id, watch_id)
            for event in result.events:
                yield WatchDirResponse(filesystem=_event(event))
            if not result.events:
                await asyncio.sleep(WATCH_POLL_S)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.shield(envd.watches.remove(envd.org_id, envd.sandbox_id, watch_id))


async def _watch_dir(envd: Envd, scope: Scope, receive: Receive, send: Send) -> None:
    try:
        body = await connect.read_unary(receive)
    except ConnectionError:
        return
    await connect.serve_stream(
        receive,
        send,
        envd.headers,
        _watch_events(envd, body),
        keepalive=lambda: WatchDirResponse(keepalive=Empty()),
    )


def _unary(handler: Callable[[Envd, bytes], Awaitable[msgspec.Struct]]) -> Callable[..., Awaitable[None]]:
    async def serve(envd: Envd, scope: Scope, receive: Receive, send: Send) -> None:
        await connect.serve_unary(receive, send, envd.headers, lambda body: handler(envd, body))

    return serve


FILESYSTEM_RPCS: dict[str, Callable[[Envd, Scope, Receive, Send], Awaitable[None]]] = {
    "filesystem.Filesystem/Stat": _unary(_stat),
    "filesystem.Filesystem/ListDir": _unary(_list_dir),
    "filesystem.Filesystem/MakeDir": _unary(_make_dir),
    "filesystem.Filesystem/Move": _unary(_move),
    "filesystem.Filesystem/Remove": _unary(_remove),
    "filesystem.Filesystem/CreateWatcher": _unary(_create_watcher),
    "filesystem.Filesystem/GetWatcherEvents": _unary(_get_watcher_events),
    "filesystem.Filesystem/RemoveWatcher": _unary(_remove_watcher),
    "filesystem.Filesystem/WatchDir": _watch_dir,
}
"""The calls this module serves, by ``<service>/<method>``."""
