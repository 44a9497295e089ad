"""The agent's file watchers (``fs.watch.*`` in ``contracts/guest.py``): changes under a
directory, kept per watcher until the host asks for them.

Design. One inotify instance serves every watcher of the sandbox (``Inotify``, a reader thread
started with the first watcher): instances are a per-user kernel resource (128 by default), so
one per watcher would let a few sandboxes starve the rest. The kernel gives the same watch
descriptor to every watch of one directory, so each descriptor maps to the watchers that want
it, with the directory's path relative to each one's root, and is removed once none does. A
recursive watcher adds a watch for every directory below its root when it is created and for
every directory that appears later (created, or moved in: what it already holds when its
watch is added is reported as created too, so a ``mkdir -p a/b/c`` or an unpacked archive is
not missed); a directory renamed within the tree keeps its watches under its new name, and
one moved away loses them. Only if the kernel has no
inotify for the agent does a thread poll instead (``Polling``): it compares listings every
``POLL_INTERVAL_S``, so it cannot tell a rename from a remove and a create.

What is reported. ``create`` (also for the new name of a rename, as Go's fsnotify, which E2B's
envd uses, reports it), ``write`` (``IN_MODIFY``), ``remove``, ``rename`` (the old name),
``chmod`` (``IN_ATTRIB``: mode, owner, times, links). Names are relative to the watched
directory. An event equal to the one queued just before it is not queued again (a large write is
many ``IN_MODIFY``). The agent's own uploads write a temporary file next to their target and
rename it over the target (``guest/transfer.py``): the temporary file is never reported, and
the rename is reported as ``create`` and ``write`` of the target, what writing it in place
looks like.

Bounds (``contracts.guest``): ``FS_WATCH_MAX`` watchers per sandbox, ``FS_WATCH_DIRS``
directories watched in all, ``FS_WATCH_QUEUE`` events (and ``FS_WATCH_QUEUE_BYTES`` of their
JSON) kept per watcher. Events past a full queue are dropped and the next ``fs.watch.events``
says ``overflow``, as it does after the kernel's own queue overflowed or when a new directory
could not be watched. A recursive watch stays on its root's filesystem (``/proc`` under ``/``
is not entered) and never follows symlinks.

Stdlib only, like the rest of the agent.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import stat
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable

from guest import framing
from guest.files import FsError, os_error, resolve
from guest.inotify import (
    IN_ATTRIB,
    IN_CREATE,
    IN_DELETE,
    IN_DONTFOLLOW,
    IN_EXCL_UNLINK,
    IN_IGNORED,
    IN_ISDIR,
    IN_MODIFY,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_ONLYDIR,
    IN_Q_OVERFLOW,
    Event,
    Inotify,
)

UPLOAD_PREFIX = ".dnah-upload-"
"""The name prefix of ``guest/transfer.py``'s temporary upload files."""
POLL_INTERVAL_S = 0.5
"""How often the polling fallback compares listings."""
EVENT_OVERHEAD = 32
"""JSON bytes of an event besides its name (``{"name":…,"type":"create"}``, a comma)."""

_MASK = (
    IN_CREATE | IN_MODIFY | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_ATTRIB | IN_ONLYDIR | IN_EXCL_UNLINK
)
_KINDS = (
    (IN_CREATE, "create"),
    (IN_MOVED_TO, "create"),
    (IN_MODIFY, "write"),
    (IN_DELETE, "remove"),
    (IN_MOVED_FROM, "rename"),
    (IN_ATTRIB, "chmod"),
)


class Watcher:
    """One ``fs.watch.create``: its root, and the events queued since the host last asked."""

    def __init__(self, watch_id: str, root: str, recursive: bool, device: int, now: float) -> None:
        self.id, self.root, self.recursive, self.device = watch_id, root, recursive, device
        self.used = now
        """When it was created or last asked for events (``Registry``'s clock)."""
        self.dirs: dict[str, int] = {}
        """inotify: each watched directory (relative to the root, "" for it) and its watch."""
        self.listing: dict[str, tuple[int, ...]] = {}
        """polling: what the last look found."""
        self.overflow = False
        self._events: list[tuple[str, str]] = []
        self._bytes = 0

    def push(self, name: str, kind: str) -> None:
        if os.path.basename(name).startswith(UPLOAD_PREFIX):
            return
        event = (name, kind)
        if self._events and self._events[-1] == event:
            return
        cost = len(json.dumps(name, ensure_ascii=False).encode()) + EVENT_OVERHEAD
        if len(self._events) >= framing.FS_WATCH_QUEUE or self._bytes + cost > framing.FS_WATCH_QUEUE_BYTES:
            self.overflow = True
            return
        self._events.append(event)
        self._bytes += cost

    def take(self) -> tuple[list[tuple[str, str]], bool]:
        """The queued events and whether any were lost, emptying the queue."""
        events, overflow = self._events, self.overflow
        self._events, self._bytes, self.overflow = [], 0, False
        return events, overflow


