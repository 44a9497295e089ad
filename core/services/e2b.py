"""E2B's control plane over the core's services: what E2B means by a timeout, by running and
paused, by its network options, and by a snapshot used as a template (docs/e2b.md, "Control
plane"). The HTTP adapter (``core/http/e2b/``) only translates wire shapes; every decision of
this shape is here.

- **Timeout.** E2B gives every sandbox an end: ``deadline_at`` (absolute) and ``on_deadline``
  (``delete``, E2B's kill, or ``pause`` with ``autoPause``); the reaper acts on it
  (``core/services/reaper.py``). ``set_timeout`` sets it from now (shorter or longer);
  ``connect`` and ``refresh`` only lengthen a running sandbox's; a resume gives a fresh one.
  A pause clears it: the timeout does not run while a sandbox is paused.
- **States.** E2B knows ``running`` and ``paused``. Ours map onto them by what a client can do
  next: a sandbox that is or is becoming started is running; one that is paused, stopped,
  archived, in error, or on its way there is paused (``connect`` brings each back: resume,
  start, unarchive and start, recover). ``destroying``/``destroyed`` ones do not exist for E2B
  (404).
- **Network.** ``allow_internet_access: false`` and ``denyOut: ["0.0.0.0/0"]`` mean nothing
  but ``allowOut``: our ``deny`` policy listing it. A ``denyOut`` of addresses alone is our
  ``allow`` policy listing them. E2B lets ``allowOut`` win over ``denyOut``, which our
  policies can express only when ``denyOut`` is everything, so ``allowOut`` beside a partial
  ``denyOut`` is a 400; ``allowOut`` alone allows what is allowed anyway (nothing changes).
  ``allowPublicTraffic`` (default true) is our ``public``; a private sandbox's
  ``trafficAccessToken`` is its preview token.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import secrets
from datetime import UTC, datetime, timedelta
from typing import Literal

import asyncpg
import msgspec
import structlog

from contracts import guest
from contracts.e2b_api import DEFAULT_TIMEOUT_S
from contracts.host import EgressPolicy
from contracts.netrules import check_cidr, check_domain, check_rules
from core.db import sandboxes as sandboxes_db
from core.db import snapshots as snapshots_db
from core.db.sandboxes import SandboxRecord
from core.db.snapshots import SnapshotRecord
from core.errors import BadRequest, Conflict, CoreError, NotFound
from core.services.egress import EgressService, policy_of
from core.services.lifecycle import LifecycleService
from core.services.preview import PreviewService
from core.services.sandboxes import NewSandbox, SandboxMetrics, SandboxService
from core.services.snapshots import SnapshotService
from core.states import TRANSITIONAL

log = structlog.get_logger()

RUNNING = frozenset({"creating", "started", "starting", "resuming", "restoring"})
"""Our states E2B sees as ``running``."""
PAUSED = frozenset(
    {"pausing", "paused", "stopping", "stopped", "archiving", "archived", "unarchiving", "error"}
)
"""Our states E2B sees as ``paused``."""
VISIBLE = RUNNING | PAUSED
UNDER_WAY = TRANSITIONAL | {"creating"}
"""States an operation is moving the sandbox through (``settled`` waits them out)."""
SETTLE_WAIT_S = 120.0
"""How long a call waits for another operation on the sandbox to finish (then 409)."""
_SETTLE_POLL_S = 0.1
ALL_TRAFFIC = frozenset({"0.0.0.0/0", "::/0"})
"""A ``denyOut`` entry that denies everything (the SDK's ``ALL_TRAFFIC``, and IPv6's)."""
NEVER = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
"""``endAt`` of a running sandbox with no deadline (one made through another API)."""
E2B_DEFAULT_TEMPLATE = "base"
"""The template E2B's SDK asks for when its caller names none: here, the operator's default."""
SNAPSHOT_PREFIX = "snap-"
"""Our snapshot ids start so (``SnapshotService``): a template that does is looked up."""
TOKEN_PORT = 49983
"""Any valid port: a sandbox's preview token is good for all of them."""


def e2b_state(state: str) -> str:
    """Our state in E2B's two words (a state outside ``VISIBLE`` is never shown)."""
    return "running" if state in RUNNING else "paused"


def states_of(e2b_states: list[str]) -> frozenset[str]:
    """Ours for E2B's ``state`` filter (both when it names none)."""
    found: set[str] = set()
    for name in e2b_states or ["running", "paused"]:
        if name == "running":
            found |= RUNNING
        elif name == "paused":
            found |= PAUSED
        else:
            raise BadRequest(f"state must be running or paused, got {name!r}")
    return frozenset(found)


