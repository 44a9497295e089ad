"""Decimal USD strings ↔ integer base units, exactly (no floats anywhere)."""

from __future__ import annotations

import re

from pricing._model import CURRENCY_DECIMALS, PricingError

SCALE = 10**CURRENCY_DECIMALS
MAX_AMOUNT = 1_000_000 * SCALE
"""The largest price a table may hold: one million USD. More is a typo, not a price."""

# ASCII digits only, no sign, no exponent, no leading zeros, no bare "." on either side.
_PRICE = re.compile(r"(0|[1-9][0-9]*)(?:\.([0-9]+))?", re.ASCII)


def to_base_units(price: str) -> int:
    """``"0.0001"`` → 100: a decimal USD string as an integer amount of base units.

    Raises:
        PricingError: not a string, not a plain decimal (signs, exponents, ``NaN``, spaces,
            ``$``), more than six decimal places, or more than one million USD.
    """
    if not isinstance(price, str):
        raise PricingError(f'a price must be a string like "0.0001", not {type(price).__name__}')
    match = _PRICE.fullmatch(price)
    if match is None:
        raise PricingError(f'{price!r} is not a price: write a plain decimal USD amount like "0.0001"')
    whole, fraction = match[1], match[2] or ""
    if len(fraction) > CURRENCY_DECIMALS:
        raise PricingError(
            f"{price!r} has {len(fraction)} decimal places; at most {CURRENCY_DECIMALS} "
            f"(the smallest amount is 0.{'0' * (CURRENCY_DECIMALS - 1)}1)"
        )
    amount = int(whole) * SCALE + int(fraction.ljust(CURRENCY_DECIMALS, "0"))
    if amount > MAX_AMOUNT:
        raise PricingError(f"{price!r} is more than the maximum price of 1000000 USD")
    return amount


def format_price(amount: int) -> str:
    """100 → ``"0.0001"``: base units as the shortest exact decimal USD string.

    Raises:
        TypeError: ``amount`` is not an ``int`` (``bool`` included).
        ValueError: ``amount`` is negative.
    """
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise TypeError(f"an amount is an int of base units, not {type(amount).__name__}")
    if amount < 0:
        raise ValueError(f"an amount cannot be negative: {amount}")
    whole, fraction = divmod(amount, SCALE)
    if not fraction:
        return str(whole)
    return f"{whole}.{fraction:0{CURRENCY_DECIMALS}d}".rstrip("0")
