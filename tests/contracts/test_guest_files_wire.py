"""The ``fs.*`` messages: the stdlib agent (``guest/framing.py``) and ``contracts.guest`` agree
byte for byte on the replies and on how requests decode, as ``test_guest_wire.py`` proves for
the others."""

from __future__ import annotations

import msgspec
import pytest

from contracts import guest
from guest import framing

TEXT = 'naïve ✓ 😀 "quoted"\n\ttab \x00 \u2028'

ENTRY = {
    "name": TEXT,
    "path": "/home/u/" + TEXT,
    "is_dir": False,
    "size": 2**40,
    "mode": "-rw-r--r--",
    "permissions": "0644",
    "owner": "u",
    "group": "1001",
    "mtime_ns": 1_764_000_000_123_456_789,
}

GUEST_MESSAGES: list[tuple[dict[str, object], guest.GuestToHost]] = [
    (framing.fs_done(1), guest.FsDone(id=1)),
    (
        framing.fs_list_result(2, [framing.fs_entry(**ENTRY, link_target=None)], False),
        guest.FsListResult(id=2, entries=[guest.FsEntry(**ENTRY)]),  # type: ignore[arg-type]
    ),
    (
        framing.fs_list_result(2, [framing.fs_entry(**ENTRY, link_target="/etc")], True),
        guest.FsListResult(
            id=2,
            entries=[guest.FsEntry(**ENTRY, link_target="/etc")],  # type: ignore[arg-type]
            truncated=True,
        ),
    ),
    (
        framing.fs_stat_result(3, framing.fs_entry(**ENTRY, link_target=None)),
        guest.FsStatResult(id=3, entry=guest.FsEntry(**ENTRY)),  # type: ignore[arg-type]
    ),
    (framing.fs_paths_result(4, ["/a", TEXT], False), guest.FsPathsResult(id=4, paths=["/a", TEXT])),
    (
        framing.fs_grep_result(5, [framing.fs_match("/f", 3, TEXT)], True),
        guest.FsGrepResult(id=5, matches=[guest.FsMatch(file="/f", line=3, content=TEXT)], truncated=True),
    ),
    (
        framing.fs_replace_result(
            6, [framing.fs_replace_outcome("/a", True, 2), framing.fs_replace_outcome(TEXT, False, error="x")]
        ),
        guest.FsReplaceResult(
            id=6,
            results=[
                guest.FsReplaceOutcome(file="/a", success=True, replacements=2),
                guest.FsReplaceOutcome(file=TEXT, success=False, error="x"),
            ],
        ),
    ),
]


@pytest.mark.parametrize(("agent_message", "struct"), GUEST_MESSAGES)
def test_fs_replies_encode_identically(agent_message: dict[str, object], struct: guest.GuestToHost) -> None:
    frame = framing.encode(agent_message)
    assert frame == guest.encode(struct)
    assert guest.decode_from_guest(frame[4:]) == struct


HOST_MESSAGES: list[guest.HostToGuest] = [
    guest.FsList(id=1, path=TEXT),
    guest.FsList(id=1, path="p", depth=3),
    guest.FsStat(id=2, path="p"),
    guest.FsMkdir(id=3, path="p"),
    guest.FsMkdir(id=3, path="p", mode="0700"),
    guest.FsRemove(id=4, path="p"),
    guest.FsRemove(id=4, path="p", recursive=True),
    guest.FsMove(id=5, source="a", destination=TEXT),
    guest.FsChmod(id=6, path="p"),
    guest.FsChmod(id=6, path="p", mode="755", owner="u", group="g"),
    guest.FsFindNames(id=7, path="p", pattern="*.py"),
    guest.FsFindNames(id=7, path="p", pattern="*.py", max=5),
    guest.FsGrep(id=8, path="p", pattern=TEXT),
    guest.FsGrep(id=8, path="p", pattern="a.c", max=2, regex=True),
    guest.FsReplace(id=9, find="a", replace="b", files=["x", TEXT]),
    guest.FsReplace(id=9, find="a", replace="", path="p", glob="*.txt", regex=True),
]


@pytest.mark.parametrize("struct", HOST_MESSAGES)
def test_fs_requests_decode_in_the_agent(struct: guest.HostToGuest) -> None:
    frame = guest.encode(struct)
    request = framing.parse_request(frame[4:])
    assert isinstance(request, framing.FsRequest)
    assert request.id == struct.id
    assert request.kind == struct.__struct_config__.tag
    for name in struct.__struct_fields__:
        assert getattr(request, name) == getattr(struct, name), name
    fields = {"t": struct.__struct_config__.tag}
    fields.update((name, getattr(request, name)) for name in struct.__struct_fields__)
    assert framing.encode(fields) == frame


def test_fs_constants_agree() -> None:
    assert framing.FS_MAX_RESULTS == guest.FS_MAX_RESULTS
    assert framing.FS_WALK_BUDGET_MS == guest.FS_WALK_BUDGET_MS
    assert framing.FS_LINE_MAX == guest.FS_LINE_MAX


@pytest.mark.parametrize(
    "payload",
    [
        b'{"t":"fs.list","id":1}',
        b'{"t":"fs.list","id":1,"path":"p","depth":"2"}',
        b'{"t":"fs.stat","id":1,"path":null}',
        b'{"t":"fs.mkdir","id":1,"path":"p","mode":755}',
        b'{"t":"fs.remove","id":1,"path":"p","recursive":"yes"}',
        b'{"t":"fs.move","id":1,"source":"a"}',
        b'{"t":"fs.chmod","id":1,"path":"p","owner":0}',
        b'{"t":"fs.find_names","id":1,"path":"p"}',
        b'{"t":"fs.find_names","id":1,"path":"p","pattern":"*","max":1.5}',
        b'{"t":"fs.grep","id":1,"path":"p","pattern":"x","regex":1}',
        b'{"t":"fs.replace","id":1,"find":"a"}',
        b'{"t":"fs.replace","id":1,"find":"a","replace":"b","files":"x"}',
        b'{"t":"fs.replace","id":1,"find":"a","replace":"b","glob":1}',
    ],
)
def test_both_ends_reject_the_same_malformed_fs_requests(payload: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        guest.decode_from_host(payload)
    with pytest.raises(framing.BadRequest):
        framing.parse_request(payload)
