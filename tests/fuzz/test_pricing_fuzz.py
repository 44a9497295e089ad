"""Fuzz the price-table parser (``pricing``): whatever text an operator (or a typo) puts in the
file, ``parse_table`` returns a table or raises ``PricingError`` with a line, never anything
else; and a table it accepts quotes consistently.

Three kinds of input: arbitrary text; TOML built from hostile structured tables (every key,
known or not, with values of every TOML type); and the shipped table with lines dropped,
duplicated or cut. Accepted tables are then probed with paths made from their own patterns.
"""

from __future__ import annotations

import datetime
import random

from hypothesis import assume, event, given
from hypothesis import strategies as st

from pricing import MAX_AMOUNT, PriceTable, PricingError, default_table_path, format_price, parse_table
from pricing import to_base_units as to_units
from pricing._pattern import Pattern, split_path
from tests.fuzz.profiles import fuzz

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "*", "get", "TRACE", ""]
SHIPPED = default_table_path().read_text()


# TOML text from structured values ------------------------------------------------------------


def _toml_string(text: str) -> str:
    escaped = []
    for char in text:
        if char in '"\\' or ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\u{ord(char):04x}")
        elif 0xD800 <= ord(char) <= 0xDFFF:
            escaped.append("?")  # TOML cannot carry a lone surrogate at all
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if value == value and abs(value) != float("inf") else "nan"
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, datetime.date | datetime.datetime | datetime.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_string(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise AssertionError(type(value))


prices = st.one_of(
    st.sampled_from(["free", "0", "0.0001", "1", "1000000", "1000000.000001", "0.0000001", "-1", "1e3"]),
    st.from_regex(r"[0-9]{1,9}(\.[0-9]{1,8})?", fullmatch=True),
    st.text(max_size=12),
)
segments = st.one_of(
    st.sampled_from(["sandbox", "toolbox", "v1", "{id}", "{ref}", "{x}", "**", "files", ".", "..", "", "{}"]),
    st.text(st.characters(codec="utf-8", exclude_characters="/"), max_size=8),
)
patterns = st.one_of(
    st.lists(segments, max_size=5).map(lambda segs: "/" + "/".join(segs)),
    st.text(max_size=20),
)
scalars = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(),
    st.text(max_size=20),
    st.dates(),
    st.datetimes(),
)
any_value = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=6)


plausible_patterns = st.builds(
    lambda segs, tail: "/" + "/".join(segs + tail),
    st.lists(st.sampled_from(["sandbox", "toolbox", "v1", "files", "{id}", "{ref}"]), min_size=1, max_size=4),
    st.sampled_from([[], [], ["**"]]),
)
plausible_prices = st.one_of(
    st.just("free"), st.from_regex(r"(0|[1-9][0-9]{0,5})(\.[0-9]{1,6})?", fullmatch=True)
)


@st.composite
def routes(draw: st.DrawFn) -> dict[str, object]:
    """A ``[[route]]``: most are plausible; the rest have keys missing, hostile or of the wrong
    type, so that both refusals and accepted tables with several rules come up."""
    clean = draw(st.integers(0, 3)) > 0

    def often(plausible: st.SearchStrategy[object], hostile: st.SearchStrategy[object]) -> object:
        return draw(plausible if clean or draw(st.booleans()) else hostile)

    route: dict[str, object] = {}
    if clean or draw(st.integers(0, 9)):
        route["path"] = often(plausible_patterns, st.one_of(patterns, any_value))
    method_key = draw(
        st.sampled_from(["method", "methods"] if clean else ["method", "methods", None, "both"])
    )
    if method_key in ("method", "both"):
        route["method"] = often(st.sampled_from(METHODS[:8]), st.one_of(st.sampled_from(METHODS), any_value))
    if method_key in ("methods", "both"):
        route["methods"] = often(
            st.lists(st.sampled_from(METHODS[:7]), min_size=1, max_size=3, unique=True),
            st.one_of(st.lists(st.sampled_from(METHODS), max_size=4), any_value),
        )
    if clean or draw(st.integers(0, 9)):
        route["price"] = often(plausible_prices, st.one_of(prices, any_value))
    if clean or draw(st.integers(0, 9)):
        route["description"] = often(st.just("a route"), st.one_of(st.text(max_size=30), any_value))
    if draw(st.integers(0, 3)) == 0:
        route["payable"] = often(st.just(True), any_value)
    if not clean and draw(st.integers(0, 9)) == 0:
        route[draw(st.text(min_size=1, max_size=8))] = draw(any_value)
    return route


