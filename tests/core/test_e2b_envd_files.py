"""E2B's envd at the core, files and filesystem: ``/health``, ``GET``/``POST /files`` (multipart
with several files, octet-stream, gzip) and the ``filesystem.Filesystem`` unary calls, with the
errors E2B's SDK relies on (``not_found`` for ``exists``, ``already_exists`` for ``make_dir``),
plus the access token and malformed requests. Plain HTTP in E2B's wire shapes against the core
(header routing: ``E2b-Sandbox-Id``), every written file checked inside the sandbox."""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from cli.stack import Stack
from tests.core.e2b_envd_support import (
    STREAM,
    call_stream,
    envd_client,
    envelope,
    give_token,
    parse_envelopes,
    unary,
)
from tests.core.test_files import create, sh
from tests.core.test_transfers import group_pids, pattern, peak_rss_kb
from tests.support import wait_for

MiB = 1024 * 1024
OCTETS = "application/octet-stream"


@pytest.fixture
def sid(org: httpx.Client) -> str:
    return create(org)


@pytest.fixture
async def envd(stack: Stack, stack_db: asyncpg.Pool, sid: str) -> AsyncIterator[httpx.Client]:
    token = await give_token(stack_db, sid)
    with envd_client(stack.config.core_url, sid, token) as client:
        yield client


def sandbox_sha(org: httpx.Client, sid: str, path: str) -> str:
    return sh(org, sid, f"sha256sum {path} | cut -d' ' -f1").strip()


def test_health_with_the_header_is_envd_and_without_it_the_core(stack: Stack, envd: httpx.Client) -> None:
    resp = envd.get("/health")
    assert resp.status_code == 204, resp.text
    core = httpx.get(f"{stack.config.core_url}/health", timeout=30)
    assert core.status_code == 200 and core.json()["status"] == "ok"


def test_files_round_trip_multipart_several_files(org: httpx.Client, sid: str, envd: httpx.Client) -> None:
    home = sh(org, sid, "echo $HOME").strip()
    one, two = os.urandom(300_000), b"second\n"
    resp = envd.post(
        "/files",
        files=[("file", ("deep/a/one.bin", one)), ("file", (f"{home}/two.txt", two))],
    )
    assert resp.status_code == 200, resp.text
    assert resp.json() == [
        {"name": "one.bin", "type": "file", "path": f"{home}/deep/a/one.bin"},
        {"name": "two.txt", "type": "file", "path": f"{home}/two.txt"},
    ]
    assert sandbox_sha(org, sid, "deep/a/one.bin") == hashlib.sha256(one).hexdigest()
    got = envd.get("/files", params={"path": "deep/a/one.bin", "username": "user"})
    assert got.status_code == 200 and got.content == one
    assert envd.get("/files", params={"path": f"{home}/two.txt"}).content == two


def test_single_multipart_file_goes_to_the_query_path(
    org: httpx.Client, sid: str, envd: httpx.Client
) -> None:
    resp = envd.post("/files", params={"path": "q/target.txt"}, files=[("file", ("q/target.txt", b"hi"))])
    assert resp.status_code == 200, resp.text
    assert [e["name"] for e in resp.json()] == ["target.txt"]
    assert sh(org, sid, "cat q/target.txt") == "hi"