class Registry:
    """The sandbox's watchers. The backend (inotify, else polling) starts with the first one."""

    def __init__(self, *, polling: bool = False, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._watchers: dict[str, Watcher] = {}
        self._backend: Backend | None = None
        self._polling = polling
        self._clock = clock

    def create(self, root: str, recursive: bool) -> str:
        st = os.stat(root)
        if not stat.S_ISDIR(st.st_mode):
            raise FsError("bad_request", f"{root}: not a directory")
        with self._lock:
            if len(self._watchers) >= framing.FS_WATCH_MAX:
                self._evict()
            watcher = Watcher(str(uuid.uuid4()), root, recursive, st.st_dev, self._clock())
            self._start().attach(watcher)
            self._watchers[watcher.id] = watcher
        return watcher.id

    def events(self, watch_id: str) -> tuple[list[tuple[str, str]], bool]:
        with self._lock:
            watcher = self._get(watch_id)
            watcher.used = self._clock()
            return watcher.take()

    def remove(self, watch_id: str) -> None:
        with self._lock:
            watcher = self._get(watch_id)
            del self._watchers[watch_id]
            if self._backend is not None:
                self._backend.detach(watcher)

    def close(self) -> None:
        """Stop the backend's thread and drop every watcher."""
        with self._lock:
            backend, self._backend = self._backend, None
            self._watchers.clear()
        if backend is not None:
            backend.close()

    @property
    def backend(self) -> str | None:
        """``inotify`` or ``polling`` once a watcher started one."""
        return None if self._backend is None else self._backend.name

    def _get(self, watch_id: str) -> Watcher:
        watcher = self._watchers.get(watch_id)
        if watcher is None:
            raise FsError("not_found", f"no watcher {watch_id!r}")
        return watcher

    def _evict(self) -> None:
        """Make room for one more watcher by dropping the one asked least recently, if that
        was ``FS_WATCH_IDLE_MS`` ago (its client is most likely gone); else ``conflict``."""
        idlest = min(self._watchers.values(), key=lambda watcher: watcher.used)
        if (self._clock() - idlest.used) * 1000 < framing.FS_WATCH_IDLE_MS:
            raise FsError("conflict", f"{framing.FS_WATCH_MAX} watchers exist; remove one first")
        del self._watchers[idlest.id]
        if self._backend is not None:
            self._backend.detach(idlest)

    def _start(self) -> Backend:
        if self._backend is None:
            if not self._polling:
                try:
                    self._backend = InotifyBackend(self._lock, self._watchers)
                except OSError as exc:
                    print(f"guest.watch: no inotify ({exc}); polling", file=sys.stderr, flush=True)
            if self._backend is None:
                self._backend = PollingBackend(self._lock, self._watchers)
        return self._backend


class InotifyBackend:
    """Every watcher's directories on one inotify instance, read by one thread."""

    name = "inotify"

    def __init__(self, lock: threading.Lock, watchers: dict[str, Watcher]) -> None:
        self._inotify = Inotify()
        self._lock, self._watchers = lock, watchers
        self._owners: dict[int, dict[Watcher, str]] = {}
        """Each watch descriptor: the watchers it serves, and its directory relative to each."""
        self._uploads: deque[int] = deque(maxlen=64)
        """Cookies of renames away from an upload's temporary name, to recognise their other half."""
        self._moved_away: list[tuple[int, Watcher, str]] = []
        """Directories of recursive watchers renamed in this batch: cookie, watcher, old name."""
        self._wake_read, self._wake_write = os.pipe()
        self._thread = threading.Thread(target=self._run, name="fs-watch", daemon=True)
        self._thread.start()

    def attach(self, watcher: Watcher) -> None:
        """Watch the root (and with ``recursive`` every directory below it); all or nothing."""
        try:
            self._add(watcher, "", watcher.root, follow=True)
            if watcher.recursive:
                self._add_below(watcher, "", watcher.root, announce=False, strict=True)
        except BaseException:
            self.detach(watcher)
            raise

    def detach(self, watcher: Watcher) -> None:
        for wd in watcher.dirs.values():
            self._release(watcher, wd)
        watcher.dirs.clear()

    def close(self) -> None:
        os.write(self._wake_write, b"x")
        self._thread.join()
        self._inotify.close()
        os.close(self._wake_read)
        os.close(self._wake_write)

    def _add(self, watcher: Watcher, rel: str, path: str, *, follow: bool) -> None:
        if len(self._owners) >= framing.FS_WATCH_DIRS:
            message = f"{framing.FS_WATCH_DIRS} directories are watched in this sandbox already"
            raise FsError("bad_request", message)
        wd = self._inotify.add_watch(path, _MASK if follow else _MASK | IN_DONTFOLLOW)
        self._owners.setdefault(wd, {})[watcher] = rel
        watcher.dirs[rel] = wd

    def _add_below(self, watcher: Watcher, rel: str, path: str, *, announce: bool, strict: bool) -> None:
        """Watch the directories below ``path`` (``rel`` from the root) on the root's
        filesystem, without following symlinks; with ``announce``, report every entry found
        as created. Directories the user may not read are skipped. With ``strict`` a watch
        the kernel or ``FS_WATCH_DIRS`` refuses is an error, else it marks an overflow."""
        pending = [(rel, path)]
        while pending:
            rel, path = pending.pop()
            try:
                with os.scandir(path) as listing:
                    entries = list(listing)
            except OSError:
                continue
            for entry in entries:
                child = f"{rel}/{entry.name}" if rel else entry.name
                if announce:
                    watcher.push(child, "create")
                try:
                    if not entry.is_dir(follow_symlinks=False):
                        continue
                    if entry.stat(follow_symlinks=False).st_dev != watcher.device:
                        continue
                    self._add(watcher, child, entry.path, follow=False)
                except FsError:
                    if strict:
                        raise
                    watcher.overflow = True
                    return
                except OSError as exc:
                    if exc.errno not in (errno.ENOSPC, errno.ENOMEM):
                        continue  # gone meanwhile, or not readable by the user
                    if strict:
                        raise
                    watcher.overflow = True
                    return
                pending.append((child, entry.path))

    def _release(self, watcher: Watcher, wd: int) -> None:
        owners = self._owners.get(wd)
        if owners is None:
            return
        owners.pop(watcher, None)
        if not owners:
            del self._owners[wd]
            with contextlib.suppress(OSError):
                self._inotify.rm_watch(wd)

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._inotify.fd, select.POLLIN)
        poller.register(self._wake_read, select.POLLIN)
        while True:
            if any(fd == self._wake_read for fd, _ in poller.poll()):
                return
            events = self._inotify.read()
            with self._lock:
                try:
                    self._dispatch(events)
                except Exception as exc:  # a bug here must not end every watcher silently
                    print(f"guest.watch: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                    for watcher in self._watchers.values():
                        watcher.overflow = True

    def _dispatch(self, events: list[Event]) -> None:
        for event in events:
            if self._moved_away and not (
                event.mask & IN_MOVED_TO and any(cookie == event.cookie for cookie, _, _ in self._moved_away)
            ):
                self._settle_moves()
            if event.mask & IN_Q_OVERFLOW:
                for watcher in self._watchers.values():
                    watcher.overflow = True
                continue
            if event.mask & IN_IGNORED:  # the directory is gone (or its watch removed)
                for watcher, rel in self._owners.pop(event.wd, {}).items():
                    if watcher.dirs.get(rel) == event.wd:
                        del watcher.dirs[rel]
                continue
            owners = self._owners.get(event.wd)
            kind = next((kind for bit, kind in _KINDS if event.mask & bit), None)
            if not owners or not event.name or kind is None:
                continue  # an event of the watched directory itself
            if event.mask & IN_MOVED_FROM and event.name.startswith(UPLOAD_PREFIX):
                self._uploads.append(event.cookie)
            uploaded = bool(event.mask & IN_MOVED_TO) and event.cookie in self._uploads
            for watcher, rel in list(owners.items()):
                name = f"{rel}/{event.name}" if rel else event.name
                watcher.push(name, kind)
                if uploaded:
                    watcher.push(name, "write")
                if event.mask & IN_ISDIR and watcher.recursive:
                    self._follow_dir(watcher, name, event)
        self._settle_moves()

    def _settle_moves(self) -> None:
        """Directories renamed away whose ``IN_MOVED_TO`` did not follow (the kernel queues
        the two halves of a rename together) have left the tree: drop their watches before
        their events, now under a name that is no longer theirs, are reported."""
        for _, watcher, name in self._moved_away:
            self._drop(watcher, name)
        self._moved_away.clear()

    def _follow_dir(self, watcher: Watcher, name: str, event: Event) -> None:
        """A directory below a recursive watcher's root appeared, moved, or left. A rename
        within the tree keeps its watches (they follow the inode) under the new name; its
        ``IN_MOVED_FROM`` waits for its ``IN_MOVED_TO``, the next event, and without one the
        directory has left the tree (``_settle_moves``)."""
        if event.mask & IN_MOVED_FROM:
            self._moved_away.append((event.cookie, watcher, name))
            return
        if event.mask & IN_MOVED_TO:
            for i, (cookie, moved, old) in enumerate(self._moved_away):
                if cookie == event.cookie and moved is watcher:
                    del self._moved_away[i]
                    self._rename(watcher, old, name)
                    return
        path = os.path.join(watcher.root, name)
        try:
            self._add(watcher, name, path, follow=False)
        except FsError:
            watcher.overflow = True
            return
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.ENOMEM):
                watcher.overflow = True
            return  # gone already, or not readable by the user
        # entries made before the watch was in place have no events of their own
        self._add_below(watcher, name, path, announce=True, strict=False)

    def _rename(self, watcher: Watcher, old: str, new: str) -> None:
        moved = [rel for rel in watcher.dirs if rel == old or rel.startswith(f"{old}/")]
        wds = [(new + rel[len(old) :], watcher.dirs.pop(rel)) for rel in moved]
        for rel, wd in wds:
            watcher.dirs[rel] = wd
            self._owners[wd][watcher] = rel

    def _drop(self, watcher: Watcher, name: str) -> None:
        for rel in [rel for rel in watcher.dirs if rel == name or rel.startswith(f"{name}/")]:
            self._release(watcher, watcher.dirs.pop(rel))


