"""Citation precision and recall of one response sentence against gold source sentences, where
a gold fact may be held by several units (the same sentence in two documents)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from attribkit.core.errors import InputError


@dataclass(frozen=True)
class CitationCounts:
    """Counts for one sentence: ``correct`` cited units that hold a gold fact, ``cited`` units
    cited, ``covered`` gold facts cited through at least one of their units, ``facts`` gold
    facts. Add them over sentences for micro-averaged precision and recall."""

    correct: int
    cited: int
    covered: int
    facts: int

    @property
    def precision(self) -> float:
        """correct / cited (0 when nothing was cited)."""
        return self.correct / self.cited if self.cited else 0.0

    @property
    def recall(self) -> float:
        """covered / facts."""
        return self.covered / self.facts if self.facts else 0.0

    @property
    def f1(self) -> float:
        """The harmonic mean of precision and recall (0 when both are 0)."""
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def __add__(self, other: CitationCounts) -> CitationCounts:
        return CitationCounts(
            self.correct + other.correct,
            self.cited + other.cited,
            self.covered + other.covered,
            self.facts + other.facts,
        )


def citation_counts(cited: Sequence[int], gold_facts: Sequence[Sequence[int]]) -> CitationCounts:
    """Compare the cited unit indices of one sentence with its gold facts (each fact: the units
    that hold it). A cited unit is correct when it holds some gold fact; a fact is covered when
    any of its units is cited. No model calls."""
    if not gold_facts or any(not f for f in gold_facts):
        raise InputError("each sentence needs at least one gold fact, each with at least one unit")
    cited_set = {int(u) for u in cited}
    gold_units = {int(u) for f in gold_facts for u in f}
    return CitationCounts(
        correct=len(cited_set & gold_units),
        cited=len(cited_set),
        covered=sum(1 for f in gold_facts if cited_set & {int(u) for u in f}),
        facts=len(gold_facts),
    )
