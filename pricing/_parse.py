"""The operator's TOML file → ``PriceTable``, with every refusal naming its line."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pricing._lines import Layout
from pricing._match import ANY_METHOD, DEFAULT_RULE, PriceTable
from pricing._model import DEFAULT_PATTERN, PricingError, RouteRule
from pricing._money import format_price, to_base_units
from pricing._pattern import Pattern

VERSION = 1
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
FREE = "free"
TOP_KEYS = ("default", "default_description", "default_payable", "route", "version")
ROUTE_KEYS = ("description", "method", "methods", "path", "payable", "price")

_TOML_POSITION = re.compile(r"\s*\(at (?:line (\d+), column \d+|end of document)\)$")
_At = Callable[[str], int | None]
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TOML_TYPES = {
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a float",
    list: "an array",
    dict: "a table",
}


def default_table_path() -> Path:
    """The table shipped with dnah: seed 004's routes and prices plus the native API."""
    return Path(__file__).with_name("default.toml")


def load_table(path: Path) -> PriceTable:
    """Read and parse a table file.

    Raises:
        PricingError: the file cannot be read, is not UTF-8, or is not a valid table.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise PricingError(f"cannot read the file: {exc.strerror or exc}", source=str(path)) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise PricingError("the file is not UTF-8", line=line, source=str(path)) from None
    return parse_table(text, source=str(path))


def parse_table(text: str, *, source: str = "<string>") -> PriceTable:
    """Parse a price table from TOML text (see docs/pricing.md for the format).

    Raises:
        PricingError: with ``.line`` set to the offending line of ``text``.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = _TOML_POSITION.search(message)
        line = len(text.splitlines()) or 1
        if match is not None:
            message = message[: match.start()]
            line = int(match[1]) if match[1] else line
        raise PricingError(f"invalid TOML: {message}", line=line, source=source) from None
    return _Parser(data, Layout(text), source).table()