class PollingBackend:
    """The fallback without inotify: a thread lists each watcher's tree every
    ``POLL_INTERVAL_S`` and reports the differences."""

    name = "polling"

    def __init__(self, lock: threading.Lock, watchers: dict[str, Watcher]) -> None:
        self._lock, self._watchers = lock, watchers
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fs-watch-poll", daemon=True)
        self._thread.start()

    def attach(self, watcher: Watcher) -> None:
        watcher.listing, _ = _listing(watcher)

    def detach(self, watcher: Watcher) -> None:
        watcher.listing = {}

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(POLL_INTERVAL_S):
            with self._lock:
                watchers = list(self._watchers.values())
            for watcher in watchers:
                listing, complete = _listing(watcher)  # outside the lock: it reads the disk
                with self._lock:
                    if self._watchers.get(watcher.id) is watcher:
                        _compare(watcher, listing)
                        watcher.overflow |= not complete


def _listing(watcher: Watcher) -> tuple[dict[str, tuple[int, ...]], bool]:
    """What is below the root now (name → inode, mode, owner, group, size, mtime; at most
    ``FS_WATCH_QUEUE`` entries) and whether that is all of it. The root must be there."""
    found: dict[str, tuple[int, ...]] = {}
    pending = [("", watcher.root)]
    strict = True
    while pending:
        rel, path = pending.pop()
        try:
            with os.scandir(path) as listing:
                entries = list(listing)
        except OSError:
            if strict:
                raise
            continue
        strict = False
        for entry in entries:
            if len(found) >= framing.FS_WATCH_QUEUE:
                return found, False
            name = f"{rel}/{entry.name}" if rel else entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            found[name] = (st.st_ino, st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns)
            if watcher.recursive and stat.S_ISDIR(st.st_mode) and st.st_dev == watcher.device:
                pending.append((name, entry.path))
    return found, True


