"""File watchers inside a sandbox (``guest/watch.py`` answers): create one on a directory, take
the events it queued since the last look, remove it. E2B's envd ``WatchDir`` stream and its
``CreateWatcher``/``GetWatcherEvents``/``RemoveWatcher`` calls are built on these three.

A watcher lives in the sandbox's agent, so it survives its client: whoever creates one removes
it (the agent drops one left idle for ``guest.FS_WATCH_IDLE_MS`` only when it needs the room,
at ``guest.FS_WATCH_MAX`` watchers). Creating and removing count as activity; taking events
does not, as a read: a client polling a watcher does not by itself keep a sandbox from going
idle. ``overflow`` in a result means events were lost since the previous look (a full queue,
or a directory that could not be watched): the client should read the directory again.
"""

from __future__ import annotations

from contracts import guest
from core.services.sandboxes import SandboxService


class WatchService:
    def __init__(self, sandboxes: SandboxService) -> None:
        self._sandboxes = sandboxes

    async def create(self, org_id: str, ref: str, path: str, *, recursive: bool = False) -> str:
        """Watch directory ``path`` (relative paths start at the home; with ``recursive``,
        the tree below it); the watcher's id. A missing directory is a 404, a file a 400, too
        many watchers a 409."""
        msg = guest.FsWatchCreate(id=0, path=path, recursive=recursive)
        return (await self._sandboxes.ask(org_id, ref, msg, guest.FsWatchCreated)).watch_id

    async def events(self, org_id: str, ref: str, watch_id: str) -> guest.FsWatchEventsResult:
        """The events since the previous call (or the create), oldest first; an unknown
        watcher is a 404."""
        msg = guest.FsWatchEvents(id=0, watch_id=watch_id)
        return await self._sandboxes.ask(org_id, ref, msg, guest.FsWatchEventsResult, activity=False)

    async def remove(self, org_id: str, ref: str, watch_id: str) -> None:
        """Stop the watcher; an unknown one is a 404."""
        msg = guest.FsWatchRemove(id=0, watch_id=watch_id)
        await self._sandboxes.ask(org_id, ref, msg, guest.FsDone)
