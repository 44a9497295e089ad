"""The TOML format: what it accepts, and every refusal with the line it names.

In the refusal cases, ``# <-`` marks the line the error must name.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from pricing import PricingError, RouteRule, load_table, parse_table

ROUTE = '[[route]]\nmethod = "GET"\npath = "/x"\nprice = "0.0001"\ndescription = "d"\n'


def marked_line(text: str) -> int:
    lines = [n for n, line in enumerate(text.splitlines(), 1) if line.rstrip().endswith("# <-")]
    assert len(lines) == 1, "mark exactly one line"
    return lines[0]


REFUSED = {
    # --- TOML itself ---
    "syntax": ('default = "0.0001"\nroute = 0.0.1  # <-\n', r"invalid TOML: Expected newline"),
    "duplicate key": (
        '[[route]]\npath = "/a"\npath = "/b"  # <-\n',
        "invalid TOML: Cannot overwrite a value",
    ),
    "unterminated at the end": ('default = "0.0001"\nx = [  # <-\n', r"invalid TOML: Invalid value$"),
    # --- top level ---
    "unknown top-level key": (
        'default = "0.0001"\ndefualt_description = "x"  # <-\n',
        "unknown key 'defualt_description' at the top level",
    ),
    "unknown table": (ROUTE + "[[routes]]  # <-\npath = '/y'\n", "unknown key 'routes' at the top level"),
    "unknown quoted table": (ROUTE + '[ "extra" . sub ]  # <-\na = 1\n', "unknown key 'extra'"),
    "version 2": ("version = 2  # <-\n", "unsupported version 2: this dnah reads version 1"),
    "version string": ('version = "1"  # <-\n', "unsupported version '1'"),
    "version bool": ("version = true  # <-\n", "unsupported version True"),
    "default float": (
        "default = 0.0001  # <-\n",
        r"'default' must be a quoted string like \"0.0001\", not a float \(0.0001\)",
    ),
    "default int": ("default = 1  # <-\n", r"not an integer \(1\)"),
    "default bad": (
        'default = "0.0000001"  # <-\n',
        "'default': '0.0000001' has 7 decimal places; at most 6",
    ),
    "default negative": ('default = "-1"  # <-\n', "'default': '-1' is not a price"),
    "default table": ("[default]  # <-\nprice = '1'\n", "'default' must be a string like .* not a table"),
    "default_payable string": (
        'default_payable = "no"  # <-\n',
        "'default_payable' must be true or false, not a string",
    ),
    "default and bearer": (
        'default_payable = false\ndefault = "0.1"  # <-\n',
        "default_payable = false makes unmatched",
    ),
    "default_description empty": ('default_description = "  "  # <-\n', "'default_description' is empty"),
    "default_description array": ("default_description = []  # <-\n", "not an array"),
    "default_description newline": ('default_description = "a\\nb"  # <-\n', "must be one line"),
    # --- the route array ---
    "route string": (
        'route = "x"  # <-\n',
        r"'route' must be an array of tables: write each route under a \[\[route\]\]",
    ),
    "route single table": ("[route]  # <-\npath = '/x'\n", "must be an array of tables"),
    "route of numbers": ("route = [1, 2]  # <-\n", "must be an array of tables"),
    # --- one route ---
    "unknown route key": (
        ROUTE.replace('price = "0.0001"', 'prize = "0.0001"  # <-'),
        "unknown key 'prize' in \\[\\[route\\]\\]",
    ),
    "first unknown key by line": ("[[route]]\naa = 2  # <-\nzz = 1\n", "unknown key 'aa'"),
    "no path": (
        '[[route]]  # <-\nmethod = "GET"\nprice = "1"\ndescription = "d"\n',
        "the route has no 'path'",
    ),
    "path number": (
        ROUTE.replace('path = "/x"', "path = 7  # <-"),
        "'path' must be a string, not an integer",
    ),
    "path trailing slash": (ROUTE.replace('path = "/x"', 'path = "/x/"  # <-'), "ends with '/'"),
    "path relative": (ROUTE.replace('path = "/x"', 'path = "x"  # <-'), "must start with '/'"),
    "path wildcard inside": (
        ROUTE.replace('path = "/x"', 'path = "/**/x"  # <-'),
        "may only be the last segment",
    ),
    "method and methods": (
        ROUTE.replace('method = "GET"', 'method = "GET"\nmethods = ["POST"]  # <-'),
        "either 'method' or 'methods', not both",
    ),
    "no method": (
        '[[route]]  # <-\npath = "/x"\nprice = "1"\ndescription = "d"\n',
        "the route has no 'method'",
    ),
    "method array": (
        ROUTE.replace('method = "GET"', 'method = ["GET"]  # <-'),
        "'method' must be a string, not an array",
    ),
    "methods string": (
        ROUTE.replace('method = "GET"', 'methods = "GET"  # <-'),
        "'methods' must be a non-empty array of strings",
    ),
    "methods empty": (ROUTE.replace('method = "GET"', "methods = []  # <-"), "non-empty array"),
    "methods mixed": (ROUTE.replace('method = "GET"', 'methods = ["GET", 1]  # <-'), "array of strings"),
    "method unknown": (ROUTE.replace('method = "GET"', 'method = "FETCH"  # <-'), "unknown method 'FETCH'$"),
    "method lower case": (
        ROUTE.replace('method = "GET"', 'method = "get"  # <-'),
        r"unknown method 'get' \(methods are upper case: GET\)",
    ),
    "methods twice": (
        ROUTE.replace('method = "GET"', 'methods = ["GET", "POST", "GET"]  # <-'),
        "'methods' lists a method twice",
    ),
    "star and more": (
        ROUTE.replace('method = "GET"', 'methods = ["*", "GET"]  # <-'),
        "already means every method",
    ),
    "payable string": (
        ROUTE.replace('price = "0.0001"', 'payable = "no"  # <-'),
        "'payable' must be true or false, not a string",
    ),
    "bearer with a price": (
        ROUTE.replace('price = "0.0001"', 'payable = false\nprice = "0.0001"  # <-'),
        "bearer-only route .* has no price",
    ),
    "no price": (
        '[[route]]  # <-\nmethod = "GET"\npath = "/x"\ndescription = "d"\n',
        "the route has no 'price' \\(write price = \"free\"",
    ),
    "price float": (
        ROUTE.replace('price = "0.0001"', "price = 0.0001  # <-"),
        r"'price' must be a quoted string like \"0.0001\", not a float \(0.0001\)",
    ),
    "price int": (ROUTE.replace('price = "0.0001"', "price = 0  # <-"), "not an integer"),
    "price bool": (
        ROUTE.replace('price = "0.0001"', "price = false  # <-"),
        '\'price\' must be a string like "0.0001" or "free", not a boolean',
    ),
    "price date": (ROUTE.replace('price = "0.0001"', "price = 2024-01-01  # <-"), "not a date/time"),
    "price inline table": (ROUTE.replace('price = "0.0001"', 'price = { usd = "1" }  # <-'), "not a table"),
    "price dotted key": (ROUTE.replace('price = "0.0001"', 'price.usd = "1"  # <-'), "not a table"),
    "price quoted key": (ROUTE.replace('price = "0.0001"', '"price" = 1.5  # <-'), "not a float"),
    "price too precise": (
        ROUTE.replace('price = "0.0001"', 'price = "0.00000001"  # <-'),
        "'price': '0.00000001' has 8 decimal places",
    ),
    "price exponent": (
        ROUTE.replace('price = "0.0001"', 'price = "1e-4"  # <-'),
        "'price': '1e-4' is not a price",
    ),
    "price NaN": (ROUTE.replace('price = "0.0001"', 'price = "NaN"  # <-'), "is not a price"),
    "price absurd": (
        ROUTE.replace('price = "0.0001"', 'price = "2000000"  # <-'),
        "maximum price of 1000000 USD",
    ),
    "price Free": (ROUTE.replace('price = "0.0001"', 'price = "Free"  # <-'), "'Free' is not a price"),
    "no description": (
        '[[route]]  # <-\nmethod = "GET"\npath = "/x"\nprice = "1"\n',
        "the route has no 'description'",
    ),
    "description empty": (
        ROUTE.replace('description = "d"', 'description = ""  # <-'),
        "'description' is empty",
    ),
    "description number": (
        ROUTE.replace('description = "d"', "description = 1  # <-"),
        "'description' must be a string",
    ),
    "description tab": (ROUTE.replace('description = "d"', 'description = "a\\tb"  # <-'), "one line"),
    # --- where the error is in the file ---
    "third route": (
        ROUTE
        + "\n"
        + ROUTE.replace('"/x"', '"/y"')
        + "\n"
        + ROUTE.replace('"/x"', '"/z"').replace('"GET"', '"GOT"  # <-'),
        "unknown method 'GOT'",
    ),
    "header after a tricky string": (
        'default_description = """\\\n  [[route]]\\\n  price = 1 """\n'
        + ROUTE
        + "\n"
        + ROUTE.replace('"0.0001"', "1  # <-"),
        "not an integer",
    ),
    "ambiguous": (
        ROUTE + "\n" + ROUTE.replace("[[route]]", "[[route]]  # <-").replace('"/x"', '"/x"'),
        "is ambiguous with GET /x \\(line 1\\)",
    ),
    "inline routes": (
        'route = [  # <-\n  { method = "GET", path = "/x", price = 1, description = "d" },\n]\n',
        "'price' must be a quoted string",
    ),
    "indented and spaced header": ("  [[ route ]]  # <-\n  method = 'GET'\n", "has no 'path'"),
    "quoted header": ("[[\"route\"]]  # <-\nmethod = 'GET'\n", "has no 'path'"),
}


@pytest.mark.parametrize(("text", "says"), REFUSED.values(), ids=REFUSED.keys())
def test_refused_with_its_line(text: str, says: str) -> None:
    with pytest.raises(PricingError, match=says) as info:
        parse_table(text, source="prices.toml")
    line = marked_line(text)
    assert info.value.line == line, info.value
    assert info.value.source == "prices.toml"
    assert str(info.value) == f"prices.toml:{line}: {info.value.message}"


def test_a_sub_table_in_a_route_is_unknown_at_the_route_header() -> None:
    text = ROUTE + "[route.extra]\nx = 1\n"
    with pytest.raises(PricingError, match="unknown key 'extra' in") as info:
        parse_table(text)
    assert info.value.line == 1


def test_a_whole_table() -> None:
    table = parse_table(
        """
        version = 1
        default = "free"
        default_description = "Anything else"

        [[route]]
        methods = ["GET", "POST"]
        path = "/a/{id}"
        price = "0.25"
        description = "A thing"

        [[route]]  # bearer-only
        method = "DELETE"
        path = "/keys/{key}"
        payable = false
        description = "Revoke a key"

        [[route]]
        methods = ["*"]
        path = "/files/**"
        price = "0"
        payable = true
        description = "Files"
        """.replace("\n        ", "\n"),
        source="mine.toml",
    )
    assert table.source == "mine.toml"
    assert table.default == RouteRule(
        methods=("*",),
        pattern="default",
        amount=0,
        price="0",
        free=True,
        payable=True,
        description="Anything else",
        line=3,
    )
    assert table.routes() == [
        RouteRule(
            methods=("GET", "POST"),
            pattern="/a/{id}",
            amount=250_000,
            price="0.25",
            free=False,
            payable=True,
            description="A thing",
            params=("id",),
            line=6,
        ),
        RouteRule(
            methods=("DELETE",),
            pattern="/keys/{key}",
            amount=0,
            price="0",
            free=False,
            payable=False,
            description="Revoke a key",
            params=("key",),
            line=12,
        ),
        RouteRule(
            methods=("*",),
            pattern="/files/**",
            amount=0,
            price="0",
            free=True,
            payable=True,
            description="Files",
            wildcard=True,
            line=18,
        ),
    ]
    assert table.quote("GET", "/nothing").free
    revoke = table.quote("DELETE", "/keys/k1")
    assert (revoke.payable, revoke.free, revoke.amount) == (False, False, 0)


def test_empty_table_prices_everything_at_the_default() -> None:
    table = parse_table("")
    assert table.routes() == []
    assert table.default.amount == 100
    assert table.default.line == 0
    assert table.quote("POST", "/anything").amount == 100


def test_bearer_only_default() -> None:
    table = parse_table('default_payable = false\ndefault_description = "Needs a key"\n')
    quote = table.quote("GET", "/x")
    assert (quote.payable, quote.free, quote.amount, quote.description) == (False, False, 0, "Needs a key")


def test_inline_routes_are_accepted() -> None:
    table = parse_table('route = [\n  { method = "GET", path = "/x", price = "1", description = "d" },\n]\n')
    assert table.quote("GET", "/x").amount == 1_000_000
    assert table.routes()[0].line == 1


def test_a_multi_line_description_is_refused_at_its_key() -> None:
    text = ROUTE.replace('description = "d"', 'description = """\nline\n"""')
    with pytest.raises(PricingError, match="one line") as info:
        parse_table(text)
    assert info.value.line == 5


def test_other_tables_do_not_take_route_keys() -> None:
    # Keys under [[other]] must not be mistaken for keys of the route before it.
    text = ROUTE.replace('price = "0.0001"\n', "") + "[[other]]\nprice = 1\n"
    with pytest.raises(PricingError, match="unknown key 'other'") as info:
        parse_table(text)
    assert info.value.line == 5


# --- files ---


def test_load_table(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_bytes(b"\xef\xbb\xbf" + ROUTE.encode())  # a BOM is fine
    table = load_table(path)
    assert table.source == str(path)
    assert table.quote("GET", "/x").amount == 100


def test_load_table_refuses(tmp_path: Path) -> None:
    with pytest.raises(PricingError, match="cannot read the file: No such file") as info:
        load_table(tmp_path / "missing.toml")
    assert info.value.line is None
    assert str(info.value) == f"{tmp_path / 'missing.toml'}: {info.value.message}"
    with pytest.raises(PricingError, match="cannot read the file"):
        load_table(tmp_path)  # a directory
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'default = "0.1"\n# caf\xe9\n')
    with pytest.raises(PricingError, match="not UTF-8") as info:
        load_table(bad)
    assert (info.value.line, info.value.source) == (2, str(bad))
    broken = tmp_path / "broken.toml"
    broken.write_text(ROUTE.replace('"0.0001"', "0.0001"))
    with pytest.raises(PricingError) as info:
        load_table(broken)
    assert str(info.value).startswith(f"{broken}:4: 'price' must be a quoted string")


def test_error_without_source_or_line() -> None:
    assert str(PricingError("bad")) == "bad"
    assert str(PricingError("bad", line=3)) == "line 3: bad"
    assert str(PricingError("bad", source="f")) == "f: bad"


def test_a_toml_error_without_a_position(monkeypatch: pytest.MonkeyPatch) -> None:
    def loads(text: str) -> dict[str, object]:
        raise tomllib.TOMLDecodeError("something odd")

    monkeypatch.setattr(tomllib, "loads", loads)
    with pytest.raises(PricingError, match="invalid TOML: something odd") as info:
        parse_table("a = 1\nb = 2\n")
    assert info.value.line == 2  # the last line: the best guess there is
