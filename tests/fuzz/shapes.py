"""Hypothesis strategies for JSON values shaped like a wire type, with hostile contents.

``values(T)`` reads a ``msgspec`` type (a ``contracts`` struct, a union of them, a list…)
through ``msgspec.inspect`` and draws JSON-ready Python values of that shape, where any node
may instead be hostile: a value of the wrong type, a huge string or number, NUL, a lone
surrogate, deep-but-bounded nesting; structs may lose required fields or gain unknown ones.
``valid=True`` draws only values the type accepts (within its constraints), which is what a
legitimate peer would send.

Values are plain ``dict``/``list``/``str``/``int``/``float``/``bool``/``None``; ``to_json``
writes them the way a hostile client could (lone surrogates as ``\\ud800`` escapes).
"""

from __future__ import annotations

import json
from typing import Any

import msgspec.inspect as mi
from hypothesis import strategies as st

HUGE_INT = 2**80
NASTY_STRINGS = [
    "",
    "\x00",
    "a\x00b",
    "\ud800",
    "x\udfffy",
    "..",
    "../../../../etc/passwd",
    "/",
    "/proc/self/root/etc",
    " ",
    "\n",
    "é" * 3,
    "\u202e",
    "%00",
    "{}",
    "null",
    "-1",
    "1e309",
]

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-HUGE_INT, HUGE_INT),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(NASTY_STRINGS),
    st.text(max_size=20),
)
hostile_leaf = st.one_of(
    json_scalars,
    st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**30, -1, 0, 1.5, 1e300, -0.0]),
    st.text(min_size=1000, max_size=5000).map(lambda s: s * 4),
    st.integers(1, 40).map(lambda depth: _nested(depth)),
    st.lists(json_scalars, max_size=4),
    st.dictionaries(st.text(max_size=6), json_scalars, max_size=3),
)
"""What a hostile client puts where a value belongs."""


def _nested(depth: int) -> object:
    value: object = "deep"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def to_json(value: Any) -> bytes:
    """``value`` as JSON bytes; a lone surrogate is written as its ``\\u`` escape."""
    return json.dumps(value, ensure_ascii=True, allow_nan=False).encode()


def values(kind: Any, *, valid: bool = False) -> st.SearchStrategy[Any]:
    """Values shaped like the msgspec type ``kind`` (see the module docstring)."""
    return _strategy(mi.type_info(kind), valid, depth=0)


def _strategy(info: mi.Type, valid: bool, depth: int) -> st.SearchStrategy[Any]:
    good = _valid(info, valid, depth)
    if valid:
        return good
    # Mostly the right shape, so the parser gets past its first checks; sometimes anything.
    return st.one_of(good, good, good, hostile_leaf)


def _valid(info: mi.Type, valid: bool, depth: int) -> st.SearchStrategy[Any]:
    if isinstance(info, mi.StructType | mi.DataclassType | mi.TypedDictType):
        return _struct(info, valid, depth)
    if isinstance(info, mi.UnionType):
        return st.one_of([_strategy(t, valid, depth) for t in info.types])
    if isinstance(info, mi.NoneType):
        return st.none()
    if isinstance(info, mi.BoolType):
        return st.booleans()
    if isinstance(info, mi.IntType):
        low = info.ge if info.ge is not None else (info.gt + 1 if info.gt is not None else None)
        high = info.le if info.le is not None else (info.lt - 1 if info.lt is not None else None)
        low = -(2**63) if low is None else low
        high = 2**63 - 1 if high is None else high
        edges = [v for v in (low, high, 0, 1, -1) if low <= v <= high]
        return st.one_of(st.integers(low, high), st.sampled_from(edges))
    if isinstance(info, mi.FloatType):
        return st.floats(
            min_value=info.ge if info.ge is not None else info.gt,
            max_value=info.le if info.le is not None else info.lt,
            exclude_min=info.gt is not None,
            exclude_max=info.lt is not None,
            allow_nan=False,
            allow_infinity=False,
        )
    if isinstance(info, mi.StrType):
        if info.pattern is not None:
            return st.from_regex(info.pattern)
        text = (
            st.text(min_size=info.min_length or 0, max_size=min(info.max_length or 40, 40))
            if valid
            else st.one_of(
                st.text(min_size=info.min_length or 0, max_size=min(info.max_length or 40, 40)),
                st.sampled_from(NASTY_STRINGS),
            )
        )
        if info.max_length is not None or info.min_length is not None:
            lo, hi = info.min_length or 0, info.max_length or 10**9
            text = text.filter(lambda s: lo <= len(s) <= hi)
        return text
    if isinstance(info, mi.LiteralType):
        return st.sampled_from(list(info.values))
    if isinstance(info, mi.EnumType):
        return st.sampled_from([member.value for member in info.cls])
    if isinstance(info, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
        lo = info.min_length or 0
        hi = min(info.max_length if info.max_length is not None else 4, lo + 4)
        return st.lists(_strategy(info.item_type, valid, depth + 1), min_size=lo, max_size=hi)
    if isinstance(info, mi.TupleType):
        return st.tuples(*[_strategy(t, valid, depth + 1) for t in info.item_types]).map(list)
    if isinstance(info, mi.DictType):
        keys = _valid(info.key_type, True, depth + 1)
        return st.dictionaries(keys, _strategy(info.value_type, valid, depth + 1), max_size=4)
    if isinstance(info, mi.DateTimeType):
        return st.datetimes().map(lambda d: d.isoformat() + "Z")
    if isinstance(info, mi.UUIDType):
        return st.uuids().map(str)
    if isinstance(info, mi.BytesType | mi.ByteArrayType):
        return st.binary(max_size=20).map(lambda b: __import__("base64").b64encode(b).decode())
    return json_scalars  # Any, Raw and kinds the contracts do not use


def _struct(info: Any, valid: bool, depth: int) -> st.SearchStrategy[dict[str, Any]]:
    fields = info.fields
    tag = getattr(info, "tag", None)
    tag_field = getattr(info, "tag_field", None)

    @st.composite
    def draw_struct(draw: st.DrawFn) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if tag_field is not None:
            out[tag_field] = tag
        for field in fields:
            present = field.required or draw(st.booleans())
            if not valid and field.required and draw(st.integers(0, 15)) == 0:
                present = False  # a required field missing
            if present and depth < 6:
                out[field.encode_name] = draw(_strategy(field.type, valid, depth + 1))
            elif present:
                out[field.encode_name] = draw(_valid(field.type, True, depth + 1))
        if not valid and draw(st.integers(0, 7)) == 0:
            out[draw(st.text(min_size=1, max_size=10))] = draw(hostile_leaf)  # an unknown field
        return out

    return draw_struct()
