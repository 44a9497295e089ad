"""Path patterns (``/sandbox/{id}/toolbox/**``) and request paths, as segments.

A pattern is ``/`` followed by segments: a literal, ``{name}`` (exactly one non-empty
segment) or, as the last segment only, ``**`` (one or more remaining segments). A request
path is split on ``/`` *before* percent-decoding, so ``%2F`` stays inside its segment;
empty segments are dropped (``/sandbox/`` and ``//sandbox`` are ``/sandbox``) and ``.`` and
``..`` are resolved, so a request is priced as the path a normalising server would serve.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from operator import itemgetter
from urllib.parse import unquote

from pricing._model import PricingError

EXACT, PARAM, WILDCARD = 2, 1, 0
"""Pattern classes, in order of precedence: all literal > has ``{name}`` > ends in ``**``."""

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_BAD_LITERAL = re.compile(r"[{}*?#%\s\x00-\x1f\x7f]")
_DOTS = frozenset({".", ".."})


class Pattern:
    """A parsed pattern: what it matches and how it ranks against other patterns."""

    __slots__ = ("literals", "names", "prefix", "rank", "segments", "text", "wildcard")

    def __init__(self, text: str) -> None:
        self.text = text
        self.segments = parse_segments(text)
        self.wildcard = bool(self.segments) and self.segments[-1] == "**"
        self.prefix = len(self.segments) - self.wildcard
        """How many segments precede ``**`` (all of them without one)."""
        self.literals = tuple(
            (i, seg) for i, seg in enumerate(self.segments[: self.prefix]) if not seg.startswith("{")
        )
        """``(position, text)`` of every literal segment: the only checks a match needs."""
        self.names = tuple(seg[1:-1] for seg in self.segments[: self.prefix] if seg.startswith("{"))
        kind = WILDCARD if self.wildcard else PARAM if self.names else EXACT
        self.rank = (kind, len(self.literals), len(self.segments))
        """Higher wins: class, then more literal segments, then more segments."""

    @property
    def first(self) -> str | None:
        """The first segment if it is literal (for indexing), else ``None``."""
        if self.literals and self.literals[0][0] == 0:
            return self.literals[0][1]
        return None

    def fits(self, count: int) -> bool:
        """Whether a path of ``count`` segments has the length this pattern needs."""
        return count > self.prefix if self.wildcard else count == self.prefix

    def literals_match(self) -> Callable[[tuple[str, ...]], bool]:
        """A fast check of the literal segments of a path whose length ``fits``."""
        if not self.literals:
            return _always
        positions = [i for i, _ in self.literals]
        texts = tuple(text for _, text in self.literals)
        get = itemgetter(*positions)
        expected: object = texts if len(texts) > 1 else texts[0]
        return lambda segments: get(segments) == expected


def _always(_: tuple[str, ...]) -> bool:
    return True


def parse_segments(text: str) -> tuple[str, ...]:
    """The segments of a pattern, validated.

    Raises:
        PricingError: without a line; the caller knows which line the pattern is on.
    """
    if not text.startswith("/"):
        raise PricingError(f"path {text!r} must start with '/'")
    if text == "/":
        return ()
    if text.endswith("/"):
        raise PricingError(f"path {text!r} ends with '/': write it without (trailing slashes are ignored)")
    segments = tuple(text[1:].split("/"))
    names: set[str] = set()
    for i, seg in enumerate(segments):
        if seg == "":
            raise PricingError(f"path {text!r} has an empty segment ('//')")
        if seg == "**":
            if i != len(segments) - 1:
                raise PricingError(f"path {text!r}: '**' may only be the last segment")
        elif seg.startswith("{") and seg.endswith("}"):
            name = seg[1:-1]
            if not _NAME.fullmatch(name):
                raise PricingError(f"path {text!r}: {seg!r} is not a parameter like {{id}}")
            if name in names:
                raise PricingError(f"path {text!r} uses the parameter {{{name}}} twice")
            names.add(name)
        elif seg in _DOTS:
            raise PricingError(f"path {text!r} has a {seg!r} segment")
        elif _BAD_LITERAL.search(seg):
            raise PricingError(
                f"path {text!r}: segment {seg!r} may not contain '{{', '}}', '*', '?', '#', '%', "
                "spaces or control characters (write segments decoded; '{name}' and '**' "
                "are whole segments)"
            )
    return segments


def split_path(path: str) -> tuple[str, ...]:
    """A request path (no query string) as decoded, normalised segments.

    ``/sandbox/a%2Fb/`` → ``("sandbox", "a/b")``; ``/sandbox/x/../paginated`` →
    ``("sandbox", "paginated")``.
    """
    parts = path.split("/")
    if "%" in path:
        segments = [unquote(part, errors="replace") for part in parts if part]
    else:
        segments = [part for part in parts if part]
    if "." in segments or ".." in segments:
        resolved: list[str] = []
        for seg in segments:
            if seg == "..":
                if resolved:
                    resolved.pop()
            elif seg != ".":
                resolved.append(seg)
        segments = resolved
    return tuple(segments)


def common_path(a: Pattern, b: Pattern) -> str | None:
    """A request path that two patterns of the same rank both match, or ``None``.

    Same rank means the same class and number of segments, so ``**`` (if any) sits at the
    same place in both and the patterns overlap unless two literals differ somewhere.
    """
    witness: list[str] = []
    for x, y in zip(a.segments, b.segments, strict=True):
        x_literal = not x.startswith("{") and x != "**"
        y_literal = not y.startswith("{") and y != "**"
        if x_literal and y_literal and x != y:
            return None
        witness.append(x if x_literal else y if y_literal else "x")
    return "/" + "/".join(witness)
