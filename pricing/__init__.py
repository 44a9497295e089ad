"""Operator price tables: which request costs what, sans-I/O.

A table is a TOML file of ``[[route]]`` rules (method + path pattern → price, description,
whether it can be paid at all) plus a default for everything else; see docs/pricing.md.
The gateway quotes every request with ``PriceTable.quote``; OpenAPI and llms.txt are built
from ``PriceTable.routes()``. Prices are decimal USD strings in the file and integer base
units (six decimals) everywhere else: ``"0.0001"`` is 100.
"""

from pricing._match import PriceTable
from pricing._model import CURRENCY_DECIMALS, PricingError, Quote, RouteRule
from pricing._money import MAX_AMOUNT, format_price, to_base_units
from pricing._parse import default_table_path, load_table, parse_table

__all__ = [
    "CURRENCY_DECIMALS",
    "MAX_AMOUNT",
    "PriceTable",
    "PricingError",
    "Quote",
    "RouteRule",
    "default_table_path",
    "format_price",
    "load_table",
    "parse_table",
    "to_base_units",
]
