"""The line finder: strings, comments and arrays never move a header or a key."""

from __future__ import annotations

import tomllib

from pricing._lines import Layout

TRICKY = (
    "# [[route]] in a comment\n"  # 1
    "default_description = '''\n[[route]]\nmethod = 'GET'\n'''''\n"  # 2-5; two quotes are text
    'default = "0.001"  # [[route]]\n'  # 6
    "[[route]]\n"  # 7
    'methods = [\n  "GET",  # [[route]]\n  "POST", "]",\n]\n'  # 8-11
    'path = "/a"\n'  # 12
    'description = "has \\" and # and [[route]]"\n'  # 13
    '"price" = "0.5"\n'  # 14
    "  [[ route ]]\n"  # 15
    'description = """\nmulti \\""" line\nprice = 1\n"""""\n'  # 16-19; two quotes are text
    "method = 'GET'\n"  # 20
    "'path' = '/b'\n"  # 21
    "price.usd = 1\n"  # 22
    "[route.sub]\n"  # 23
    "x = 1\n"  # 24
    "[[other]]\n"  # 25
    "price = 2\n"  # 26
    '[[ "route" ]]\n'  # 27
    "price = 3\n"  # 28
    "[plain]\n"  # 29
    "y = { a = [1, 2], b = 'c' }\n"  # 30
    '["odd.name" . x]\n'  # 31
)


def test_tricky_layout() -> None:
    data = tomllib.loads(TRICKY)  # the layout is only ever asked about valid TOML
    assert len(data["route"]) == 3
    layout = Layout(TRICKY)
    assert layout.top_keys == {"default_description": 2, "default": 6}
    assert layout.route_headers == [7, 15, 27]
    assert layout.route_keys == [
        {"methods": 8, "path": 12, "description": 13, "price": 14},
        {"description": 16, "method": 20, "path": 21, "price": 22},
        {"price": 28},
    ]
    assert layout.tables == {"route": 23, "other": 25, "plain": 29, "odd.name": 31}
    assert layout.route(2) == 27
    assert layout.route_key(1, "price") == 22
    assert layout.route_key(1, "sub") == 15  # not a key of the route itself: its header
    assert layout.top("other") == 25
    assert layout.top("nothing") is None


def test_inline_route_array() -> None:
    text = 'version = 1\nroute = [\n  { path = "/a" },\n  { path = "/b" },\n]\n'
    layout = Layout(text)
    assert layout.route(0) == 2
    assert layout.route(1) == 2
    assert layout.route_key(1, "path") == 2


def test_windows_line_ends_and_no_final_newline() -> None:
    layout = Layout('a = 1\r\n[[route]]\r\npath = "/x"')
    assert layout.top_keys == {"a": 1}
    assert layout.route_keys == [{"path": 3}]
