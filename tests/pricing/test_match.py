"""Quoting: precedence, ambiguity, and how a request path is read."""

from __future__ import annotations

import itertools
import random

import pytest

from pricing import PriceTable, PricingError, Quote, RouteRule, default_table_path, load_table, parse_table
from pricing._pattern import Pattern, split_path


def toml(*rules: tuple[str, str, str], head: str = "") -> str:
    """A table from ``(methods, path, price)`` rows; each description is ``"METHODS PATH"``."""
    out = [head]
    for methods, path, price in rules:
        listed = ", ".join(f'"{m}"' for m in methods.split(","))
        out.append(
            f'[[route]]\nmethods = [{listed}]\npath = "{path}"\nprice = "{price}"\n'
            f'description = "{methods} {path}"\n'
        )
    return "\n".join(out)


PRECEDENCE = toml(
    ("GET", "/sandbox", "0.0001"),
    ("GET", "/sandbox/paginated", "0.0002"),
    ("GET", "/sandbox/{id}", "0.0003"),
    ("*", "/sandbox/{id}", "0.0004"),
    ("GET", "/sandbox/**", "0.0005"),
    ("GET", "/sandbox/{id}/toolbox/**", "0.0006"),
    ("GET", "/sandbox/{id}/toolbox/{op}", "0.0007"),
    ("GET", "/sandbox/{id}/{a}/{b}", "0.0008"),
    ("GET", "/sandbox/{id}/toolbox/files", "0.0009"),
    ("*", "/sandbox/ssh-access/validate", "0.001"),
    ("GET", "/a/**", "0.0011"),
    ("GET", "/a/{x}/**", "0.0012"),
    ("*", "/", "0.0013"),
    ("GET", "/{any}/status/{n}", "0.0014"),
    ("*", "/**", "0.0015"),
)


@pytest.mark.parametrize(
    ("method", "path", "winner"),
    [
        ("GET", "/sandbox", "GET /sandbox"),
        ("GET", "/sandbox/paginated", "GET /sandbox/paginated"),  # exact beats {param}
        ("GET", "/sandbox/abc", "GET /sandbox/{id}"),  # a named method beats "*"
        ("POST", "/sandbox/abc", "* /sandbox/{id}"),
        ("GET", "/sandbox/ssh-access/validate", "* /sandbox/ssh-access/validate"),  # exact beats method
        ("GET", "/sandbox/abc/toolbox/files", "GET /sandbox/{id}/toolbox/files"),  # exact-literal wins
        ("GET", "/sandbox/abc/toolbox/git", "GET /sandbox/{id}/toolbox/{op}"),  # more literals
        ("GET", "/sandbox/abc/other/git", "GET /sandbox/{id}/{a}/{b}"),
        ("GET", "/sandbox/abc/toolbox/git/status", "GET /sandbox/{id}/toolbox/**"),  # {param} ran out
        ("GET", "/sandbox/abc/other/git/status", "GET /sandbox/**"),
        ("GET", "/sandbox/abc/status", "GET /sandbox/**"),
        ("GET", "/sandbox/status/1", "GET /{any}/status/{n}"),  # {param} beats ** whatever the literals
        ("GET", "/a/b", "GET /a/**"),
        ("GET", "/a/b/c", "GET /a/{x}/**"),  # equal literals: the longer pattern wins
        ("GET", "/other/status/1", "GET /{any}/status/{n}"),
        ("GET", "/", "* /"),
        ("GET", "/other", "* /**"),
        ("DELETE", "/sandbox", "* /**"),
        ("PROPFIND", "/sandbox/abc", "* /sandbox/{id}"),  # a method no rule names
        ("HEAD", "/sandbox/paginated", "* /sandbox/{id}"),  # HEAD is its own method: no GET rule
    ],
)
def test_precedence(method: str, path: str, winner: str) -> None:
    table = parse_table(PRECEDENCE)
    assert table.quote(method, path).description == winner
    # The file's order never decides: the reversed table agrees.
    rules = table.routes()
    assert PriceTable(reversed(rules)).quote(method, path).description == winner