def end_at(rec: SandboxRecord) -> datetime:
    """E2B's ``endAt``: the deadline of a running sandbox, when it stopped running for any
    other, and "never" for a running one without a deadline."""
    if rec.state in RUNNING:
        return rec.deadline_at or NEVER
    return rec.deadline_at or rec.updated_at


def _split(entries: list[str], field: str) -> tuple[list[str], list[str]]:
    """A network list as (networks, domains); an entry that is neither is a 400."""
    cidrs: list[str] = []
    domains: list[str] = []
    for entry in entries:
        try:
            cidrs.append(check_cidr(entry))
            continue
        except ValueError:
            pass
        try:
            domains.append(check_domain(entry.lower()))
        except ValueError:
            raise BadRequest(f"{field}: {entry!r} is not an address, a network or a domain") from None
    return cidrs, domains


def egress_policy(
    *, allow_internet_access: bool | None, allow_out: list[str] | None, deny_out: list[str] | None
) -> EgressPolicy | None:
    """E2B's network options as one of our policies (see the module doc); None: the
    operator's default."""
    allow_cidrs, allow_domains = _split(allow_out or [], "allowOut")
    deny = list(deny_out or [])
    deny_all = allow_internet_access is False or bool(ALL_TRAFFIC & set(deny))
    try:
        if deny_all:
            check_rules(allow_cidrs, allow_domains)
            return EgressPolicy(mode="deny", cidrs=allow_cidrs, domains=allow_domains)
        if not deny:
            return None
        deny_cidrs, deny_domains = _split(deny, "denyOut")
        if deny_domains:
            raise BadRequest("denyOut takes addresses and networks only, not domains")
        if allow_cidrs or allow_domains:
            raise BadRequest("allowOut beside a denyOut that is not all traffic (0.0.0.0/0) is not supported")
        check_rules(deny_cidrs, [])
        return EgressPolicy(mode="allow", cidrs=deny_cidrs)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def _deadline(timeout_s: int) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=timeout_s)


def encode_cursor(created_at: datetime, key: str) -> str:
    """An opaque page token for the keyset (created_at, id)."""
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{key}".encode()).decode().rstrip("=")


def decode_cursor(token: str) -> tuple[datetime, str]:
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        stamp, key = text.split("|", 1)
        return datetime.fromisoformat(stamp), key
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequest("nextToken is not a token this API gave out") from None


LEVELS = ("debug", "info", "warn", "error")


class LogEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One line of a sandbox's log (``log_events``)."""

    timestamp: datetime
    level: Literal["debug", "info", "warn", "error"]
    message: str
    fields: dict[str, str]

    def at_least(self, level: str) -> bool:
        return LEVELS.index(self.level) >= LEVELS.index(level)


def log_events(rec: SandboxRecord) -> list[LogEvent]:
    """What E2B's sandbox logs mean here: the sandbox's life as its row tells it (created, then
    the state it is in since its last change, with the reason of an error). The
    processes inside log nowhere the core keeps (their output goes to whoever ran them)."""
    events = [
        LogEvent(
            timestamp=rec.created_at,
            level="info",
            message=f"sandbox created from template {rec.template}",
            fields={"event": "created", "template": rec.template},
        )
    ]
    reason = f": {rec.error_reason}" if rec.error_reason else ""
    events.append(
        LogEvent(
            timestamp=max(rec.updated_at, rec.created_at),
            level="error" if rec.state == "error" else "info",
            message=f"sandbox {rec.state}{reason}",
            fields={"event": "state", "state": rec.state},
        )
    )
    return events


class Created(msgspec.Struct, frozen=True, kw_only=True):
    """A sandbox as create, connect, resume and fork answer it: the row and, for a private
    sandbox, its traffic token."""

    sandbox: SandboxRecord
    traffic_token: str | None


