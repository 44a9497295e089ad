"""Sample values for the guest protocol's messages, generated from their msgspec type info.

The wire tests compare both ends of the protocol for every message type, so the samples are
generated, not written out: a field added to ``contracts/guest.py`` gets a value without anyone
touching the tests. Every field is set, and set to something other than its default (an
optional field gets a value, a flag ``True``), so an end that ignores a field cannot pass by
accident. Strings mix awkward characters (non-ASCII, quotes, escapes, control characters,
line separators) that both JSON encoders must write alike. Floats have 3 decimals, what the
agent sends (it rounds durations and loads to match msgspec's digits). Everything is drawn from
a ``random.Random`` seeded by the caller, so a failure names a reproducible sample.
"""

from __future__ import annotations

import random
from typing import Any, TypeVar

import msgspec
import msgspec.inspect as mi

from contracts.fields import NO_NUL

ALPHABET = 'aZ09 _-./é✓😀"\\\n\t\x01\x1f\x7f\u2028'
"""Characters strings are made of: every class that JSON encoders treat differently, no NUL."""

_INT_SPAN = 2**53
"""Integers stay within what every JSON reader holds exactly."""

_S = TypeVar("_S", bound=msgspec.Struct)


def sample(cls: type[_S], rng: random.Random) -> _S:
    """An instance of ``cls`` with every field set to a generated value other than its default,
    validated by msgspec (constraints and ``__post_init__``)."""
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    return msgspec.convert(_struct(info, rng), cls)


def minimal(cls: type[msgspec.Struct], rng: random.Random) -> dict[str, object]:
    """The required fields of ``cls`` only (no ``id``, no tag), as JSON-ready values: what an
    end sees from a peer that leaves every optional field out."""
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    return {
        field.encode_name: _value(field.type, rng)
        for field in info.fields
        if field.required and field.name != "id"
    }


def _struct(info: mi.StructType, rng: random.Random) -> dict[str, object]:
    values: dict[str, object] = {}
    for field in info.fields:
        default = _default(field)
        for _ in range(100):
            value = _value(field.type, rng)
            if value != default:
                break
        else:
            raise AssertionError(f"cannot draw a non-default value for {info.cls.__name__}.{field.name}")
        values[field.encode_name] = value
    return values


def _default(field: mi.Field) -> object:
    if field.default is not mi.NODEFAULT:
        return field.default
    if field.default_factory is not mi.NODEFAULT:
        return field.default_factory()
    return mi.NODEFAULT


def _value(kind: mi.Type, rng: random.Random) -> Any:
    """A JSON-ready value of ``kind`` within its constraints."""
    match kind:
        case mi.StrType():
            return _text(kind, rng)
        case mi.BoolType():
            return rng.random() < 0.5
        case mi.IntType():
            return _int(kind, rng)
        case mi.FloatType():
            return rng.randrange(10**9) / 1000
        case mi.LiteralType():
            return rng.choice(kind.values)
        case mi.UnionType():
            options = [member for member in kind.types if not isinstance(member, mi.NoneType)]
            return _value(rng.choice(options), rng)
        case mi.ListType():
            low, high = _length(kind.min_length, kind.max_length, least=1)
            return [_value(kind.item_type, rng) for _ in range(rng.randint(low, high))]
        case mi.DictType():
            low, high = _length(kind.min_length, kind.max_length, least=1)
            return {
                _value(kind.key_type, rng): _value(kind.value_type, rng)
                for _ in range(rng.randint(low, high))
            }
        case mi.StructType():
            return _struct(kind, rng)
    raise NotImplementedError(f"no sample generator for {kind!r}: teach guest_samples this type")


ACCOUNT_PATTERN = "^[a-z_][a-z0-9_.-]{0,31}$"
"""``contracts.guest.Account``: sampled from names of that shape."""


def _text(kind: mi.StrType, rng: random.Random) -> str:
    if kind.pattern == ACCOUNT_PATTERN:
        head = rng.choice("abcdefghijklmnopqrstuvwxyz_")
        return head + "".join(
            rng.choice("abcdefghijklmnopqrstuvwxyz0123456789_.-") for _ in range(rng.randint(0, 31))
        )
    if kind.pattern not in (None, NO_NUL):
        raise NotImplementedError(f"no sample generator for the pattern {kind.pattern!r}")
    low, high = _length(kind.min_length, kind.max_length, least=1)
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(low, high)))


def _int(kind: mi.IntType, rng: random.Random) -> int:
    if kind.gt is not None or kind.lt is not None or kind.multiple_of is not None:
        raise NotImplementedError(f"no sample generator for {kind!r}")
    low = -_INT_SPAN if kind.ge is None else kind.ge
    high = _INT_SPAN if kind.le is None else kind.le
    return rng.choice([low, high, rng.randint(low, high), rng.randint(low, min(high, low + 100))])


def _length(low: int | None, high: int | None, *, least: int) -> tuple[int, int]:
    """A short length range within the type's own (at least ``least`` when it allows)."""
    start = max(low or 0, least if high is None or high >= least else 0)
    return start, min(high if high is not None else start + 4, start + 4)
