"""Text for people: the one "did you mean" and the one aligned text table.

Every layer shows users these (link parameters in `bus/`, sysctl names in
`nodes/`, topology keys and CLI tables in `control/`, benchmark results in
`bench/`), so they live in the bottom layer every other one may import.
"""
from __future__ import annotations

import difflib
from typing import Any, Iterable, Mapping, Sequence

# difflib's ratio above which a word counts as a misspelling of a choice.
SIMILARITY_CUTOFF = 0.6


def closest(word: Any, choices: Iterable[str], hints: Mapping[str, str] | None = None) -> str | None:
    """The choice `word` most likely meant, or None.

    A customary spelling in `hints` (``bw`` for ``rate``) wins if it names a
    choice; otherwise the closest choice by spelling. Case is ignored, so
    ``Delay`` suggests ``delay``.
    """
    choices = list(choices)
    text = str(word).lower()
    hint = (hints or {}).get(text)
    if hint is not None and hint in choices:
        return hint
    close = difflib.get_close_matches(text, choices, n=1, cutoff=SIMILARITY_CUTOFF)
    return close[0] if close else None


def did_you_mean(word: Any, choices: Iterable[str], hints: Mapping[str, str] | None = None) -> str:
    """`` (did you mean 'x'?)`` for a close or customary spelling of one of `choices`, else ``''``."""
    guess = closest(word, choices, hints)
    return f" (did you mean {guess!r}?)" if guess is not None else ""


def table(rows: Iterable[Sequence[str]], headers: Sequence[str], rule: bool = False) -> list[str]:
    """A plain text table: columns left-aligned, two blanks apart, no trailing blanks.

    `rule` draws a line of dashes under the headers (the benchmarks' tables).
    """
    rows = [list(row) for row in rows]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"table row {row!r} has {len(row)} cells for {len(headers)} columns")
    widths = [max([len(header)] + [len(row[index]) for row in rows]) for index, header in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip()

    lines = [line(headers)]
    if rule:
        lines.append(line(["-" * width for width in widths]))
    lines += [line(row) for row in rows]
    return lines
