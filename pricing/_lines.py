"""Line numbers for a TOML text that ``tomllib`` has already accepted.

``tomllib`` returns plain dicts with no positions, so this walks the text once, skipping
strings (multi-line ones too), comments and bracketed values, and notes the line of every
table header and of every key that starts a line. It can assume the text is valid TOML.
"""

from __future__ import annotations

import re

_KEY = re.compile(r"\"((?:[^\"\\]|\\.)*)\"|'([^']*)'|([A-Za-z0-9_-]+)")


class Layout:
    """Where the top-level keys, the tables and the ``[[route]]`` entries are."""

    def __init__(self, text: str) -> None:
        self.top_keys: dict[str, int] = {}
        self.tables: dict[str, int] = {}
        """Line of the first header of each top-level name, ``[[route]]`` aside."""
        self.route_headers: list[int] = []
        self.route_keys: list[dict[str, int]] = []
        _Scanner(self).run(text)

    def top(self, key: str) -> int | None:
        """The line of a top-level key, or of the first table header under that name."""
        return self.top_keys.get(key, self.tables.get(key))

    def route(self, index: int) -> int | None:
        """The line of the ``index``-th ``[[route]]`` header.

        ``None`` when the routes were not written as ``[[route]]`` headers (an inline
        ``route = [...]`` array): then the line of the ``route`` key is the best there is.
        """
        if len(self.route_headers) > index:
            return self.route_headers[index]
        return self.top("route")

    def route_key(self, index: int, key: str) -> int | None:
        """The line of ``key`` inside the ``index``-th route, else the route's own line."""
        if len(self.route_keys) > index and key in self.route_keys[index]:
            return self.route_keys[index][key]
        return self.route(index)


class _Scanner:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.keys: dict[str, int] | None = layout.top_keys
        """Where keys found at the start of a line go; ``None`` inside other tables."""

    def run(self, text: str) -> None:
        i, n, line, depth, line_start = 0, len(text), 1, 0, True
        while i < n:
            c = text[i]
            if c == "\n":
                line, line_start = line + 1, True
                i += 1
                continue
            if c in " \t\r":
                i += 1
                continue
            if c == "#":
                i = _eol(text, i)
                continue
            if line_start and depth == 0:
                line_start = False
                if c == "[":
                    self.header(text[i : _eol(text, i)], line)
                    i = _eol(text, i)
                    continue
                key = _KEY.match(text, i)
                assert key is not None, "valid TOML starts a line with a header, a key or a comment"
                if self.keys is not None:
                    self.keys.setdefault(next(g for g in key.groups() if g is not None), line)
                i = key.end()
                continue
            line_start = False
            if text.startswith('"""', i) or text.startswith("'''", i):
                end = _close_multiline(text, i)
                line += text.count("\n", i, end)
                i = end
            elif c in "\"'":
                i = _close_string(text, i)
            else:
                depth += (c in "[{") - (c in "]}")
                i += 1

    def header(self, text: str, line: int) -> None:
        array = text.startswith("[[")
        inner = text[2 if array else 1 :].lstrip()
        key = _KEY.match(inner)
        assert key is not None, "valid TOML names every table"
        first = next(g for g in key.groups() if g is not None)
        if array and first == "route" and inner[key.end() :].lstrip().startswith("]"):
            self.keys = {}
            self.layout.route_headers.append(line)
            self.layout.route_keys.append(self.keys)
        else:
            self.keys = None
            self.layout.tables.setdefault(first, line)


def _eol(text: str, i: int) -> int:
    end = text.find("\n", i)
    return len(text) if end < 0 else end


def _close_string(text: str, i: int) -> int:
    """Past the closing quote of the one-line string opening at ``i``."""
    quote, j = text[i], i + 1
    while text[j] != quote:
        j += 2 if quote == '"' and text[j] == "\\" else 1
    return j + 1


def _close_multiline(text: str, i: int) -> int:
    """Past the closing delimiter of the multi-line string opening at ``i``.

    The closing ``\"\"\"`` may be followed by up to two more quotes that belong to the
    content; in basic strings a backslash escapes the next character.
    """
    quote, j = text[i], i + 3
    while not text.startswith(quote * 3, j):
        j += 2 if quote == '"' and text[j] == "\\" else 1
    j += 3
    for _ in range(2):
        if text.startswith(quote, j):
            j += 1
    return j