@st.composite
def tables(draw: st.DrawFn) -> str:
    lines: list[str] = []
    top = draw(
        st.dictionaries(
            st.sampled_from(["version", "default", "default_description", "default_payable", "other"]),
            st.one_of(prices, any_value),
            max_size=4,
        )
        if draw(st.integers(0, 3)) == 0
        else st.fixed_dictionaries({"version": st.just(1), "default": plausible_prices})
    )
    lines += [f"{_toml_string(k)} = {_toml_value(v)}" for k, v in top.items()]
    for route in draw(st.lists(routes(), max_size=6)):
        lines.append("[[route]]")
        lines += [f"{_toml_string(k)} = {_toml_value(v)}" for k, v in route.items()]
    return "\n".join(lines) + "\n"


@st.composite
def mangled_shipped(draw: st.DrawFn) -> str:
    """The shipped table with a few lines dropped, duplicated or cut short."""
    lines = SHIPPED.splitlines()
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["drop", "dup", "cut", "junk"]))
        if action == "drop":
            del lines[i]
        elif action == "dup":
            lines.insert(i, lines[i])
        elif action == "cut":
            lines[i] = lines[i][: draw(st.integers(0, max(0, len(lines[i]) - 1)))]
        else:
            lines.insert(i, draw(st.text(max_size=20)))
    return "\n".join(lines)


# properties ---------------------------------------------------------------------------------


def _parse(text: str) -> PriceTable | None:
    """The table, or None for a refusal that says where (a line within the text)."""
    try:
        table = parse_table(text)
    except PricingError as exc:
        event("refused")
        assert exc.message, "a refusal must say why"
        if exc.line is not None:
            assert 1 <= exc.line <= max(1, len(text.splitlines()) + 1), (exc.line, exc)
        return None
    event(f"accepted, {min(len(table.routes()), 2)}+ routes")
    return table


def _witness(pattern: Pattern, fill: str) -> str:
    """A request path that ``pattern`` matches: each parameter becomes ``fill``, ``**`` two segments."""
    parts = []
    for seg in pattern.segments:
        if seg == "**":
            parts += [fill, fill]
        elif seg.startswith("{"):
            parts.append(fill)
        else:
            parts.append(seg)
    return "/" + "/".join(parts)


def _check_quotes(table: PriceTable, text: str, fill: str) -> None:
    """Each rule's own paths are priced by a rule that matches them, identically whatever the
    order of the rules in the file; prices and amounts agree."""
    rules = table.routes()
    shuffled = PriceTable(random.Random(len(text)).sample(rules, len(rules)), default=table.default)
    for rule in rules:
        pattern = Pattern(rule.pattern)
        path = _witness(pattern, fill)
        for method in (*rule.methods, "GET", "DELETE"):
            method = "GET" if method == "*" else method
            quote = table.quote(method, path)
            assert quote == shuffled.quote(method, path), (method, path)
            assert quote.price == format_price(quote.amount)
            assert to_units(quote.price) == quote.amount
            if quote.pattern == "default":
                assert method not in rule.methods and "*" not in rule.methods, (method, path, rule)
                continue
            winner = Pattern(quote.pattern)
            segments = split_path(path)
            assert winner.fits(len(segments)) and winner.literals_match()(segments), (quote, path)
            if method in rule.methods or "*" in rule.methods:
                assert winner.rank >= pattern.rank, (quote.pattern, rule.pattern)


@fuzz(300)
@given(st.text(max_size=400))
def test_arbitrary_text_is_a_table_or_a_pricing_error(text: str) -> None:
    _parse(text)


@fuzz(400)
@given(tables(), st.sampled_from(["x", "a%2Fb", "%00", "é", "%zz", "a b"]))
def test_hostile_tables_parse_or_refuse_and_quote_consistently(text: str, fill: str) -> None:
    table = _parse(text)
    if table is not None:
        _check_quotes(table, text, fill)


@fuzz(150)
@given(mangled_shipped())
def test_a_mangled_shipped_table_parses_or_refuses(text: str) -> None:
    table = _parse(text)
    if table is not None:
        _check_quotes(table, text, "x")


@fuzz(300)
@given(st.text(max_size=40))
def test_a_price_string_is_an_amount_or_a_pricing_error(text: str) -> None:
    try:
        amount = to_units(text)
    except PricingError:
        return
    assert 0 <= amount <= MAX_AMOUNT
    assert to_units(format_price(amount)) == amount


@fuzz(300)
@given(st.integers(0, MAX_AMOUNT))
def test_amounts_round_trip_through_their_price(amount: int) -> None:
    price = format_price(amount)
    assert to_units(price) == amount
    assert price == format_price(to_units(price))


@fuzz(300)
@given(st.one_of(patterns, st.text(max_size=60)), st.text(max_size=60))
def test_patterns_and_request_paths_never_raise_anything_else(pattern: str, path: str) -> None:
    segments = split_path(path)
    assert all(seg and seg not in (".", "..") for seg in segments)
    try:
        parsed = Pattern(pattern)
    except PricingError:
        return
    assume(parsed.segments)
    assert parsed.fits(len(split_path(_witness(parsed, "x"))))
