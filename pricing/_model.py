"""The public value types of a price table: the error, a rule, and a quote."""

from __future__ import annotations

import msgspec

CURRENCY_DECIMALS = 6
"""Prices are USD with six decimals; amounts are integer base units (``$0.0001`` is 100)."""

DEFAULT_PATTERN = "default"
"""The ``pattern`` of the rule that prices every request no other rule matches."""


class PricingError(ValueError):
    """A price table (or a price) that cannot be used, with where it went wrong.

    ``line`` is the 1-based line of the TOML text that holds the problem, or ``None`` when
    the problem has no line (a bare price string, an unreadable file). ``str(err)`` reads
    ``source:line: message``, the way compilers report, so editors can jump to it.
    """

    def __init__(self, message: str, *, line: int | None = None, source: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.source = source

    def __str__(self) -> str:
        where = self.source or ""
        if self.line is not None:
            where = f"{where}:{self.line}" if where else f"line {self.line}"
        return f"{where}: {self.message}" if where else self.message


class RouteRule(msgspec.Struct, frozen=True, kw_only=True):
    """One ``[[route]]`` of a table, as written (for OpenAPI and llms.txt), plus its line.

    ``methods`` is ``("*",)`` for a rule that takes every method. A rule that is not
    ``payable`` is bearer-only: it has ``amount`` 0 and is never settled with a payment.
    """

    methods: tuple[str, ...]
    pattern: str
    amount: int
    price: str
    free: bool
    payable: bool
    description: str
    params: tuple[str, ...] = ()
    """The ``{name}`` parameters of ``pattern``, in order."""
    wildcard: bool = False
    """Whether ``pattern`` ends in ``**``."""
    line: int = 0
    """The line of the rule's ``[[route]]`` header (of the ``default`` key for the default)."""


class Quote(msgspec.Struct, frozen=True, kw_only=True):
    """What one request costs, and which rule said so.

    - ``free``: nothing to pay (``amount`` 0); the request goes through without payment.
    - ``payable`` false: bearer-only; the request needs a bearer key and no payment is
      accepted for it (``free`` is false and ``amount`` 0). Check this before ``free``.
    - otherwise the request costs ``amount`` base units (``price`` is the same in USD).
    """

    method: str
    """Upper-cased."""
    path: str
    """The path as given, without its query string."""
    amount: int
    price: str
    """``amount`` as a decimal USD string: ``"0.0001"``, ``"0.01"``, ``"1"``, ``"0"``."""
    free: bool
    payable: bool
    description: str
    pattern: str
    """The pattern of the rule that matched, or ``"default"``."""
