"""The ``fs.watch.*`` messages: the stdlib agent (``guest/framing.py``, ``guest/requests.py``)
and ``contracts.guest`` agree on the bounds, on the defaults and on what both refuse
(``test_guest_wire.py`` already checks every field of every message both ways)."""

from __future__ import annotations

import msgspec
import pytest

from contracts import guest
from guest import framing


def test_bounds_match() -> None:
    assert (
        framing.FS_WATCH_MAX,
        framing.FS_WATCH_DIRS,
        framing.FS_WATCH_QUEUE,
        framing.FS_WATCH_QUEUE_BYTES,
        framing.FS_WATCH_IDLE_MS,
    ) == (
        guest.FS_WATCH_MAX,
        guest.FS_WATCH_DIRS,
        guest.FS_WATCH_QUEUE,
        guest.FS_WATCH_QUEUE_BYTES,
        guest.FS_WATCH_IDLE_MS,
    )


def test_a_full_queue_fits_a_frame() -> None:
    """The byte bound, not the count, is what keeps a reply under ``MAX_JSON_FRAME``."""
    assert guest.FS_WATCH_QUEUE_BYTES + 1024 < guest.MAX_JSON_FRAME


def test_a_relayed_create_is_not_recursive_by_default() -> None:
    assert guest.decode_relayed(b'{"t":"fs.watch.create","path":"/w"}') == guest.FsWatchCreate(
        id=0, path="/w", recursive=False
    )
    parsed = framing.parse_request(b'{"t":"fs.watch.create","id":3,"path":"/w"}')
    assert parsed == framing.FsWatchRequest(3, "fs.watch.create", path="/w", recursive=False)


@pytest.mark.parametrize(
    "payload",
    [
        b'{"t":"fs.watch.create","id":1}',
        b'{"t":"fs.watch.create","id":1,"path":7}',
        b'{"t":"fs.watch.create","id":1,"path":"/w","recursive":"yes"}',
        b'{"t":"fs.watch.events","id":1}',
        b'{"t":"fs.watch.events","id":1,"watch_id":null}',
        b'{"t":"fs.watch.remove","id":1,"watch_id":["x"]}',
    ],
)
def test_both_ends_reject_the_same_malformed_requests(payload: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        guest.decode_from_host(payload)
    with pytest.raises(framing.BadRequest):
        framing.parse_request(payload)


def test_an_unknown_event_type_is_refused_by_hostd() -> None:
    """The agent sends only the five types; anything else is not a valid reply."""
    frame = framing.encode(framing.fs_watch_events_result(1, [framing.fs_watch_event("a", "moved")], False))
    with pytest.raises(msgspec.ValidationError):
        guest.decode_from_guest(frame[4:])
