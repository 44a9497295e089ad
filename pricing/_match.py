"""``PriceTable``: rules compiled into an index, so that pricing a request is a dict lookup
or a short scan.

Precedence (highest first): the pattern's class (exact > ``{param}`` > ``**``), then more
literal segments, then more segments, then a rule naming the method over a ``"*"`` rule.
Two rules equal on all of that which can match the same request are refused when the
table is built, so the order of rules in the file never decides a price.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from pricing._model import CURRENCY_DECIMALS, DEFAULT_PATTERN, PricingError, Quote, RouteRule
from pricing._pattern import EXACT, Pattern, common_path, split_path

ANY_METHOD = "*"

_Check = Callable[[tuple[str, ...]], bool]

DEFAULT_RULE = RouteRule(
    methods=(ANY_METHOD,),
    pattern=DEFAULT_PATTERN,
    amount=100,
    price="0.0001",
    free=False,
    payable=True,
    description="API request",
)
"""What an unmatched request costs when a table says nothing: $0.0001, so nothing is free
by accident."""


class _Entry:
    __slots__ = ("order", "pattern", "rule", "specific")

    def __init__(self, order: int, rule: RouteRule, pattern: Pattern) -> None:
        self.order = order
        self.rule = rule
        self.pattern = pattern
        self.specific = rule.methods != (ANY_METHOD,)

    def sort_key(self) -> tuple[tuple[int, int, int], bool, int]:
        return self.pattern.rank, self.specific, -self.order


class _MethodIndex:
    """The rules that can price one method: exact paths in a dict; the rest in precedence
    order, pre-filtered into buckets by first segment and by number of segments."""

    __slots__ = ("buckets", "exact", "firsts", "longest")

    def __init__(self, entries: list[_Entry]) -> None:
        # ``entries`` come in precedence order, so the first rule stored for a key wins.
        self.exact: dict[tuple[str, ...], RouteRule] = {}
        patterned: list[_Entry] = []
        for entry in entries:
            if entry.pattern.rank[0] == EXACT:
                self.exact.setdefault(entry.pattern.segments, entry.rule)
            else:
                patterned.append(entry)
        self.firsts = frozenset(e.pattern.first for e in patterned) - {None}
        # From ``longest`` segments on, only wildcards fit, and all of them: one bucket.
        self.longest = max((e.pattern.prefix for e in patterned), default=0) + 1
        self.buckets: dict[tuple[str | None, int], tuple[tuple[_Check, RouteRule], ...]] = {
            (first, count): tuple(
                (e.pattern.literals_match(), e.rule)
                for e in patterned
                if e.pattern.first in (first, None) and e.pattern.fits(count)
            )
            for first in (*self.firsts, None)
            for count in range(1, self.longest + 1)
        }

    def find(self, segments: tuple[str, ...]) -> RouteRule | None:
        rule = self.exact.get(segments)
        if rule is not None or not segments:
            return rule
        first = segments[0]
        key = (first if first in self.firsts else None, min(len(segments), self.longest))
        for check, candidate in self.buckets[key]:
            if check(segments):
                return candidate
        return None


class PriceTable:
    """An operator's price table: route rules plus a default, ready to quote requests.

    Build one with ``parse_table``/``load_table``, or directly from ``RouteRule`` values
    (the constructor checks patterns and refuses ambiguous rules).
    """

    currency_decimals = CURRENCY_DECIMALS

    def __init__(
        self,
        routes: Iterable[RouteRule],
        *,
        default: RouteRule = DEFAULT_RULE,
        source: str = "<string>",
    ) -> None:
        self.default = default
        self.source = source
        self._routes = list(routes)
        entries = []
        for order, rule in enumerate(self._routes):
            try:
                pattern = Pattern(rule.pattern)
            except PricingError as exc:
                raise PricingError(exc.message, line=rule.line, source=source) from None
            entries.append(_Entry(order, rule, pattern))
        _refuse_ambiguity(entries, source)
        entries.sort(key=_Entry.sort_key, reverse=True)
        methods = {m for e in entries for m in e.rule.methods} - {ANY_METHOD}
        self._any = _MethodIndex([e for e in entries if not e.specific])
        self._by_method = {
            method: _MethodIndex([e for e in entries if method in e.rule.methods or not e.specific])
            for method in methods
        }

    def routes(self) -> list[RouteRule]:
        """The rules in table order (for OpenAPI and llms.txt); the default is ``.default``."""
        return list(self._routes)

    def quote(self, method: str, path: str) -> Quote:
        """The price of ``method path``; a query string (and fragment) is ignored.

        Pass the path as received, still percent-encoded (ASGI ``raw_path``), not
        ``scope["path"]``: an encoded ``/`` must not split a segment.
        """
        method = method.upper()
        end = len(path)
        for mark in "?#":
            cut = path.find(mark, 0, end)
            if cut >= 0:
                end = cut
        if end != len(path):
            path = path[:end]
        segments = split_path(path)
        index = self._by_method.get(method, self._any)
        rule = index.find(segments) or self.default
        return Quote(
            method=method,
            path=path,
            amount=rule.amount,
            price=rule.price,
            free=rule.free,
            payable=rule.payable,
            description=rule.description,
            pattern=rule.pattern,
        )


def _refuse_ambiguity(entries: list[_Entry], source: str) -> None:
    """Refuse two rules that rank the same, share a method and match a common path."""
    groups: dict[tuple[tuple[int, int, int], bool], list[_Entry]] = {}
    for entry in entries:
        groups.setdefault((entry.pattern.rank, entry.specific), []).append(entry)
    for group in groups.values():
        for i, later in enumerate(group):
            for earlier in group[:i]:
                shared = set(earlier.rule.methods) & set(later.rule.methods)
                if not shared:
                    continue
                path = common_path(earlier.pattern, later.pattern)
                if path is None:
                    continue
                method = sorted(shared)[0]
                raise PricingError(
                    f"{method} {later.rule.pattern} is ambiguous with {method} "
                    f"{earlier.rule.pattern} (line {earlier.rule.line}): both match "
                    f"{method} {path} with the same precedence",
                    line=later.rule.line,
                    source=source,
                )