def test_quote_fields() -> None:
    table = parse_table(
        toml(
            ("GET,POST", "/sandbox/{id}/stop", "0.001"), ("GET", "/health", "free"), ("GET", "/zero", "0.000")
        )
    )
    assert table.quote("post", "/sandbox/abc/stop?force=1#frag") == Quote(
        method="POST",
        path="/sandbox/abc/stop",
        amount=1000,
        price="0.001",
        free=False,
        payable=True,
        description="GET,POST /sandbox/{id}/stop",
        pattern="/sandbox/{id}/stop",
    )
    health = table.quote("GET", "/health")
    assert (health.amount, health.price, health.free, health.payable) == (0, "0", True, True)
    assert table.quote("GET", "/zero").free
    unmatched = table.quote("PUT", "/nowhere?x")
    assert (unmatched.pattern, unmatched.amount, unmatched.description) == ("default", 100, "API request")
    assert unmatched.path == "/nowhere"


@pytest.mark.parametrize(
    ("path", "kept"),
    [
        ("/x?a=1?b=2", "/x"),
        ("/x#a?b", "/x"),
        ("/x?a#b", "/x"),
        ("/x?", "/x"),
        ("/x", "/x"),
        ("?only", ""),
    ],
)
def test_query_and_fragment_are_ignored(path: str, kept: str) -> None:
    assert parse_table("").quote("GET", path).path == kept


@pytest.mark.parametrize(
    ("path", "description"),
    [
        ("/sandbox/", "GET /sandbox"),
        ("//sandbox", "GET /sandbox"),
        ("/sandbox/paginated/", "GET /sandbox/paginated"),
        ("/sandbox/abc/", "GET /sandbox/{id}"),
        ("/sandbox/a%2Fb", "GET /sandbox/{id}"),  # one segment, not two
        ("/sandbox/paginated%2Fx", "GET /sandbox/{id}"),
        ("/sandbox/pagin%61ted", "GET /sandbox/paginated"),  # decoded before matching
        ("/sandbox/x/../paginated", "GET /sandbox/paginated"),
        ("/sandbox/x/%2e%2e/paginated", "GET /sandbox/paginated"),
        ("/Sandbox", "API request"),  # literals are case-sensitive, like the routers behind
    ],
)
def test_path_normalisation(path: str, description: str) -> None:
    table = parse_table(
        toml(
            ("GET", "/sandbox", "0.1"), ("GET", "/sandbox/paginated", "0.2"), ("GET", "/sandbox/{id}", "0.3")
        )
    )
    assert table.quote("GET", path).description == description


@pytest.mark.parametrize(
    ("rules", "line", "says"),
    [
        (
            [("GET", "/sandbox/{id}", "0.1"), ("GET", "/sandbox/{x}", "0.2")],
            8,
            r"GET /sandbox/\{x\} is ambiguous with GET /sandbox/\{id\} \(line 2\): both match GET /sandbox/x",
        ),
        ([("*", "/sandbox/{id}", "0.1"), ("*", "/sandbox/{x}", "0.1")], 8, r"\* /sandbox/x"),
        ([("GET,POST", "/s/{id}", "0.1"), ("DELETE,POST", "/s/{x}", "0.1")], 8, "POST /s/x"),
        ([("GET", "/sandbox", "0.1"), ("GET", "/sandbox", "0.1")], 8, "both match GET /sandbox with"),
        ([("GET", "/a/{x}/c", "0.1"), ("GET", "/{y}/b/c", "0.1")], 8, "both match GET /a/b/c"),
        ([("GET", "/a/{x}/**", "0.1"), ("GET", "/a/{y}/**", "0.1")], 8, "both match GET /a/x/x"),
        ([("GET", "/a", "0.1"), ("GET", "/b/{x}", "0.1"), ("GET", "/b/{y}", "0.1")], 14, "line 8"),
    ],
)
def test_ambiguity_is_refused(rules: list[tuple[str, str, str]], line: int, says: str) -> None:
    with pytest.raises(PricingError, match=says) as info:
        parse_table(toml(*rules), source="t.toml")
    assert info.value.line == line
    assert str(info.value).startswith(f"t.toml:{line}: ")