def test_octet_stream_plain_and_gzip(org: httpx.Client, sid: str, envd: httpx.Client) -> None:
    data = os.urandom(3 * MiB + 7)
    resp = envd.post(
        "/files",
        params={"path": "raw.bin"},
        content=data,
        headers={"Content-Type": OCTETS},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()[0]["name"] == "raw.bin"
    assert sandbox_sha(org, sid, "raw.bin") == hashlib.sha256(data).hexdigest()
    text = b"compressible " * 100_000
    resp = envd.post(
        "/files",
        params={"path": "z/text.txt"},
        content=gzip.compress(text),
        headers={"Content-Type": OCTETS, "Content-Encoding": "gzip"},
    )
    assert resp.status_code == 200, resp.text
    assert envd.get("/files", params={"path": "z/text.txt"}).content == text
    bad = envd.post(
        "/files",
        params={"path": "z/bad.txt"},
        content=b"not gzip at all",
        headers={"Content-Type": OCTETS, "Content-Encoding": "gzip"},
    )
    assert bad.status_code == 400 and bad.json()["code"] == 400, bad.text


def test_files_errors_are_code_and_message(envd: httpx.Client) -> None:
    missing = envd.get("/files", params={"path": "/nope/missing.txt"})
    assert missing.status_code == 404
    assert missing.json()["code"] == 404 and missing.json()["message"]
    no_path = envd.get("/files")
    assert no_path.status_code == 400 and no_path.json()["code"] == 400
    directory = envd.get("/files", params={"path": "/tmp"})
    assert directory.status_code == 400, directory.text


def test_filesystem_unary_calls(org: httpx.Client, sid: str, envd: httpx.Client) -> None:
    home = sh(org, sid, "echo $HOME").strip()
    made = unary(envd, "filesystem.Filesystem/MakeDir", {"path": "proj/src"})
    assert made.status_code == 200, made.text
    entry = made.json()["entry"]
    assert entry["type"] == "FILE_TYPE_DIRECTORY" and entry["path"] == f"{home}/proj/src"
    again = unary(envd, "filesystem.Filesystem/MakeDir", {"path": "proj/src"})
    assert again.status_code == 409 and again.json()["code"] == "already_exists", again.text

    envd.post("/files", files=[("file", ("proj/src/main.py", b"print(1)\n"))]).raise_for_status()
    stat = unary(envd, "filesystem.Filesystem/Stat", {"path": "proj/src/main.py"})
    assert stat.status_code == 200, stat.text
    info = stat.json()["entry"]
    assert info["name"] == "main.py" and info["type"] == "FILE_TYPE_FILE"
    assert info["size"] == "9"  # int64 as a string
    assert info["permissions"].startswith("-rw") and isinstance(info["mode"], int)
    assert info["modifiedTime"].endswith("Z")

    listed = unary(envd, "filesystem.Filesystem/ListDir", {"path": "proj", "depth": 2})
    assert listed.status_code == 200, listed.text
    assert {e["path"] for e in listed.json()["entries"]} == {f"{home}/proj/src", f"{home}/proj/src/main.py"}
    shallow = unary(envd, "filesystem.Filesystem/ListDir", {"path": "proj", "depth": 1})
    assert [e["name"] for e in shallow.json()["entries"]] == ["src"]

    moved = unary(
        envd, "filesystem.Filesystem/Move", {"source": "proj/src/main.py", "destination": "proj/app.py"}
    )
    assert moved.status_code == 200 and moved.json()["entry"]["path"] == f"{home}/proj/app.py", moved.text
    gone = unary(envd, "filesystem.Filesystem/Stat", {"path": "proj/src/main.py"})
    assert gone.status_code == 404 and gone.json()["code"] == "not_found", gone.text

    removed = unary(envd, "filesystem.Filesystem/Remove", {"path": "proj"})
    assert removed.status_code == 200 and removed.json() == {}, removed.text
    assert sh(org, sid, "test -e proj && echo yes || echo no").strip() == "no"
    missing = unary(envd, "filesystem.Filesystem/Remove", {"path": "proj"})
    assert missing.json()["code"] == "not_found", missing.text


async def test_access_token_is_enforced(stack: Stack, stack_db: asyncpg.Pool, sid: str) -> None:
    with envd_client(stack.config.core_url, sid) as before:
        # no token was ever issued (made through the native API): nobody gets in
        resp = before.get("/health")
        assert resp.status_code == 401 and resp.json()["code"] == 401, resp.text
    token = await give_token(stack_db, sid)
    with envd_client(stack.config.core_url, sid) as anonymous:
        resp = anonymous.get("/files", params={"path": "x"})
        assert resp.status_code == 401 and resp.json()["code"] == 401, resp.text
        rpc = unary(anonymous, "filesystem.Filesystem/Stat", {"path": "/"})
        assert rpc.status_code == 401 and rpc.json()["code"] == "unauthenticated", rpc.text
        stream = call_stream(anonymous, "process.Process/Start", {"process": {"cmd": "true"}})
        assert stream == [
            (2, {"error": {"code": "unauthenticated", "message": stream[0][1]["error"]["message"]}})
        ]
    with envd_client(stack.config.core_url, sid, token="wrong" + token) as wrong:
        assert wrong.get("/health").status_code == 401
    with envd_client(stack.config.core_url, sid, token=token) as right:
        assert right.get("/health").status_code == 204
        assert unary(right, "filesystem.Filesystem/Stat", {"path": "/"}).status_code == 200


def test_unknown_sandbox_is_the_proxy_answer(stack: Stack) -> None:
    with envd_client(stack.config.core_url, "sb-does-not-exist") as client:
        resp = client.get("/health")
        assert resp.status_code == 502 and "was not found" in resp.json()["message"], resp.text
        rpc = unary(client, "process.Process/List", {})
        assert rpc.status_code == 503 and rpc.json()["code"] == "unavailable", rpc.text


def test_malformed_requests_are_clear_errors(stack: Stack, envd: httpx.Client) -> None:
    bad_json = envd.post(
        "/filesystem.Filesystem/Stat", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert bad_json.status_code == 400 and bad_json.json()["code"] == "invalid_argument", bad_json.text
    wrong_type = unary(envd, "filesystem.Filesystem/ListDir", {"path": "/", "depth": "deep"})
    assert wrong_type.json()["code"] == "invalid_argument", wrong_type.text
    cut = envelope({"path": "/"})[:-3]
    resp = envd.post("/process.Process/Start", content=cut, headers={"Content-Type": STREAM})
    flags, end = parse_envelopes(resp.content)[-1]
    assert flags == 2 and end["error"]["code"] == "invalid_argument", resp.content
    assert "envelope" in end["error"]["message"]
    too_big = call_stream(
        envd, "process.Process/Start", {"process": {"cmd": "true", "envs": {"X": "x" * 300_000}}}
    )
    assert too_big[-1][1]["error"]["code"] == "invalid_argument", too_big
    unknown = unary(envd, "filesystem.Filesystem/Nope", {})
    assert unknown.status_code == 404, unknown.text
    bad_header = httpx.get(
        f"{stack.config.core_url}/health", headers={"E2b-Sandbox-Id": "x", "E2b-Sandbox-Port": "99999"}
    )
    assert bad_header.status_code == 400 and bad_header.json()["code"] == 400, bad_header.text


def test_200_mb_multipart_up_and_down_in_flat_memory(
    org: httpx.Client, sid: str, envd: httpx.Client, stack: Stack
) -> None:
    """A file part is passed on as the multipart parser reads it, a download as hostd sends
    it: the core's and hostd's peak RSS (VmHWM, reset first) stay far below the file."""
    size = 200 * MiB
    groups = {name: stack.procs[name].pid for name in ("core", "hostd")}
    for pgid in groups.values():
        for pid in group_pids(pgid):
            Path(f"/proc/{pid}/clear_refs").write_text("5")
    expected = hashlib.sha256()
    for chunk in pattern(size):
        expected.update(chunk)
    boundary = "envd-test-boundary"

    def body() -> Iterator[bytes]:
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'.encode()
        yield b"Content-Type: application/octet-stream\r\n\r\n"
        yield from pattern(size)
        yield f"\r\n--{boundary}--\r\n".encode()

    resp = envd.post(
        "/files", content=body(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert resp.status_code == 200 and resp.json()[0]["name"] == "big.bin", resp.text
    assert sandbox_sha(org, sid, "big.bin") == expected.hexdigest()
    received = hashlib.sha256()
    with envd.stream("GET", "/files", params={"path": "big.bin"}) as down:
        assert down.status_code == 200 and down.headers["content-length"] == str(size)
        for chunk in down.iter_raw():
            received.update(chunk)
    assert received.hexdigest() == expected.hexdigest()
    for name, pgid in groups.items():
        peak_mb = max(peak_rss_kb(pid) for pid in group_pids(pgid)) / 1024
        print(f"{name} peak RSS during 2 x 200 MiB through envd: {peak_mb:.1f} MiB")
        assert peak_mb < 150, name


def test_paused_sandbox_is_not_running_unless_it_wakes_on_traffic(
    org: httpx.Client, sid: str, envd: httpx.Client
) -> None:
    envd.post("/files", files=[("file", ("kept.txt", b"still here"))]).raise_for_status()
    assert org.post(f"/v1/sandboxes/{sid}/pause").status_code == 200
    wait_for(lambda: org.get(f"/v1/sandboxes/{sid}").json()["state"] == "paused", what="the pause")
    asleep = envd.get("/health")
    assert asleep.status_code == 502 and "was not found" in asleep.json()["message"], asleep.text
    rpc = unary(envd, "filesystem.Filesystem/Stat", {"path": "kept.txt"})
    assert rpc.status_code == 503 and rpc.json()["code"] == "unavailable", rpc.text
    woken = org.put(f"/v1/sandboxes/{sid}/preview", json={"wake_on_traffic": True})
    assert woken.status_code == 200, woken.text
    got = envd.get("/files", params={"path": "kept.txt"})  # E2B's autoResume: this resumes it
    assert got.status_code == 200 and got.content == b"still here", got.text
    assert org.get(f"/v1/sandboxes/{sid}").json()["state"] == "started"
