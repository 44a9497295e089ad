"""Decimal USD strings ↔ integer base units: exact, and strict about what a price is."""

from __future__ import annotations

from decimal import Decimal

import pytest

from pricing import MAX_AMOUNT, PricingError, format_price, to_base_units


@pytest.mark.parametrize(
    ("price", "amount"),
    [
        ("0.0001", 100),
        ("0.001", 1_000),
        ("0.002", 2_000),
        ("0.01", 10_000),
        ("1", 1_000_000),
        ("0", 0),
        ("0.0", 0),
        ("0.000000", 0),
        ("0.000001", 1),
        ("0.100000", 100_000),
        ("12.345678", 12_345_678),
        ("10", 10_000_000),
        ("999999.999999", 999_999_999_999),
        ("1000000", 1_000_000_000_000),
        ("1000000.000000", 1_000_000_000_000),
    ],
)
def test_to_base_units(price: str, amount: int) -> None:
    assert to_base_units(price) == amount
    assert amount == int(Decimal(price) * 10**6)  # the same answer, computed another way


@pytest.mark.parametrize(
    ("price", "says"),
    [
        ("0.0000001", "7 decimal places"),
        ("0.00010000", "8 decimal places"),
        ("-0.0001", "not a price"),
        ("-0", "not a price"),
        ("+1", "not a price"),
        ("1e-4", "not a price"),
        ("1E2", "not a price"),
        ("NaN", "not a price"),
        ("nan", "not a price"),
        ("Infinity", "not a price"),
        ("inf", "not a price"),
        ("", "not a price"),
        (" 1", "not a price"),
        ("1 ", "not a price"),
        ("1\n", "not a price"),
        ("$0.01", "not a price"),
        ("0,01", "not a price"),
        (".5", "not a price"),
        ("5.", "not a price"),
        ("01", "not a price"),
        ("00.1", "not a price"),
        ("1_000", "not a price"),
        ("0x10", "not a price"),
        ("١", "not a price"),  # an Arabic-Indic digit: int() would take it, a price may not
        ("free", "not a price"),  # "free" is the table's word, not a price
        ("1000000.000001", "maximum price of 1000000 USD"),
        ("1000001", "maximum price"),
        ("99999999999999999999", "maximum price"),
    ],
)
def test_to_base_units_refuses(price: str, says: str) -> None:
    with pytest.raises(PricingError, match=says.replace("(", r"\(")) as info:
        to_base_units(price)
    assert info.value.line is None
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("value", [0.0001, 1, Decimal("0.01"), None, b"0.01", True])
def test_to_base_units_takes_only_strings(value: object) -> None:
    with pytest.raises(PricingError, match="must be a string"):
        to_base_units(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("amount", "price"),
    [
        (0, "0"),
        (1, "0.000001"),
        (100, "0.0001"),
        (1_000, "0.001"),
        (2_000, "0.002"),
        (10_000, "0.01"),
        (100_000, "0.1"),
        (1_000_000, "1"),
        (1_500_000, "1.5"),
        (12_345_678, "12.345678"),
        (MAX_AMOUNT, "1000000"),
        (10**20, "100000000000000"),  # formatting has no ceiling; only tables do
    ],
)
def test_format_price(amount: int, price: str) -> None:
    assert format_price(amount) == price


def test_round_trip() -> None:
    for amount in [*range(0, 20_000), *range(999_000, 1_001_000), *range(MAX_AMOUNT - 1000, MAX_AMOUNT + 1)]:
        assert to_base_units(format_price(amount)) == amount


def test_format_price_refuses() -> None:
    with pytest.raises(ValueError, match="negative"):
        format_price(-1)
    with pytest.raises(TypeError, match="not float"):
        format_price(0.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not bool"):
        format_price(True)
