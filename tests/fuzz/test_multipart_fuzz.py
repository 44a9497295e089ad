"""Fuzz the Daytona multipart upload path (``core/http/daytona/transfers.py``) on the real stack.

Hostile multipart bodies go to ``/toolbox/{id}/files/upload`` and ``/bulk-upload`` of a
started sandbox, straight to the core: boundaries that do not match, are missing, quoted or
huge; parts without headers, without names, with huge header lines, too many headers; NUL,
``..`` and absolute names in filenames and ``files[i].path`` fields; preambles, epilogues
and bodies cut short. Every answer must be a 2xx or a 4xx, never a 5xx or a hang, and a
stored file must be one the body asked for: every name carries a token, and no file with
that token may appear on the host outside the sandbox.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import httpx
import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from cli.stack import Stack
from tests.core.test_files import create, ok, sh
from tests.fuzz.profiles import fuzz
from tests.support import mint_key

pytestmark = [pytest.mark.stack, pytest.mark.filterwarnings("ignore:Generating overly large repr")]

TOKEN = f"fz{secrets.token_hex(4)}"
"""In every name a body uses, so the test can look for files that escaped the sandbox."""
REQUEST_TIMEOUT = 60.0
HOST_DIRS = [Path("/"), Path("/tmp"), Path("/root"), Path.cwd()]
"""Where a path that escaped the sandbox (``..``, absolute) would land on the host."""


@pytest.fixture(scope="module")
def toolbox(stack: Stack, core: httpx.Client) -> Iterator[tuple[httpx.Client, str]]:
    """A client of a fresh org, talking to the core, and a started sandbox of that org."""
    key = mint_key(core, "fuzz-multipart")
    with httpx.Client(
        base_url=stack.config.core_url, headers={"authorization": f"Bearer {key}"}, timeout=REQUEST_TIMEOUT
    ) as client:
        sid = create(client)
        yield client, sid
        client.delete(f"/v1/sandboxes/{sid}")
    for directory in HOST_DIRS:
        escaped = sorted(str(p) for p in directory.glob(f"*{TOKEN}*"))
        assert not escaped, f"uploads escaped the sandbox: {escaped}"


# bodies ------------------------------------------------------------------------------------

names = st.one_of(
    st.sampled_from(
        ["file", "files[0].path", "files[0].file", "files[1].path", "files[1].file", "other", ""]
    ),
    st.integers(0, 10**25).map(lambda i: f"files[{i}].file"),
    st.text(max_size=12),
)
path_values = st.one_of(
    st.sampled_from(
        [
            f"{TOKEN}",
            f"d/{TOKEN}",
            f"../../../../{TOKEN}",
            f"/{TOKEN}",
            f"/tmp/{TOKEN}",
            f"/proc/self/root/{TOKEN}",
            f"{TOKEN}\x00x",
            f"{TOKEN}/",
            "",
            ".",
            "..",
            "/",
            "/dev/null",
            f"{TOKEN}" + "a" * 300,
            f"{TOKEN}\u202e",
        ]
    ),
    st.text(max_size=30).map(lambda t: f"{TOKEN}{t}"),
)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


known_names = st.sampled_from(["file", "files[0].path", "files[0].file", "files[1].path", "files[1].file"])


@st.composite
def part(draw: st.DrawFn, boundary: bytes, well_formed: bool) -> bytes:
    name = draw(known_names if well_formed else names)
    headers: list[bytes] = []
    styles = ["normal", "normal", "normal", "no-headers", "no-disposition", "huge", "many"]
    style = "normal" if well_formed else draw(st.sampled_from(styles))
    disposition = f"form-data; name={_quote(name)}"
    if draw(st.booleans()):
        disposition += f"; filename={_quote(draw(path_values))}"
    if style == "normal":
        headers.append(f"Content-Disposition: {disposition}".encode("utf-8", "surrogateescape"))
        if draw(st.booleans()):
            headers.append(b"Content-Type: application/octet-stream")
    elif style == "no-disposition":
        headers.append(b"Content-Type: text/plain")
    elif style == "huge":
        headers.append(b'Content-Disposition: form-data; name="file"; filename="' + b"x" * 70_000 + b'"')
    elif style == "many":
        headers += [f"X-H{i}: v".encode() for i in range(20)]
    content = (
        draw(path_values).encode("utf-8", "surrogateescape")
        if name.endswith(".path")
        else draw(st.binary(max_size=300))
    )
    if draw(st.integers(0, 9)) == 0:
        content += b"\r\n--" + boundary  # a delimiter inside the content
    return b"--" + boundary + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + content + b"\r\n"


@st.composite
def bodies(draw: st.DrawFn) -> tuple[str, bytes]:
    """(content-type header, body): a third well-formed (as a client library would write it,
    hostile only in names and contents), the rest hostile in their structure too."""
    if draw(st.integers(0, 2)) == 0:
        boundary = draw(st.sampled_from([b"b0undary", b"----x1234", b"a" * 70]))
        parts = draw(st.lists(part(boundary, True), min_size=1, max_size=4))
        return f"multipart/form-data; boundary={boundary.decode()}", b"".join(
            parts
        ) + b"--" + boundary + b"--\r\n"
    boundary = draw(
        st.one_of(
            st.sampled_from([b"b0undary", b"x", b"a" * 70, b"-", b"--", b"b\x00b", b"b b"]),
            st.binary(min_size=1, max_size=80).filter(lambda b: b"\r" not in b and b"\n" not in b),
        )
    )
    header_boundary = boundary if draw(st.integers(0, 4)) else draw(st.binary(max_size=20))
    # what an HTTP client can put in a header: no control characters
    header_boundary = bytes(b for b in header_boundary if 0x20 <= b < 0x7F)
    kind = draw(
        st.sampled_from(["multipart/form-data", "multipart/form-data", "multipart/mixed", "text/plain"])
    )
    content_type = f"{kind}; boundary={_quote(header_boundary.decode('latin-1'))}"
    if draw(st.integers(0, 9)) == 0:
        content_type = kind  # no boundary at all
    parts = draw(st.lists(part(boundary, False), max_size=6))
    if draw(st.integers(0, 9)) == 0:
        parts = parts * 30  # many parts
    body = b"".join(parts)
    if draw(st.booleans()):
        body = draw(st.binary(max_size=40)) + b"\r\n" + body  # a preamble
    if draw(st.integers(0, 3)):
        body += b"--" + boundary + b"--\r\n"
        if draw(st.booleans()):
            body += draw(st.binary(max_size=40))  # an epilogue
    if draw(st.integers(0, 5)) == 0:
        body = body[: draw(st.integers(0, len(body)))]  # cut short
    return content_type, body


# the property ------------------------------------------------------------------------------


def _requested(body: bytes) -> set[str]:
    """Every basename a body could ask for (the token names them)."""
    found = set()
    for chunk in body.split(TOKEN.encode())[1:]:
        tail = chunk.split(b'"')[0].split(b"\r")[0].split(b"/")[0]
        found.add(TOKEN + tail.decode("utf-8", "replace"))
    return found


def _check(resp: httpx.Response, body: bytes) -> None:
    assert resp.status_code < 500, (resp.status_code, resp.text[:500])
    if resp.status_code != 200:
        kind = resp.headers.get("content-type", "")
        assert kind.startswith("application/json"), (resp.status_code, kind, resp.text)
        message = resp.json().get("message") or resp.json().get("detail")
        assert message, resp.text[:500]
        event(f"{resp.status_code} {message[:70]}")
        return
    event("200")
    answer = resp.json()
    files = answer.get("files", [answer])
    requested = _requested(body)
    for stored in files:
        name = PurePosixPath(stored["path"]).name
        assert name in requested or TOKEN not in name, (stored, requested)


def _multipart(*parts: bytes) -> tuple[str, bytes]:
    body = b"".join(b"--b\r\n" + p + b"\r\n" for p in parts) + b"--b--\r\n"
    return "multipart/form-data; boundary=b", body


FILE_PART = b'Content-Disposition: form-data; name="file"\r\n\r\nx'
HUGE_HEADER = b'Content-Disposition: form-data; name="file"; filename="' + b"x" * 70_000 + b'"\r\n\r\nx'
MANY_HEADERS = b"".join(b"X-H%d: v\r\n" % i for i in range(20)) + FILE_PART
MANY_PARTS = [b'Content-Disposition: form-data; name="n"\r\n\r\n'] * 20_001


@fuzz(60)
@given(bodies(), st.sampled_from(["bulk-upload", "upload", "upload?path"]))
@example(_multipart(FILE_PART), "upload")
@example(_multipart(HUGE_HEADER), "bulk-upload")  # was a 500: ParserLimitReached is no ParserError
@example(_multipart(MANY_HEADERS), "upload?path")  # likewise
@example(_multipart(*MANY_PARTS), "bulk-upload")  # more parts than transfers._SEGMENTS_MAX
def test_hostile_multipart_bodies_get_a_4xx_never_a_5xx(
    toolbox: tuple[httpx.Client, str], body: tuple[str, bytes], route: str
) -> None:
    client, sid = toolbox
    content_type, data = body
    url = f"/toolbox/{sid}/files/{route.split('?')[0]}"
    params = {"path": f"q/{TOKEN}"} if route.endswith("?path") else None
    resp = client.post(url, params=params, content=data, headers={"content-type": content_type})
    _check(resp, data + (f"q/{TOKEN}".encode() if params else b""))


def test_the_sandbox_still_serves_after_the_fuzz(toolbox: tuple[httpx.Client, str]) -> None:
    client, sid = toolbox
    assert sh(client, sid, "echo ok").strip() == "ok"
    assert ok(client.get(f"/v1/sandboxes/{sid}"))