class E2bService:
    def __init__(
        self,
        db: asyncpg.Pool,
        sandboxes: SandboxService,
        lifecycle: LifecycleService,
        snapshots: SnapshotService,
        preview: PreviewService,
        egress: EgressService,
        *,
        default_template: str,
    ) -> None:
        self._db = db
        self._default_template = default_template
        self._sandboxes = sandboxes
        self._lifecycle = lifecycle
        self._snapshots = snapshots
        self._preview = preview
        self._egress = egress

    # reading -----------------------------------------------------------------------------------

    async def get(self, org_id: str, ref: str) -> SandboxRecord:
        """The org's sandbox, if E2B would see it (not destroyed, nor being destroyed)."""
        rec = await sandboxes_db.get(self._db, org_id, ref)
        if rec is None or rec.state not in VISIBLE:
            raise NotFound(f"sandbox {ref!r} not found")
        return rec

    async def detail(self, org_id: str, ref: str) -> SandboxRecord:
        """The org's sandbox for E2B's info, given an envd token if it has none (``with_token``)."""
        return await self.with_token(await self.get(org_id, ref))

    async def with_token(self, rec: SandboxRecord) -> SandboxRecord:
        """``rec`` with its envd token, made now (once) if it has none: a sandbox made through
        another API is reachable through E2B's data plane after E2B's connect or info names it
        to a caller of its org."""
        if rec.envd_token is not None:
            return rec
        token = await sandboxes_db.ensure_envd_token(self._db, rec.id, secrets.token_urlsafe(32))
        if token is None:
            raise NotFound(f"sandbox {rec.id!r} not found")
        return msgspec.structs.replace(rec, envd_token=token)

    async def settled(self, org_id: str, ref: str) -> SandboxRecord:
        """The org's sandbox once no operation is under way on it (a pause, resume, start…
        another request or the reaper began): E2B's calls act on a sandbox that is running or
        paused, never 409 because of a transition they cannot see."""
        rec = await self.get(org_id, ref)
        deadline = asyncio.get_running_loop().time() + SETTLE_WAIT_S
        while rec.state in UNDER_WAY and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(_SETTLE_POLL_S)
            rec = await self.get(org_id, ref)
        return rec

    async def page(
        self,
        org_id: str,
        *,
        states: frozenset[str],
        labels: dict[str, str] | None,
        template: str | None,
        started_after: datetime | None,
        ascending: bool,
        next_token: str | None,
        limit: int,
    ) -> tuple[list[SandboxRecord], str | None]:
        """One page and the token of the next (None: this was the last)."""
        found = await sandboxes_db.page(
            self._db,
            org_id,
            states=states,
            labels=labels,
            template=template,
            created_after=started_after,
            ascending=ascending,
            after=decode_cursor(next_token) if next_token else None,
            limit=limit + 1,
        )
        more = len(found) > limit
        found = found[:limit]
        return found, encode_cursor(found[-1].created_at, found[-1].id) if more else None

    async def traffic_token(self, rec: SandboxRecord) -> str | None:
        """A private sandbox's traffic token (its preview token, made now if it has none)."""
        if rec.public:
            return None
        if rec.preview_token is not None:
            return rec.preview_token
        _rec, token = await self._preview.token(rec.org_id, rec.id, TOKEN_PORT)
        return token

    async def metrics(self, org_id: str, ref: str) -> SandboxMetrics | None:
        """A running sandbox's resources now; None for one that is not running (E2B answers
        an empty series)."""
        rec = await self.get(org_id, ref)
        if rec.state != "started":
            return None
        return await self._sandboxes.metrics(org_id, rec.id)

    # creating ----------------------------------------------------------------------------------

    async def create(
        self,
        org_id: str,
        *,
        template: str,
        timeout_s: int,
        auto_pause: bool,
        auto_resume: bool,
        metadata: dict[str, str] | None,
        env: dict[str, str] | None,
        egress: EgressPolicy | None,
        public: bool,
    ) -> Created:
        """A new sandbox with E2B's lifecycle: from a template, or from one of the org's
        snapshots when ``template`` names one (E2B's snapshots are templates)."""
        if template == E2B_DEFAULT_TEMPLATE:
            template = self._default_template
        snapshot = (
            await snapshots_db.get(self._db, org_id, template)
            if template.startswith(SNAPSHOT_PREFIX)
            else None
        )
        if snapshot is not None and snapshot.state == "ready":
            rec = await self._snapshots.clone(org_id, snapshot.id)
            rec = await self._adopt_clone(rec, metadata=metadata, env=env, egress=egress)
        else:
            new = NewSandbox(template=template, env=env or {}, labels=metadata or {}, egress=egress)
            rec = await self._sandboxes.create(org_id, new)
        return await self._give_lifecycle(
            rec,
            deadline_at=_deadline(timeout_s),
            on_deadline="pause" if auto_pause else "delete",
            public=public,
            wake_on_traffic=auto_resume,
        )

    async def _adopt_clone(
        self,
        rec: SandboxRecord,
        *,
        metadata: dict[str, str] | None,
        env: dict[str, str] | None,
        egress: EgressPolicy | None,
    ) -> SandboxRecord:
        """A clone made for a create: the create's metadata, variables and policy over what it
        inherited from the snapshot's sandbox."""
        try:
            if metadata is not None:
                rec = await self._lifecycle.set_labels(rec.org_id, rec.id, metadata)
            if env:
                await self._sandboxes.ask(rec.org_id, rec.id, guest.EnvSet(id=0, env=env), guest.EnvDone)
            if egress is not None:
                rec = await self._egress.set(rec.org_id, rec.id, egress)
        except CoreError:
            await self._discard(rec)
            raise
        return rec

    async def _give_lifecycle(
        self,
        rec: SandboxRecord,
        *,
        deadline_at: datetime,
        on_deadline: str,
        public: bool,
        wake_on_traffic: bool,
    ) -> Created:
        """Give a new sandbox its envd token, deadline and preview settings. One that cannot
        be given them is deleted: a sandbox E2B made must not run without its end."""
        try:
            updated = await sandboxes_db.update_fields(
                self._db,
                rec.id,
                envd_token=secrets.token_urlsafe(32),
                deadline_at=deadline_at,
                on_deadline=on_deadline,
                public=public,
                wake_on_traffic=wake_on_traffic,
            )
            if updated is None:
                raise NotFound(f"sandbox {rec.id!r} was deleted while it was being created")
            return Created(sandbox=updated, traffic_token=await self.traffic_token(updated))
        except BaseException:
            await self._discard(rec)
            raise

    async def _discard(self, rec: SandboxRecord) -> None:
        try:
            await self._sandboxes.delete(rec.org_id, rec.id)
        except CoreError as exc:
            log.warning("e2b_discard_failed", sandbox_id=rec.id, error=exc.message)

    # lifecycle ---------------------------------------------------------------------------------

    async def kill(self, org_id: str, ref: str) -> None:
        rec = await self.settled(org_id, ref)
        await self._sandboxes.delete(org_id, rec.id)

    async def pause(self, org_id: str, ref: str) -> None:
        """Pause a running sandbox; one E2B already sees as paused is a 409 (the SDK's
        "already paused"). Its deadline is cleared: the timeout does not run while paused."""
        rec = await self.settled(org_id, ref)
        if rec.state != "started":
            raise Conflict(
                f"sandbox {ref!r} is already paused" if rec.state in PAUSED else f"sandbox is {rec.state}"
            )
        paused = await self._lifecycle.pause(org_id, rec.id)
        await sandboxes_db.update_fields(self._db, paused.id, deadline_at=None)

    async def connect(self, org_id: str, ref: str, timeout_s: int | None) -> tuple[Created, bool]:
        """A running sandbox, and whether it had to be brought back (resumed, started,
        unarchived, recovered). A running one's deadline only lengthens to ``timeout_s``; a
        brought-back one gets a fresh deadline when it is E2B's (it has ``on_deadline``) or a
        timeout is named."""
        rec = await self.settled(org_id, ref)
        if rec.state in RUNNING:
            if timeout_s is not None and rec.deadline_at is not None:
                rec = await self._lengthen(rec, timeout_s)
            rec = await self.with_token(rec)
            return Created(sandbox=rec, traffic_token=await self.traffic_token(rec)), False
        return await self._bring_back(rec, timeout_s, auto_pause=None), True

    async def resume(self, org_id: str, ref: str, timeout_s: int | None, auto_pause: bool | None) -> Created:
        """The legacy resume: like ``connect`` but a running sandbox is a 409."""
        rec = await self.settled(org_id, ref)
        if rec.state in RUNNING:
            raise Conflict(f"sandbox {ref!r} is already running")
        return await self._bring_back(rec, timeout_s, auto_pause=auto_pause)

    async def _bring_back(
        self, rec: SandboxRecord, timeout_s: int | None, *, auto_pause: bool | None
    ) -> Created:
        if rec.state == "error":
            started = await self._lifecycle.recover(rec.org_id, rec.id)
        else:
            started = await self._lifecycle.start(rec.org_id, rec.id)  # resumes a paused one
        fields: dict[str, object] = {}
        if timeout_s is not None or rec.on_deadline is not None:
            fields["deadline_at"] = _deadline(DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s)
        if auto_pause is not None:
            fields["on_deadline"] = "pause" if auto_pause else "delete"
        if fields:
            started = await self._update(started, **fields)
        started = await self.with_token(started)
        return Created(sandbox=started, traffic_token=await self.traffic_token(started))

    async def set_timeout(self, org_id: str, ref: str, timeout_s: int) -> None:
        """The deadline becomes now + ``timeout_s``, shorter or longer than it was."""
        rec = await self.get(org_id, ref)
        await self._update(rec, deadline_at=_deadline(timeout_s))

    async def refresh(self, org_id: str, ref: str, duration_s: int | None) -> None:
        """Keep a sandbox alive at least ``duration_s`` more seconds (never shortens), and
        count the call as activity."""
        rec = await self.get(org_id, ref)
        await self._lifecycle.refresh_activity(org_id, rec.id)
        if rec.deadline_at is not None:
            await self._lengthen(rec, DEFAULT_TIMEOUT_S if duration_s is None else duration_s)

    async def set_network(
        self, org_id: str, ref: str, *, allow_out: list[str] | None, deny_out: list[str] | None
    ) -> None:
        """Replace the egress lists; none at all: everything allowed."""
        rec = await self.get(org_id, ref)
        policy = egress_policy(allow_internet_access=None, allow_out=allow_out, deny_out=deny_out)
        await self._egress.set(org_id, rec.id, policy or EgressPolicy(mode="allow"))

    async def _lengthen(self, rec: SandboxRecord, timeout_s: int) -> SandboxRecord:
        wanted = _deadline(timeout_s)
        if rec.deadline_at is not None and rec.deadline_at >= wanted:
            return rec
        return await self._update(rec, deadline_at=wanted)

    async def _update(self, rec: SandboxRecord, **fields: object) -> SandboxRecord:
        updated = await sandboxes_db.update_fields(self._db, rec.id, **fields)
        if updated is None:
            raise NotFound(f"sandbox {rec.id!r} not found")
        return updated

    # snapshots and forks -----------------------------------------------------------------------

    async def snapshot(self, org_id: str, ref: str) -> SnapshotRecord:
        rec = await self.get(org_id, ref)
        return await self._snapshots.snapshot(org_id, rec.id)

    async def snapshots(
        self,
        org_id: str,
        *,
        sandbox_ref: str | None,
        name: str | None,
        next_token: str | None,
        limit: int,
    ) -> tuple[list[SnapshotRecord], str | None]:
        """One page of the org's snapshots (of one sandbox, when named), newest first; a
        ``name`` is a snapshot's id (the only name a snapshot has here)."""
        sandbox_id = None
        if sandbox_ref is not None:
            found = await sandboxes_db.get(self._db, org_id, sandbox_ref)
            if found is None:
                return [], None
            sandbox_id = found.id
        if name is not None:
            snap = await snapshots_db.get(self._db, org_id, name)
            hit = snap is not None and snap.state == "ready" and sandbox_id in (None, snap.sandbox_id)
            return ([snap] if hit and snap is not None else []), None
        page = await snapshots_db.page_of_org(
            self._db,
            org_id,
            sandbox_id=sandbox_id,
            before=decode_cursor(next_token) if next_token else None,
            limit=limit + 1,
        )
        more = len(page) > limit
        page = page[:limit]
        return page, encode_cursor(page[-1].created_at, page[-1].id) if more else None

    async def delete_snapshot(self, org_id: str, snapshot_id: str) -> None:
        await self._snapshots.delete(org_id, snapshot_id)

    async def fork(
        self, org_id: str, ref: str, *, timeout_s: int | None, count: int
    ) -> list[Created | CoreError]:
        """``count`` new running sandboxes from one snapshot of the sandbox taken now, each
        with the source's lifecycle and its own token and deadline; each fork succeeds or
        fails on its own (a failure is its error). The snapshot is kept (listed with the
        source's)."""
        source = await self.get(org_id, ref)
        snap = await self._snapshots.snapshot(org_id, source.id)

        async def one() -> Created | CoreError:
            try:
                rec = await self._snapshots.clone(org_id, snap.id)
                return await self._give_lifecycle(
                    rec,
                    deadline_at=_deadline(DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s),
                    on_deadline=source.on_deadline or "delete",
                    public=source.public,
                    wake_on_traffic=source.wake_on_traffic,
                )
            except CoreError as exc:
                return exc

        return list(await asyncio.gather(*(one() for _ in range(count))))


def network_of(rec: SandboxRecord) -> tuple[bool | None, list[str] | None, list[str] | None]:
    """A sandbox's policy in E2B's words: (allowInternetAccess, allowOut, denyOut)."""
    policy = policy_of(rec)
    if policy is None:
        return None, None, None
    listed = [*policy.cidrs, *policy.domains]
    if policy.mode == "deny":
        return False, listed, ["0.0.0.0/0"]
    return None, None, listed or None
