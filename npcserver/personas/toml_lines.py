"""The line of each key in a TOML file, which tomllib does not give, so a problem can name its line."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

# Line numbers: tomllib gives none for fields, so a small scanner maps key paths to the line that
# defines them. It understands [tables], [[arrays of tables]], dotted keys, and skips the insides of
# multi-line strings and arrays; for keys inside inline tables it points at the enclosing key's line.


_KEY_PART = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
_KEY_RE = re.compile(rf"^\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*=")
_HEADER_RE = re.compile(rf"^\s*(\[\[?)\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*\]\]?")
_PART_RE = re.compile(r'"((?:[^"\\]|\\.)*)"|\'([^\']*)\'|([A-Za-z0-9_-]+)')


def _split_key(key: str) -> tuple[str, ...]:
    return tuple(next(g for g in m.groups() if g is not None) for m in _PART_RE.finditer(key))


class KeyLines:
    def __init__(self, text: str) -> None:
        self._lines: dict[tuple[Any, ...], int] = {}
        table: tuple[Any, ...] = ()
        array_counts: dict[tuple[Any, ...], int] = {}
        depth = 0
        open_multiline: str | None = None
        for number, line in enumerate(text.splitlines(), start=1):
            if open_multiline is not None:
                end = line.find(open_multiline)
                if end < 0:
                    continue
                line, open_multiline = line[end + 3 :], None
                depth, open_multiline = _scan_value(line, depth)
                continue
            if depth == 0:
                if header := _HEADER_RE.match(line):
                    path = _split_key(header.group(2))
                    if header.group(1) == "[[":
                        index = array_counts[path] = array_counts.get(path, -1) + 1
                        table = (*path, index)
                    else:
                        table = path
                    self._lines.setdefault(table, number)
                    continue
                if key := _KEY_RE.match(line):
                    self._lines.setdefault((*table, *_split_key(key.group(1))), number)
                    line = line[key.end() :]
            depth, open_multiline = _scan_value(line, depth)

    def line_for(self, loc: Sequence[Any]) -> int | None:
        path = tuple(loc)
        for size in range(len(path), 0, -1):
            if path[:size] in self._lines:
                return self._lines[path[:size]]
        return None


def _scan_value(text: str, depth: int) -> tuple[int, str | None]:
    """Bracket depth after `text`, and the multi-line string delimiter left open, if any."""
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "#":
            break
        if text.startswith('"""', i) or text.startswith("'''", i):
            delim = text[i : i + 3]
            end = text.find(delim, i + 3)
            if end < 0:
                return depth, delim
            i = end + 3
            continue
        if ch in "\"'":
            i += 1
            while i < len(text) and text[i] != ch:
                i += 2 if ch == '"' and text[i] == "\\" else 1
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth = max(0, depth - 1)
        i += 1
    return depth, None