def _compare(watcher: Watcher, listing: dict[str, tuple[int, ...]]) -> None:
    before = watcher.listing
    for name in sorted(listing.keys() - before.keys()):
        watcher.push(name, "create")
    for name in sorted(listing.keys() & before.keys()):
        old, new = before[name], listing[name]
        if (old[0], old[4], old[5]) != (new[0], new[4], new[5]) and not stat.S_ISDIR(new[1]):
            watcher.push(name, "write")
        if old[1:4] != new[1:4]:
            watcher.push(name, "chmod")
    for name in sorted(before.keys() - listing.keys()):
        watcher.push(name, "remove")
    watcher.listing = listing


Backend = InotifyBackend | PollingBackend

_registry: Registry | None = None
_registry_lock = threading.Lock()


def registry() -> Registry:
    """The agent's registry, made on first use."""
    global _registry
    with _registry_lock:
        if _registry is None:
            _registry = Registry()
        return _registry


def handle(request: framing.FsWatchRequest, base_env: dict[str, str]) -> dict[str, object]:
    """Answer one ``fs.watch.*`` request with the agent's registry."""
    return answer(registry(), request, base_env.get("HOME") or "/")


def answer(watchers: Registry, request: framing.FsWatchRequest, home: str) -> dict[str, object]:
    """Answer one ``fs.watch.*`` request; failures become ``error`` replies."""
    try:
        if request.kind == "fs.watch.create":
            watch_id = watchers.create(resolve(request.path, home), request.recursive)
            return framing.fs_watch_created(request.id, watch_id)
        if request.kind == "fs.watch.events":
            events, overflow = watchers.events(request.watch_id)
            found = [framing.fs_watch_event(name, kind) for name, kind in events]
            return framing.fs_watch_events_result(request.id, found, overflow)
        watchers.remove(request.watch_id)
        return framing.fs_done(request.id)
    except FsError as exc:
        return framing.error(request.id, exc.code, str(exc))
    except OSError as exc:
        return framing.error(request.id, *os_error(exc))