@pytest.mark.parametrize(
    "rules",
    [
        [("GET", "/sandbox/{id}", "0.1"), ("*", "/sandbox/{x}", "0.2")],  # the named method wins
        [("GET", "/sandbox/{id}", "0.1"), ("POST", "/sandbox/{x}", "0.2")],
        [("GET", "/a/{x}/c", "0.1"), ("GET", "/a/{y}/d", "0.1")],
        [("GET", "/a/{x}/c", "0.1"), ("GET", "/b/{y}/c", "0.1")],
        [("GET", "/a/**", "0.1"), ("GET", "/a/{x}", "0.1"), ("GET", "/a/b", "0.1")],
        [("GET", "/a/{x}/**", "0.1"), ("GET", "/{y}/b/c", "0.1")],  # different classes
    ],
)
def test_not_ambiguous(rules: list[tuple[str, str, str]]) -> None:
    parse_table(toml(*rules))


def test_built_from_rules() -> None:
    rule = RouteRule(
        methods=("GET",),
        pattern="/x/{id}",
        amount=5,
        price="0.000005",
        free=False,
        payable=True,
        description="d",
    )
    table = PriceTable([rule])
    assert table.quote("GET", "/x/1").amount == 5
    assert table.default.amount == 100 and table.default.pattern == "default"
    assert table.currency_decimals == 6
    assert table.source == "<string>"
    listed = table.routes()
    listed.clear()  # a copy: the table keeps its rules
    assert table.routes() == [rule]
    bad = RouteRule(
        methods=("GET",),
        pattern="/x/",
        amount=5,
        price="0.000005",
        free=False,
        payable=True,
        description="d",
        line=9,
    )
    with pytest.raises(PricingError, match="ends with '/'") as info:
        PriceTable([bad], source="mine")
    assert (info.value.line, info.value.source) == (9, "mine")


def _reference(rules: list[tuple[RouteRule, Pattern]], method: str, path: str) -> RouteRule | None:
    """Precedence as docs/pricing.md states it, by brute force over every rule."""
    segments = split_path(path)
    best: tuple[tuple[int, int, int], bool] | None = None
    winner = None
    for rule, pattern in rules:
        if not (method in rule.methods or rule.methods == ("*",)):
            continue
        if not (pattern.fits(len(segments)) and pattern.literals_match()(segments)):
            continue
        key = (pattern.rank, rule.methods != ("*",))
        assert key != best, f"two rules tie for {method} {path}"
        if best is None or key > best:
            best, winner = key, rule
    return winner


def _paths_near(patterns: list[str], rng: random.Random) -> list[str]:
    """Request paths around the given patterns: parameters filled with words that are also
    literals elsewhere, segments swapped, dropped and added."""
    words = sorted({seg for p in patterns for seg in p.split("/") if seg and "{" not in seg and seg != "**"})
    words += ["abc", "x"]
    paths = ["/"]
    for pattern in patterns:
        for _ in range(30):
            segments = [
                rng.choice(words)
                if seg.startswith("{")
                else " ".join(rng.choices(words, k=rng.randint(1, 3)))
                if seg == "**"
                else seg
                for seg in pattern.strip("/").split("/")
            ]
            segments = "/".join(segments).replace(" ", "/").split("/")
            change = rng.randrange(4)
            if change == 0:
                segments[rng.randrange(len(segments))] = rng.choice(words)
            elif change == 1 and len(segments) > 1:
                segments.pop()
            elif change == 2:
                segments.append(rng.choice(words))
            paths.append("/" + "/".join(segments))
    return paths


def test_index_agrees_with_brute_force() -> None:
    rng = random.Random(4)
    for table in (load_table(default_table_path()), parse_table(PRECEDENCE)):
        rules = [(rule, Pattern(rule.pattern)) for rule in table.routes()]
        paths = _paths_near([rule.pattern for rule in table.routes()], rng)
        seen = set()
        for method, path in itertools.product(["GET", "POST", "PUT", "DELETE", "PATCH"], paths):
            expected = _reference(rules, method, path)
            got = table.quote(method, path)
            assert got.pattern == (expected.pattern if expected else "default"), (method, path)
            seen.add(got.pattern)
        assert {rule.pattern for rule, _ in rules} <= seen  # the paths reach every rule