class _Parser:
    def __init__(self, data: dict[str, Any], layout: Layout, source: str) -> None:
        self.data = data
        self.layout = layout
        self.source = source

    def fail(self, message: str, line: int | None) -> PricingError:
        return PricingError(message, line=line, source=self.source)

    def table(self) -> PriceTable:
        data, layout = self.data, self.layout
        self.refuse_unknown(data, TOP_KEYS, "at the top level", layout.top)
        version = data.get("version", VERSION)
        if type(version) is not int or version != VERSION:
            raise self.fail(
                f"unsupported version {version!r}: this dnah reads version {VERSION}", layout.top("version")
            )
        default = self.default()
        routes = data.get("route", [])
        if not isinstance(routes, list) or not all(isinstance(r, dict) for r in routes):
            line = layout.top("route")
            raise self.fail(
                "'route' must be an array of tables: write each route under a [[route]] header", line
            )
        rules = [self.route(i, route) for i, route in enumerate(routes)]
        return PriceTable(rules, default=default, source=self.source)

    def default(self) -> RouteRule:
        data, top = self.data, self.layout.top
        payable = self.boolean(data.get("default_payable", True), "default_payable", top("default_payable"))
        description = data.get("default_description", DEFAULT_RULE.description)
        self.description(description, "default_description", top("default_description"))
        if not payable:
            if "default" in data:
                raise self.fail(
                    "'default' is a price, but default_payable = false makes unmatched routes "
                    "bearer-only: remove one of them",
                    top("default"),
                )
            amount = 0
        else:
            amount = self.price(data.get("default", DEFAULT_RULE.price), "default", top("default"))
        return _rule((ANY_METHOD,), DEFAULT_PATTERN, amount, payable, description, top("default") or 0)

    def route(self, index: int, route: dict[str, Any]) -> RouteRule:
        layout = self.layout

        def at(key: str) -> int | None:
            return layout.route_key(index, key)

        header = layout.route(index)
        self.refuse_unknown(route, ROUTE_KEYS, "in [[route]]", at)
        if "path" not in route:
            raise self.fail("the route has no 'path'", header)
        path = route["path"]
        if not isinstance(path, str):
            raise self.fail(f"'path' must be a string, not {_toml_type(path)}", at("path"))
        try:
            Pattern(path)
        except PricingError as exc:
            raise self.fail(exc.message, at("path")) from None
        methods = self.methods(route, at, header)
        payable = self.boolean(route.get("payable", True), "payable", at("payable"))
        if not payable:
            if "price" in route:
                raise self.fail(
                    "a bearer-only route (payable = false) has no price: remove 'price'", at("price")
                )
            amount = 0
        elif "price" not in route:
            raise self.fail("the route has no 'price' (write price = \"free\" for a free route)", header)
        else:
            amount = self.price(route["price"], "price", at("price"))
        if "description" not in route:
            raise self.fail("the route has no 'description' (it is shown in 402 challenges)", header)
        self.description(route["description"], "description", at("description"))
        return _rule(methods, path, amount, payable, route["description"], header or 0)

    def methods(self, route: dict[str, Any], at: _At, header: int | None) -> tuple[str, ...]:
        if "method" in route and "methods" in route:
            raise self.fail("give either 'method' or 'methods', not both", at("methods"))
        if "method" in route:
            value, key = [route["method"]], "method"
            if not isinstance(route["method"], str):
                raise self.fail(f"'method' must be a string, not {_toml_type(route['method'])}", at(key))
        elif "methods" in route:
            value, key = route["methods"], "methods"
            if not isinstance(value, list) or not value or not all(isinstance(m, str) for m in value):
                raise self.fail("'methods' must be a non-empty array of strings", at(key))
        else:
            raise self.fail("the route has no 'method' (or 'methods'; \"*\" means any)", header)
        for method in value:
            if method != ANY_METHOD and method not in METHODS:
                hint = f" (methods are upper case: {method.upper()})" if method.upper() in METHODS else ""
                raise self.fail(f"unknown method {method!r}{hint}", at(key))
        if len(set(value)) != len(value):
            raise self.fail(f"'{key}' lists a method twice", at(key))
        if ANY_METHOD in value and len(value) > 1:
            raise self.fail('"*" already means every method: list it alone', at(key))
        return tuple(value)

    def price(self, value: object, key: str, line: int | None) -> int:
        if isinstance(value, float | int) and not isinstance(value, bool):
            raise self.fail(
                f"'{key}' must be a quoted string like \"0.0001\", not {_toml_type(value)} "
                f"({value!r}): TOML numbers can be inexact, so quote the price",
                line,
            )
        if not isinstance(value, str):
            raise self.fail(
                f'\'{key}\' must be a string like "0.0001" or "free", not {_toml_type(value)}', line
            )
        if value == FREE:
            return 0
        try:
            return to_base_units(value)
        except PricingError as exc:
            raise self.fail(f"'{key}': {exc.message}", line) from None

    def boolean(self, value: object, key: str, line: int | None) -> bool:
        if not isinstance(value, bool):
            raise self.fail(f"'{key}' must be true or false, not {_toml_type(value)}", line)
        return value

    def description(self, value: object, key: str, line: int | None) -> None:
        if not isinstance(value, str):
            raise self.fail(f"'{key}' must be a string, not {_toml_type(value)}", line)
        if not value.strip():
            raise self.fail(f"'{key}' is empty", line)
        if _CONTROL.search(value):
            raise self.fail(f"'{key}' must be one line without control characters", line)

    def refuse_unknown(self, table: dict[str, Any], known: tuple[str, ...], where: str, at: _At) -> None:
        unknown = [key for key in table if key not in known]
        if unknown:
            key = min(unknown, key=lambda k: at(k) or 0)
            raise self.fail(f"unknown key {key!r} {where} (known keys: {', '.join(known)})", at(key))


def _rule(
    methods: tuple[str, ...], pattern: str, amount: int, payable: bool, description: str, line: int
) -> RouteRule:
    parsed = None if pattern == DEFAULT_PATTERN else Pattern(pattern)
    return RouteRule(
        methods=methods,
        pattern=pattern,
        amount=amount,
        price=format_price(amount),
        free=payable and amount == 0,
        payable=payable,
        description=description,
        params=parsed.names if parsed else (),
        wildcard=parsed.wildcard if parsed else False,
        line=line,
    )


def _toml_type(value: object) -> str:
    """``"an integer"``, ``"a float"``…: what TOML calls the type of a parsed value."""
    return _TOML_TYPES.get(type(value), "a date/time")
