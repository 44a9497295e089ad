"""The ``git.*`` messages: the stdlib agent (``guest/framing.py``) and ``contracts.guest`` agree
byte for byte on the replies and on how requests decode, as ``test_guest_wire.py`` proves for
the others."""

from __future__ import annotations

import msgspec
import pytest

from contracts import guest
from guest import framing

TEXT = 'naïve ✓ 😀 "quoted"\n\ttab \x00 \u2028'

GUEST_MESSAGES: list[tuple[dict[str, object], guest.GuestToHost]] = [
    (framing.git_done(1), guest.GitDone(id=1)),
    (framing.git_commit_result(2, "ab" * 20), guest.GitCommitResult(id=2, sha="ab" * 20)),
    (
        framing.git_branches_result(3, branches=["main", TEXT], current=""),
        guest.GitBranchesResult(id=3, branches=["main", TEXT], current=""),
    ),
    (
        framing.git_status_result(
            4,
            branch="main",
            detached=False,
            upstream="origin/main",
            ahead=2,
            behind=0,
            files=[
                framing.git_file_status("a.txt", "A", "."),
                framing.git_file_status(TEXT, "R", "M", "old name"),
            ],
        ),
        guest.GitStatusResult(
            id=4,
            branch="main",
            detached=False,
            upstream="origin/main",
            ahead=2,
            behind=0,
            files=[
                guest.GitFileStatus(path="a.txt", staging="A", worktree="."),
                guest.GitFileStatus(path=TEXT, staging="R", worktree="M", orig_path="old name"),
            ],
        ),
    ),
    (
        framing.git_log_result(
            5,
            [
                framing.git_commit_info(
                    sha="c" * 40,
                    author_name=TEXT,
                    author_email="a@b.c",
                    timestamp="2026-01-02T03:04:05+01:00",
                    message=TEXT,
                )
            ],
        ),
        guest.GitLogResult(
            id=5,
            commits=[
                guest.GitCommitInfo(
                    sha="c" * 40,
                    author_name=TEXT,
                    author_email="a@b.c",
                    timestamp="2026-01-02T03:04:05+01:00",
                    message=TEXT,
                )
            ],
        ),
    ),
    (framing.git_log_result(6, []), guest.GitLogResult(id=6, commits=[])),
]


@pytest.mark.parametrize(("agent_message", "struct"), GUEST_MESSAGES)
def test_git_replies_encode_identically(agent_message: dict[str, object], struct: guest.GuestToHost) -> None:
    frame = framing.encode(agent_message)
    assert frame == guest.encode(struct)
    assert guest.decode_from_guest(frame[4:]) == struct


HOST_MESSAGES: list[tuple[guest.HostToGuest, framing.Request]] = [
    (guest.GitClone(id=1, url="u", path="p"), framing.GitCloneRequest(id=1, url="u", path="p")),
    (
        guest.GitClone(
            id=1,
            url="http://h/r.git",
            path=TEXT,
            branch="b",
            depth=1,
            commit_id="c",
            username="me",
            password=TEXT,
            timeout_ms=5,
        ),
        framing.GitCloneRequest(
            id=1,
            url="http://h/r.git",
            path=TEXT,
            branch="b",
            depth=1,
            commit_id="c",
            username="me",
            password=TEXT,
            timeout_ms=5,
        ),
    ),
    (guest.GitStatus(id=2, path="p"), framing.GitStatusRequest(id=2, path="p")),
    (
        guest.GitAdd(id=3, path="p", files=[".", TEXT]),
        framing.GitAddRequest(id=3, path="p", files=[".", TEXT]),
    ),
    (guest.GitCommit(id=4, path="p", message="m"), framing.GitCommitRequest(id=4, path="p", message="m")),
    (
        guest.GitCommit(id=4, path="p", message=TEXT, author_name="A", author_email="a@b", allow_empty=True),
        framing.GitCommitRequest(
            id=4, path="p", message=TEXT, author_name="A", author_email="a@b", allow_empty=True
        ),
    ),
    (guest.GitPush(id=5, path="p"), framing.GitPushRequest(id=5, path="p")),
    (
        guest.GitPush(
            id=5,
            path="p",
            remote="r",
            branch="b",
            username="u",
            password="pw",
            set_upstream=True,
            timeout_ms=9,
        ),
        framing.GitPushRequest(
            id=5,
            path="p",
            remote="r",
            branch="b",
            username="u",
            password="pw",
            set_upstream=True,
            timeout_ms=9,
        ),
    ),
    (
        guest.GitPull(id=6, path="p", remote="r", branch="b", username="u", password="pw"),
        framing.GitPullRequest(id=6, path="p", remote="r", branch="b", username="u", password="pw"),
    ),
    (guest.GitBranches(id=7, path="p"), framing.GitBranchesRequest(id=7, path="p")),
    (
        guest.GitBranchCreate(id=8, path="p", name="n"),
        framing.GitBranchCreateRequest(id=8, path="p", name="n"),
    ),
    (
        guest.GitBranchDelete(id=9, path="p", name="n"),
        framing.GitBranchDeleteRequest(id=9, path="p", name="n"),
    ),
    (guest.GitCheckout(id=10, path="p", ref="r"), framing.GitCheckoutRequest(id=10, path="p", ref="r")),
    (guest.GitLog(id=11, path="p"), framing.GitLogRequest(id=11, path="p")),
    (guest.GitLog(id=11, path="p", limit=3), framing.GitLogRequest(id=11, path="p", limit=3)),
]


@pytest.mark.parametrize(("struct", "request_"), HOST_MESSAGES)
def test_git_requests_decode_in_the_agent(struct: guest.HostToGuest, request_: framing.Request) -> None:
    frame = guest.encode(struct)
    assert framing.parse_request(frame[4:]) == request_
    fields = {"t": struct.__struct_config__.tag}
    fields.update((name, getattr(request_, name)) for name in struct.__struct_fields__)
    assert framing.encode(fields) == frame


def test_git_timeouts_agree() -> None:
    assert framing.GIT_TIMEOUT_MS == guest.GIT_TIMEOUT_MS


@pytest.mark.parametrize(
    "payload",
    [
        b'{"t":"git.clone","id":1,"path":"p"}',
        b'{"t":"git.clone","id":1,"url":"u","path":"p","depth":"1"}',
        b'{"t":"git.clone","id":1,"url":"u","path":"p","password":1}',
        b'{"t":"git.status","id":1}',
        b'{"t":"git.add","id":1,"path":"p"}',
        b'{"t":"git.add","id":1,"path":"p","files":"a"}',
        b'{"t":"git.commit","id":1,"path":"p"}',
        b'{"t":"git.commit","id":1,"path":"p","message":"m","allow_empty":1}',
        b'{"t":"git.push","id":1,"path":"p","set_upstream":"yes"}',
        b'{"t":"git.pull","id":1,"path":"p","timeout_ms":"1"}',
        b'{"t":"git.branch.create","id":1,"path":"p"}',
        b'{"t":"git.checkout","id":1,"path":"p","ref":null}',
        b'{"t":"git.log","id":1,"path":"p","limit":1.5}',
    ],
)
def test_both_ends_reject_the_same_malformed_git_requests(payload: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        guest.decode_from_host(payload)
    with pytest.raises(framing.BadRequest):
        framing.parse_request(payload)
