"""File byte streams end to end (client → gateway → core → hostd → agent), in both API shapes:
native ``PUT``/``GET /v1/sandboxes/{id}/files``, Daytona's upload, download, bulk-upload and
bulk-download. Every upload is checked inside the sandbox (``sha256sum`` through ``exec``),
every download against what was written; memory is checked per process for a big transfer.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from multipart import MultipartSegment, PushMultipartParser, parse_options_header

from cli.stack import Stack
from tests.core.test_files import HOST_MARKER, create, marker, ok, sh

__all__ = ["marker"]  # a fixture used below

MiB = 1024 * 1024


@pytest.fixture
def sid(org: httpx.Client) -> str:
    return create(org)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sandbox_sha(org: httpx.Client, sid: str, path: str) -> str:
    return sh(org, sid, f"sha256sum {path} | cut -d' ' -f1").strip()


def pattern(size: int, chunk: int = MiB) -> Iterator[bytes]:
    block = bytes(range(256)) * (chunk // 256)
    sent = 0
    while sent < size:
        piece = block[: min(chunk, size - sent)]
        sent += len(piece)
        yield piece


def parse_multipart(resp: httpx.Response) -> list[tuple[str, str, bytes, str | None]]:
    """(name, filename, body, content type) of each part, with the same push parser the
    core uses; a truncated body raises."""
    kind, options = parse_options_header(resp.headers["content-type"])
    assert kind == "multipart/form-data"
    parts: list[tuple[str, str, bytes, str | None]] = []
    current: MultipartSegment | None = None
    body = bytearray()
    with PushMultipartParser(options["boundary"].encode()) as parser:
        for event in parser.parse(resp.content):
            if isinstance(event, MultipartSegment):
                current, body = event, bytearray()
            elif event is None:
                assert current is not None
                parts.append((current.name, current.filename or "", bytes(body), current.content_type))
            else:
                body += event
        parser.close()
    return parts


# native ----------------------------------------------------------------------------------------


def test_native_upload_and_download_round_trip(org: httpx.Client, sid: str) -> None:
    base = f"/v1/sandboxes/{sid}/files"
    data = os.urandom(MiB + 12345)
    home = sh(org, sid, "echo $HOME").strip()
    written = ok(org.put(base, params={"path": "data/blob.bin"}, content=data))
    assert written == {"path": f"{home}/data/blob.bin", "size": len(data)}
    assert sandbox_sha(org, sid, "~/data/blob.bin") == sha256(data)
    assert sh(org, sid, "stat -c %a ~/data/blob.bin").strip() == "644"

    resp = org.get(base, params={"path": "data/blob.bin"})
    assert resp.status_code == 200
    assert resp.headers["content-length"] == str(len(data))
    assert resp.headers["content-type"] == "application/octet-stream"
    assert resp.headers["content-disposition"] == 'attachment; filename="blob.bin"'
    assert resp.content == data

    # an overwrite keeps the mode unless one is given; an empty file is a file
    sh(org, sid, "chmod 750 ~/data/blob.bin")
    ok(org.put(base, params={"path": "~/data/blob.bin".replace("~/", "")}, content=b"v2"))
    assert sh(org, sid, "stat -c %a:%s ~/data/blob.bin").strip() == "750:2"
    ok(org.put(base, params={"path": "data/blob.bin", "mode": "600"}, content=b""))
    assert sh(org, sid, "stat -c %a:%s ~/data/blob.bin").strip() == "600:0"
    assert org.get(base, params={"path": "data/blob.bin"}).content == b""

    # a non-ASCII name is spelled for clients to decode exactly
    ok(org.put(base, params={"path": "é t.txt"}, content=b"x"))
    resp = org.get(base, params={"path": "é t.txt"})
    assert resp.headers["content-disposition"] == "attachment; filename*=utf-8''%C3%A9%20t.txt"


def test_native_transfer_errors(org: httpx.Client, sid: str) -> None:
    base = f"/v1/sandboxes/{sid}/files"
    sh(org, sid, "mkdir -p ~/dir; echo keep > ~/file; mkfifo ~/fifo")
    cases = [
        (org.get(base, params={"path": "missing"}), 404),
        (org.get(base, params={"path": "dir"}), 400),
        (org.get(base, params={"path": "fifo"}), 400),
        (org.get(base, params={"path": "/etc/shadow"}), 403),
        (org.get(base), 400),  # no path
        (org.put(base, params={"path": "dir"}, content=b"x" * 100_000), 400),
        (org.put(base, params={"path": "file/child"}, content=b"x"), 400),
        (org.put(base, params={"path": "/etc/passwd"}, content=b"x"), 403),
        (org.put(base, params={"path": "new", "mode": "99"}, content=b"x"), 400),
        (org.get("/v1/sandboxes/sb-nope/files", params={"path": "file"}), 404),
    ]
    for resp, status in cases:
        assert resp.status_code == status, (resp.request.url, resp.text)
        body = resp.json()
        assert body["statusCode"] == status and body["message"] and body["code"]
    assert settled(org, sid, "file") == ["keep", "0"]


def test_oversized_uploads_get_413_and_store_nothing(org: httpx.Client, sid: str, stack: Stack) -> None:
    base = f"/v1/sandboxes/{sid}/files"
    ok(org.put(base, params={"path": "big"}, content=b"original"))
    limit = 256 * MiB

    # announced: the core refuses before it reads a byte of the body (asked directly: through
    # the gateway the answer would wait for the client to send the body, as HTTP/1.1 proxies do)
    url = urlsplit(stack.config.core_url)
    with socket.create_connection((url.hostname, url.port), timeout=30) as raw:
        raw.sendall(
            f"PUT {base}?path=big HTTP/1.1\r\nhost: x\r\nauthorization: {org.headers['authorization']}\r\n"
            f"content-length: {limit + 1}\r\n\r\n".encode()
            + b"x" * 1000
        )
        head = raw.recv(65536).decode("latin-1")
    assert head.startswith("HTTP/1.1 413"), head

    # streamed without a length: refused once the limit is passed, nothing of it kept
    resp = org.put(base, params={"path": "big"}, content=pattern(limit + MiB))
    assert resp.status_code == 413, resp.text
    assert resp.json()["code"] == "payload_too_large"
    assert settled(org, sid, "big") == ["original", "0"]


def test_an_upload_cut_short_leaves_the_file_as_it_was(org: httpx.Client, sid: str, stack: Stack) -> None:
    base = f"/v1/sandboxes/{sid}/files"
    ok(org.put(base, params={"path": "keep.txt"}, content=b"original"))
    url = urlsplit(stack.config.gateway_url)
    with socket.create_connection((url.hostname, url.port), timeout=30) as raw:
        raw.sendall(
            f"PUT {base}?path=keep.txt HTTP/1.1\r\nhost: x\r\n"
            f"authorization: {org.headers['authorization']}\r\ncontent-length: {10 * MiB}\r\n\r\n".encode()
        )
        raw.sendall(b"y" * (3 * MiB))
    assert settled(org, sid, "keep.txt") == ["original", "0"]


def settled(org: httpx.Client, sid: str, name: str) -> list[str]:
    """``[content of ~/name, number of leftover temporary files]`` once no upload is left
    half-done (an abort travels gateway → core → hostd → agent asynchronously)."""
    deadline = time.monotonic() + 10
    while True:
        seen = sh(org, sid, f"cat ~/{name}; echo; ls -A ~ | grep -c dnah-upload || true").split()
        if seen[-1] == "0" or time.monotonic() > deadline:
            return seen
        time.sleep(0.1)


def test_transfers_cannot_leave_the_sandbox(org: httpx.Client, sid: str, marker: str) -> None:
    base = f"/v1/sandboxes/{sid}/files"
    sh(org, sid, "ln -s /root ~/rootdir; ln -s / ~/slash")
    spellings = [
        str(HOST_MARKER),
        f"/../../..{HOST_MARKER}",
        f"/proc/self/root{HOST_MARKER}",
        f"/proc/1/root{HOST_MARKER}",
        f"rootdir/{HOST_MARKER.name}",
        f"slash{HOST_MARKER}",
    ]
    for path in spellings:
        resp = org.get(base, params={"path": path})
        assert resp.status_code in (403, 404), (path, resp.text)
        assert marker.encode() not in resp.content
        resp = org.put(base, params={"path": path}, content=b"overwritten")
        assert resp.status_code in (403, 404), (path, resp.text)
    # a relative '..' walk stays inside too: it lands in the sandbox's /tmp
    ok(org.put(base, params={"path": "../../../../tmp/escaped"}, content=b"inside"))
    assert sh(org, sid, "cat /tmp/escaped") == "inside"
    assert not Path("/tmp/escaped").exists() or Path("/tmp/escaped").read_bytes() != b"inside"
    assert HOST_MARKER.read_text() == marker


def test_200_mb_each_way_in_flat_memory_on_every_hop(org: httpx.Client, sid: str, stack: Stack) -> None:
    """Peak RSS (VmHWM, reset first) of gateway, core and hostd stays far below the file."""
    size = 200 * MiB
    groups = {name: stack.procs[name].pid for name in ("gateway", "core", "hostd")}
    for pgid in groups.values():
        for pid in group_pids(pgid):
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset the peak to the current RSS
    expected = hashlib.sha256()
    for chunk in pattern(size):
        expected.update(chunk)
    base = f"/v1/sandboxes/{sid}/files"
    written = ok(org.put(base, params={"path": "big.bin"}, content=pattern(size)))
    assert isinstance(written, dict) and written["size"] == size
    assert sandbox_sha(org, sid, "~/big.bin") == expected.hexdigest()
    received = hashlib.sha256()
    with org.stream("GET", base, params={"path": "big.bin"}) as resp:
        assert resp.headers["content-length"] == str(size)
        for chunk in resp.iter_raw():
            received.update(chunk)
    assert received.hexdigest() == expected.hexdigest()
    for name, pgid in groups.items():
        peak_mb = max(peak_rss_kb(pid) for pid in group_pids(pgid)) / 1024
        print(f"{name} peak RSS during 2 x 200 MiB: {peak_mb:.1f} MiB")
        assert peak_mb < 150, name
    sh(org, sid, "rm ~/big.bin")


def group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid:
                    pids.append(int(entry.name))
            except ProcessLookupError:
                pass
    return pids


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


# Daytona ---------------------------------------------------------------------------------------


def test_daytona_bulk_upload_and_download(org: httpx.Client, sid: str) -> None:
    base = f"/toolbox/{sid}/files"
    home = sh(org, sid, "echo $HOME").strip()
    one, two = os.urandom(300_000), b"second file\n"
    resp = org.post(
        f"{base}/bulk-upload",
        data={"files[0].path": "up/one.bin", "files[1].path": f"{home}/up/deeper/two.txt"},
        files={"files[0].file": ("up/one.bin", one), "files[1].file": ("ignored-name", two)},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["files"] == [
        {"path": f"{home}/up/one.bin", "size": len(one)},
        {"path": f"{home}/up/deeper/two.txt", "size": len(two)},
    ]
    assert sandbox_sha(org, sid, "~/up/one.bin") == sha256(one)
    assert sh(org, sid, "cat ~/up/deeper/two.txt") == two.decode()

    requested = ["up/one.bin", "missing.txt", f"{home}/up/deeper/two.txt", "up"]
    resp = org.post(f"{base}/bulk-download", json={"paths": requested})
    assert resp.status_code == 200
    parts = parse_multipart(resp)
    assert [(name, filename) for name, filename, _, _ in parts] == [
        ("file", "up/one.bin"),
        ("error", "missing.txt"),
        ("file", f"{home}/up/deeper/two.txt"),
        ("error", "up"),
    ]
    assert parts[0][2] == one and parts[2][2] == two
    missing = httpx.Response(200, content=parts[1][2]).json()
    assert (missing["statusCode"], missing["code"]) == (404, "not_found") and missing["message"]
    assert parts[1][3] == "application/json"
    assert httpx.Response(200, content=parts[3][2]).json()["statusCode"] == 400

    # a sandbox-level problem is a plain error, not a multipart of errors
    assert org.post("/toolbox/sb-nope/files/bulk-download", json={"paths": ["x"]}).status_code == 404


def test_daytona_bulk_upload_reports_each_failed_file_and_keeps_the_rest(org: httpx.Client, sid: str) -> None:
    base = f"/toolbox/{sid}/files"
    sh(org, sid, "mkdir -p ~/adir")
    resp = org.post(
        f"{base}/bulk-upload",
        data={"files[0].path": "adir", "files[1].path": "fine.txt"},
        files={"files[0].file": ("adir", b"x" * 200_000), "files[1].file": ("fine.txt", b"fine")},
    )
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["statusCode"] == 400 and body["code"] == "bad_request"
    assert [e["path"] for e in body["errors"]] == ["adir"]
    assert [f["size"] for f in body["files"]] == [4]
    assert sh(org, sid, "cat ~/fine.txt; test -d ~/adir && echo dir") == "finedir\n"

    for bad in (
        org.post(f"{base}/bulk-upload", content=b"not multipart", headers={"content-type": "text/plain"}),
        org.post(
            f"{base}/bulk-upload",
            content=b'--b\r\ncontent-disposition: form-data; name="files[0].file"\r\n\r\ncut',
            headers={"content-type": "multipart/form-data; boundary=b"},
        ),
        org.post(f"{base}/bulk-upload", data={"other": "x"}, files={"unrelated": ("n", b"x")}),
        org.post(  # one path field twice: which was meant? (found by schemathesis)
            f"{base}/bulk-upload",
            data={"files[0].path": ["twice-a.txt", "twice-b.txt"]},
            files={"files[0].file": ("x", b"x")},
        ),
    ):
        assert bad.status_code == 400, bad.text
        assert bad.json()["statusCode"] == 400
    assert sh(org, sid, "ls -A ~ | grep -c dnah-upload || true").strip() == "0"


def test_daytona_single_file_routes(org: httpx.Client, sid: str) -> None:
    base = f"/toolbox/{sid}/files"
    home = sh(org, sid, "echo $HOME").strip()
    resp = org.post(
        f"{base}/upload", params={"path": "single.bin"}, files={"file": ("whatever", b"\x00\x01\x02")}
    )
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"path": f"{home}/single.bin", "size": 3}
    # seed 004's quick-start body: JSON with base64 content
    resp = org.post(f"{base}/upload", json={"path": "quick.txt", "content": "aGVsbG8gd29ybGQ="})
    assert resp.status_code == 200, resp.text
    assert sh(org, sid, "cat ~/quick.txt") == "hello world"
    bad = org.post(f"{base}/upload", json={"path": "quick.txt", "content": "not base64!"})
    assert bad.status_code == 400
    # not even ASCII (found by schemathesis: a 500 once)
    non_ascii = org.post(f"{base}/upload", json={"path": "quick.txt", "content": "½"})
    assert non_ascii.status_code == 400, non_ascii.text
    assert sh(org, sid, "cat ~/quick.txt") == "hello world"

    resp = org.get(f"{base}/download", params={"path": "single.bin"})
    assert (resp.status_code, resp.content) == (200, b"\x00\x01\x02")
    assert org.get(f"{base}/download", params={"path": "nope"}).status_code == 404
    # the seed 004 spelling through the gateway
    resp = org.get(f"/sandbox/{sid}/toolbox/files/download", params={"path": "quick.txt"})
    assert (resp.status_code, resp.content) == (200, b"hello world")


def test_transfers_are_activity(org: httpx.Client, sid: str) -> None:
    before = org.get(f"/v1/sandboxes/{sid}").json()["last_activity_at"]
    time.sleep(1.1)
    ok(org.put(f"/v1/sandboxes/{sid}/files", params={"path": "a"}, content=b"a"))
    after_upload = org.get(f"/v1/sandboxes/{sid}").json()["last_activity_at"]
    assert after_upload > before
    time.sleep(1.1)
    assert org.get(f"/v1/sandboxes/{sid}/files", params={"path": "a"}).content == b"a"
    assert org.get(f"/v1/sandboxes/{sid}").json()["last_activity_at"] > after_upload
