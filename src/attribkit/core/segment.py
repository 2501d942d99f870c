"""Offline, rule-based sentence segmentation with exact character offsets.

No data download, no model: a regular-expression splitter that knows common abbreviations,
initials, decimal numbers and line breaks. Each sentence is returned as a ``(start, end)`` span
into the original text, stripped of surrounding whitespace, so ``text[start:end]`` is the sentence.
"""

from __future__ import annotations

import re

_ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "mt",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "cf",
        "al",
        "fig",
        "figs",
        "eq",
        "eqs",
        "no",
        "nos",
        "vol",
        "pp",
        "p",
        "ch",
        "sec",
        "approx",
        "dept",
        "est",
        "inc",
        "ltd",
        "co",
        "corp",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
        "mon",
        "tue",
        "wed",
        "thu",
        "fri",
        "sat",
        "sun",
        "u.s",
        "u.k",
        "a.m",
        "p.m",
        "ph.d",
    ]
)
# A candidate boundary: sentence-final punctuation, optional closing quotes/brackets, whitespace.
_BOUNDARY = re.compile(r"""[.!?…]+["'”’)\]]*(?=\s+)""")
_NEXT_STARTS_SENTENCE = re.compile(r"""\s+["'“‘(\[]*[A-Z0-9À-ÖØ-Þ]""")


def _is_abbreviation(text: str, dot_index: int) -> bool:
    """True when the period at ``dot_index`` ends an abbreviation or an initial, not a sentence."""
    if text[dot_index] != ".":
        return False
    m = re.search(r"([A-Za-z.]+)$", text[:dot_index])
    if not m:
        return False
    word = m.group(1).lower().strip(".")
    if word in _ABBREVIATIONS:
        return True
    return len(word) == 1 and m.group(1)[-1].isupper()  # an initial such as "J. Smith"


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Return ``(start, end)`` character spans of the sentences of ``text``, in order.

    Line breaks always end a sentence; ``.``, ``!``, ``?`` end one when followed by whitespace and
    an upper-case letter, a digit or an opening quote, unless the period ends a known abbreviation
    or a single-letter initial. Costs no model calls.
    """
    spans: list[tuple[int, int]] = []
    for line in re.finditer(r"[^\n]+", text):
        start = line.start()
        for m in _BOUNDARY.finditer(text, line.start(), line.end()):
            end = m.end()
            if not _NEXT_STARTS_SENTENCE.match(text, end, line.end()):
                continue
            if _is_abbreviation(text, m.start()) and m.end() - m.start() == 1:
                continue
            spans.append((start, end))
            start = end
        spans.append((start, line.end()))
    out = []
    for s, e in spans:
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s:
            out.append((s, e))
    return out


def paragraph_spans(text: str) -> list[tuple[int, int]]:
    """Return spans of the blank-line-separated paragraphs of ``text`` (whitespace stripped)."""
    out = []
    for m in re.finditer(r"\S(?:.*?\S)?(?=\s*(?:\n\s*\n|\Z))", text, flags=re.DOTALL):
        out.append((m.start(), m.end()))
    return out
