"""Patterns (what an operator may write) and request paths (how a request is split)."""

from __future__ import annotations

import pytest

from pricing import PricingError
from pricing._pattern import EXACT, PARAM, WILDCARD, Pattern, common_path, split_path


@pytest.mark.parametrize(
    ("text", "segments", "rank", "names", "first"),
    [
        ("/", (), (EXACT, 0, 0), (), None),
        ("/sandbox", ("sandbox",), (EXACT, 1, 1), (), "sandbox"),
        ("/sandbox/paginated", ("sandbox", "paginated"), (EXACT, 2, 2), (), "sandbox"),
        ("/sandbox/{id}", ("sandbox", "{id}"), (PARAM, 1, 2), ("id",), "sandbox"),
        ("/{org}/x", ("{org}", "x"), (PARAM, 1, 2), ("org",), None),
        ("/sandbox/{id}/ports/{port}/preview-url", None, (PARAM, 3, 5), ("id", "port"), "sandbox"),
        ("/sandbox/{id}/toolbox/**", None, (WILDCARD, 2, 4), ("id",), "sandbox"),
        ("/**", ("**",), (WILDCARD, 0, 1), (), None),
        ("/__mpp/health", ("__mpp", "health"), (EXACT, 2, 2), (), "__mpp"),
        ("/llms.txt", ("llms.txt",), (EXACT, 1, 1), (), "llms.txt"),
        ("/a/b~c/d-e_f/:x/@y", None, (EXACT, 5, 5), (), "a"),
    ],
)
def test_patterns(
    text: str,
    segments: tuple[str, ...] | None,
    rank: tuple[int, int, int],
    names: tuple[str, ...],
    first: str | None,
) -> None:
    pattern = Pattern(text)
    if segments is not None:
        assert pattern.segments == segments
    assert pattern.rank == rank
    assert pattern.names == names
    assert pattern.first == first
    assert pattern.wildcard == text.endswith("**")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("sandbox", "must start with '/'"),
        ("", "must start with '/'"),
        ("/sandbox/", "ends with '/'"),
        ("/sandbox//x", "empty segment"),
        ("/**/x", "'\\*\\*' may only be the last segment"),
        ("/a/**/**", "may only be the last segment"),
        ("/a/*", "may not contain"),
        ("/a/***", "may not contain"),
        ("/a/x*", "may not contain"),
        ("/a/{}", "not a parameter"),
        ("/a/{1x}", "not a parameter"),
        ("/a/{a-b}", "not a parameter"),
        ("/a/{ id }", "not a parameter"),
        ("/a/{id", "may not contain"),
        ("/a/id}", "may not contain"),
        ("/a/x{id}", "may not contain"),
        ("/a/{id}/b/{id}", "parameter \\{id\\} twice"),
        ("/a/.", "'\\.' segment"),
        ("/a/../b", "'\\.\\.' segment"),
        ("/a?x=1", "may not contain"),
        ("/a#top", "may not contain"),
        ("/a%2Fb", "may not contain"),
        ("/a b", "may not contain"),
        ("/a\tb", "may not contain"),
        ("/a\x00", "may not contain"),
    ],
)
def test_bad_patterns(text: str, says: str) -> None:
    with pytest.raises(PricingError, match=says):
        Pattern(text)


@pytest.mark.parametrize(
    ("path", "segments"),
    [
        ("/", ()),
        ("", ()),
        ("//", ()),
        ("/sandbox", ("sandbox",)),
        ("/sandbox/", ("sandbox",)),  # trailing slash: the same path
        ("//sandbox//abc/", ("sandbox", "abc")),  # empty segments are dropped
        ("sandbox/abc", ("sandbox", "abc")),
        ("/sandbox/a%2Fb", ("sandbox", "a/b")),  # %2F never makes a segment
        ("/sandbox/a%2fb/x", ("sandbox", "a/b", "x")),
        ("/sandbox/ssh%2Daccess/validate", ("sandbox", "ssh-access", "validate")),  # decoded
        ("/files/%E2%9C%93", ("files", "✓")),
        ("/files/%ff", ("files", "\ufffd")),  # not UTF-8: replaced, never an error
        ("/files/100%", ("files", "100%")),  # a stray % is kept as is
        ("/a/./b", ("a", "b")),
        ("/a/b/../c", ("a", "c")),
        ("/a/../../../b", ("b",)),  # .. never climbs above the root
        ("/a/%2E%2E/b", ("b",)),  # encoded dots are dots
        ("/a/%2e/b", ("a", "b")),
        ("/a/.../b", ("a", "...", "b")),  # three dots are a name
        ("/a/.hidden", ("a", ".hidden")),
    ],
)
def test_split_path(path: str, segments: tuple[str, ...]) -> None:
    assert split_path(path) == segments


@pytest.mark.parametrize(
    ("a", "b", "common"),
    [
        ("/sandbox/{id}", "/sandbox/{x}", "/sandbox/x"),
        ("/a/{x}/c", "/{y}/b/c", "/a/b/c"),
        ("/a/{x}/c", "/a/{y}/d", None),
        ("/sandbox/{id}/toolbox/**", "/sandbox/{x}/toolbox/**", "/sandbox/x/toolbox/x"),
        ("/a/**", "/b/**", None),
        ("/a/b", "/a/b", "/a/b"),
    ],
)
def test_common_path(a: str, b: str, common: str | None) -> None:
    assert common_path(Pattern(a), Pattern(b)) == common
    assert (common_path(Pattern(b), Pattern(a)) is None) == (common is None)


@pytest.mark.parametrize(
    ("text", "path", "matches"),
    [
        ("/sandbox/{id}", "/sandbox/abc", True),
        ("/sandbox/{id}", "/sandbox", False),
        ("/sandbox/{id}", "/sandbox/abc/stop", False),
        ("/sandbox/{id}", "/other/abc", False),
        ("/{x}", "/anything", True),
        ("/sandbox/{id}/toolbox/**", "/sandbox/abc/toolbox", False),  # ** is one or more
        ("/sandbox/{id}/toolbox/**", "/sandbox/abc/toolbox/x", True),
        ("/sandbox/{id}/toolbox/**", "/sandbox/abc/toolbox/x/y/z", True),
        ("/sandbox/{id}/toolbox/**", "/sandbox/abc/toolbo/x", False),
        ("/**", "/", False),
        ("/**", "/x", True),
        ("/a/b/{c}", "/a/b/c", True),
        ("/a/b/{c}", "/a/x/c", False),
    ],
)
def test_fits_and_literals(text: str, path: str, matches: bool) -> None:
    pattern = Pattern(text)
    segments = split_path(path)
    assert (pattern.fits(len(segments)) and pattern.literals_match()(segments)) == matches
