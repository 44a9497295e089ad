"""``dnah pricing check|show|quote``: look at and test a price table without running anything.

``cli/main.py`` registers these with one call, ``pricing_cmd.add_parser(sub)``. The module
also runs alone: ``python -m cli.pricing_cmd check FILE``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import msgspec

from pricing import PriceTable, PricingError, Quote, RouteRule, default_table_path, load_table

ENV_FILE = "DNAH_PRICING_FILE"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``pricing`` and its subcommands on an ``add_subparsers()`` object."""
    pricing = subparsers.add_parser("pricing", help="check, show and try price tables")
    sub = pricing.add_subparsers(dest="pricing_command", required=True)
    check = sub.add_parser("check", help="validate a price table file")
    check.add_argument("file", type=Path)
    check.set_defaults(func=cmd_check)
    show = sub.add_parser("show", help="list a table's routes, prices and descriptions")
    _file_option(show)
    show.set_defaults(func=cmd_show)
    quote = sub.add_parser("quote", help="what one request would cost")
    quote.add_argument("method", help="HTTP method, e.g. POST")
    quote.add_argument("path", help="request path, e.g. /sandbox/abc/stop (a query string is ignored)")
    _file_option(quote)
    quote.add_argument("--json", action="store_true", help="print the quote as JSON")
    quote.set_defaults(func=cmd_quote)
    return pricing


def _file_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--file",
        type=Path,
        default=None,
        help=f"table file (default: ${ENV_FILE}, else the table shipped with dnah)",
    )


def cmd_check(args: argparse.Namespace) -> int:
    """``dnah pricing check FILE``: ``FILE: OK, N rules`` or ``FILE:LINE: message`` (exit 1)."""
    table = _load(args.file)
    if table is None:
        return 1
    rules = len(table.routes())
    print(f"{args.file}: OK, {rules} rule{'s' * (rules != 1)}, default {_price(table.default)}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """``dnah pricing show [--file F]``: one line per rule, then the default."""
    table = _load(_table_file(args))
    if table is None:
        return 1
    rows = [(",".join(r.methods), r.pattern, _price(r), r.description) for r in table.routes()]
    rows.append(("*", "(default)", _price(table.default), table.default.description))
    header = ("METHOD", "PATH", "PRICE", "DESCRIPTION")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
    for row in [header, *rows]:
        print("  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[3]]))
    return 0


def cmd_quote(args: argparse.Namespace) -> int:
    """``dnah pricing quote METHOD PATH [--file F] [--json]``."""
    table = _load(_table_file(args))
    if table is None:
        return 1
    quote = table.quote(args.method, args.path)
    if args.json:
        print(msgspec.json.encode(quote).decode())
    else:
        print(f"{quote.method} {quote.path}: {_quoted(quote)}")
        print(f"  {quote.description}")
        print(f"  rule: {quote.pattern}")
    return 0


def _table_file(args: argparse.Namespace) -> Path:
    if args.file is not None:
        return Path(args.file)
    return Path(os.environ.get(ENV_FILE) or default_table_path())


def _load(path: Path) -> PriceTable | None:
    try:
        return load_table(path)
    except PricingError as exc:
        print(exc, file=sys.stderr)
        return None


def _price(rule: RouteRule) -> str:
    if not rule.payable:
        return "bearer-only"
    return "free" if rule.free else f"${rule.price}"


def _quoted(quote: Quote) -> str:
    if not quote.payable:
        return "bearer-only (never paid; needs a bearer key)"
    if quote.free:
        return "free"
    return f"${quote.price} ({quote.amount} base units)"


def main(argv: list[str] | None = None) -> int:
    """Run the ``pricing`` subcommands on their own (``python -m cli.pricing_cmd ...``)."""
    parser = argparse.ArgumentParser(prog="dnah")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["pricing", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover - run by test_as_a_program in a subprocess
    sys.exit(main())
