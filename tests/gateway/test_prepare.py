"""The sans-I/O half of forwarding: path mapping, path refusal and the upstream request."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.forward import has_dot_segment, is_internal, map_path, prepare


@pytest.mark.parametrize(
    ("client_path", "core_path"),
    [
        (b"/sandbox/abc/toolbox/files", b"/toolbox/abc/files"),
        (b"/sandbox/abc/toolbox/process/sessions/s1/exec", b"/toolbox/abc/process/sessions/s1/exec"),
        (b"/sandbox/abc/toolbox/", b"/toolbox/abc/"),
        (b"/sandbox/abc/toolbox", b"/toolbox/abc"),
        (b"/sandbox/a%20b/toolbox/files", b"/toolbox/a%20b/files"),
        # Not toolbox calls: forwarded as they are.
        (b"/sandbox/abc/toolbox-proxy-url", b"/sandbox/abc/toolbox-proxy-url"),
        (b"/sandbox/abc/toolboxes/x", b"/sandbox/abc/toolboxes/x"),
        (b"/sandbox/abc", b"/sandbox/abc"),
        (b"/sandbox//toolbox/x", b"/sandbox//toolbox/x"),
        (b"/sandbox/toolbox/x", b"/sandbox/toolbox/x"),
        (b"/v1/sandbox/abc/toolbox/x", b"/v1/sandbox/abc/toolbox/x"),
        (b"/", b"/"),
    ],
)
def test_map_path(client_path: bytes, core_path: bytes) -> None:
    assert map_path(client_path) == core_path


@pytest.mark.parametrize(
    ("path", "refused"),
    [
        (b"/a/../b", True),
        (b"/a/./b", True),
        (b"/a/..", True),
        (b"/a/%2e%2e/b", True),
        (b"/a/%2E./b", True),
        (b"/a/%2e/b", True),
        (b"/a/..b/c", False),
        (b"/a/b.txt", False),
        (b"/a/.hidden", False),
        (b"/a%2Fb/c", False),
        (b"/", False),
    ],
)
def test_dot_segments(path: bytes, refused: bool) -> None:
    assert has_dot_segment(path) is refused


def _scope(headers: list[tuple[bytes, bytes]], **extra: Any) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "scheme": "https",
        "path": "/sandbox/s1/toolbox/files/upload",
        "raw_path": b"/sandbox/s1/toolbox/files/upload",
        "query_string": b"path=/a%20b&x=1&x=2",
        "headers": headers,
    }
    scope.update(extra)
    return scope


def test_prepare_builds_the_upstream_request() -> None:
    upstream = prepare(
        _scope(
            [
                (b"host", b"api.example.com"),
                (b"authorization", b"Bearer k"),
                (b"connection", b"keep-alive, X-Private"),
                (b"x-private", b"1"),
                (b"keep-alive", b"timeout=5"),
                (b"te", b"trailers"),
                (b"proxy-authorization", b"Basic x"),
                (b"expect", b"100-continue"),
                (b"content-length", b"12"),
                (b"x-forwarded-host", b"spoofed.example"),
                (b"x-multi", b"1"),
                (b"x-multi", b"2"),
                (b"x-request-id", b"client-id.1"),
            ]
        ),
        "http://core:3100",
    )
    assert upstream.method == "POST"
    assert upstream.url == "http://core:3100/toolbox/s1/files/upload?path=/a%20b&x=1&x=2"
    assert upstream.raw_path == b"/sandbox/s1/toolbox/files/upload"
    assert upstream.request_id == "client-id.1"
    assert upstream.headers == [
        (b"authorization", b"Bearer k"),
        (b"content-length", b"12"),
        (b"x-multi", b"1"),
        (b"x-multi", b"2"),
        (b"x-request-id", b"client-id.1"),
        (b"x-forwarded-host", b"api.example.com"),
        (b"x-forwarded-proto", b"https"),
    ]


@pytest.mark.parametrize("sent", [b"", b"has space", b'quote"', b"x" * 129, "é".encode()])
def test_prepare_replaces_an_unusable_request_id(sent: bytes) -> None:
    upstream = prepare(_scope([(b"x-request-id", sent)]), "http://core:3100")
    assert len(upstream.request_id) == 32
    assert upstream.request_id != sent.decode(errors="replace")
    assert (b"x-request-id", upstream.request_id.encode()) in upstream.headers


def test_prepare_without_host_or_query() -> None:
    upstream = prepare(
        _scope([], method="GET", raw_path=b"/v1/sandboxes", query_string=b""), "http://core:3100"
    )
    assert upstream.url == "http://core:3100/v1/sandboxes"
    assert [name for name, _ in upstream.headers] == [b"x-request-id", b"x-forwarded-proto"]


@pytest.mark.parametrize(
    ("path", "internal"),
    [
        (b"/internal/hosts/register", True),
        (b"/INTERNAL/hosts/h/heartbeat", True),
        (b"//internal/hosts/register", True),
        (b"/%69nternal/hosts/register", True),
        (b"/internal", True),
        (b"/internal?x=1", True),
        (b"/internals/x", False),
        (b"/v1/internal/x", False),
        (b"/sandbox/internal", False),
    ],
)
def test_internal_paths_are_recognised(path: bytes, internal: bool) -> None:
    assert is_internal(path) is internal
