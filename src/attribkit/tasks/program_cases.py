"""Synthetic multi-document QA cases with gold source sentences per answer sentence, for
citation evaluation of programs (GenerationPrograms, Wan et al., COLM 2025) and of context
attribution (no model calls).

Each case has a few people with invented names; each person has four facts of fixed shapes
(birthplace, employer, home town, access code), one sentence each. The response has one or two
answer sentences, each fusing 2–4 facts of one person (``"Bralou was born in Dalewick, works for
Tremon Labs and has the access code 412-K33."``); the other facts of that person and every fact of
the other people are distractors of the same shape. The sentences are shuffled into
``n_documents`` documents; with probability ``duplicate_prob`` one gold sentence also appears in a
second document, so two units hold the same text (both count as that fact's support).

Gold is per answer sentence a list of *facts*, each the list of unit indices that hold it:
``gold[i][j]`` are the units (one, or two for a duplicated sentence) of fact ``j`` of answer
sentence ``i``. Units are the sentences in document order, numbered across documents (``S1`` is
unit 0). Case ``i`` of ``make_program_cases(n, seed, ...)`` depends only on ``(seed, i, the
options)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from attribkit.core.errors import InputError
from attribkit.core.units import TextUnits
from attribkit.tasks.context_cases import InventedNames

RELATIONS: tuple[str, ...] = ("born", "works", "lives", "code")
_SENTENCE = {
    "born": "{p} was born in {v}.",
    "works": "{p} works for {v}.",
    "lives": "{p} lives in {v}.",
    "code": "The access code of {p} is {v}.",
}
_CLAUSE = {
    "born": "was born in {v}",
    "works": "works for {v}",
    "lives": "lives in {v}",
    "code": "has the access code {v}",
}


@dataclass
class ProgramCase:
    """One case: ``documents`` (each a list of sentences), the ``query``, the
    ``response_sentences`` and ``gold`` (per response sentence, per fact, the unit indices that
    hold it; see the module docstring). ``meta`` holds the people and facts used."""

    documents: list[list[str]]
    query: str
    response_sentences: list[str]
    gold: list[list[list[int]]]
    seed: int = 0
    index: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def sentences(self) -> list[str]:
        """Every source sentence in unit order (document by document)."""
        return [s for doc in self.documents for s in doc]

    @property
    def document_of(self) -> list[int]:
        """The document (0-based) of each unit."""
        return [d for d, doc in enumerate(self.documents) for _ in doc]

    @property
    def response(self) -> str:
        """The response sentences joined by spaces."""
        return " ".join(self.response_sentences)

    @property
    def passages(self) -> list[str]:
        """Each document as one string (its sentences joined by spaces)."""
        return [" ".join(doc) for doc in self.documents]

    def units(self) -> TextUnits:
        """The context as :class:`TextUnits`, one unit per sentence (documents separated by a
        blank line), so unit ``i`` is ``S<i+1>``. No model calls."""
        spans, pos, parts = [], 0, []
        for d, doc in enumerate(self.documents):
            if d:
                parts.append("\n\n")
                pos += 2
            for k, s in enumerate(doc):
                if k:
                    parts.append(" ")
                    pos += 1
                spans.append((pos, pos + len(s)))
                parts.append(s)
                pos += len(s)
        return TextUnits("".join(parts), spans)

    def gold_units(self, sentence: int) -> list[int]:
        """Every unit that holds a gold fact of response sentence ``sentence``, sorted."""
        return sorted({u for fact in self.gold[sentence] for u in fact})

    def gold_plan(self) -> str:
        """The program that writes the response from its gold sources: ``fusion`` of the first
        unit of each fact (``paraphrase`` for a single fact)."""
        lines = []
        for facts in self.gold:
            ids = [f"S{fact[0] + 1}" for fact in facts]
            lines.append(
                f"- fusion({', '.join(ids)})" if len(ids) > 1 else f"- paraphrase({ids[0]})"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the case."""
        return asdict(self)


def _clauses(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _case(
    rng: np.random.Generator,
    n_people: int,
    n_documents: int,
    n_answers: int,
    duplicate_prob: float,
) -> dict[str, Any]:
    names = InventedNames(rng)
    people = [names.person() for _ in range(n_people)]
    values = {
        p: {
            "born": names.town(),
            "works": names.company(),
            "lives": names.town(),
            "code": names.code(),
        }
        for p in people
    }
    facts = [(p, r) for p in people for r in RELATIONS]
    texts = [_SENTENCE[r].format(p=p, v=values[p][r]) for p, r in facts]
    answers = []
    for p in people[:n_answers]:
        k = int(rng.integers(2, len(RELATIONS) + 1))
        rels = [RELATIONS[j] for j in sorted(rng.choice(len(RELATIONS), size=k, replace=False))]
        answers.append((p, rels))
    # shuffle the facts into documents (every document gets at least one sentence)
    order = [int(j) for j in rng.permutation(len(facts))]
    cuts = sorted(int(c) for c in rng.choice(np.arange(1, len(facts)), n_documents - 1, False))
    docs = [order[a:b] for a, b in zip([0, *cuts], [*cuts, len(facts)], strict=True)]
    duplicated = None
    if n_documents > 1 and rng.random() < duplicate_prob:
        p, rels = answers[int(rng.integers(len(answers)))]
        fact = facts.index((p, rels[int(rng.integers(len(rels)))]))
        home = next(d for d, doc in enumerate(docs) if fact in doc)
        other = [d for d in range(n_documents) if d != home][int(rng.integers(n_documents - 1))]
        docs[other].insert(int(rng.integers(len(docs[other]) + 1)), fact)
        duplicated = list(facts[fact])
    unit_of: dict[int, list[int]] = {}
    for u, f in enumerate(j for doc in docs for j in doc):
        unit_of.setdefault(f, []).append(u)
    gold = [[unit_of[facts.index((p, r))] for r in rels] for p, rels in answers]
    response = [
        f"{p} " + _clauses([_CLAUSE[r].format(v=values[p][r]) for r in rels]) + "."
        for p, rels in answers
    ]
    asked = [p for p, _ in answers]
    query = f"What do the documents say about {_clauses(asked)}?"
    return {
        "documents": [[texts[j] for j in doc] for doc in docs],
        "query": query,
        "response_sentences": response,
        "gold": gold,
        "meta": {
            "people": people,
            "answers": [{"person": p, "relations": rels} for p, rels in answers],
            "duplicated": duplicated,
        },
    }


def make_program_cases(
    n_cases: int,
    seed: int = 0,
    *,
    n_people: int = 3,
    n_documents: int = 3,
    n_answers: int | tuple[int, int] = (1, 2),
    duplicate_prob: float = 0.5,
) -> list[ProgramCase]:
    """``n_cases`` reproducible cases: ``n_people`` people × 4 facts = the source sentences (plus
    a duplicate, with probability ``duplicate_prob``) in ``n_documents`` documents; ``n_answers``
    answer sentences (an int, or a (min, max) range drawn per case), each about one person and
    fusing 2–4 of that person's facts. No model calls."""
    lo, hi = (n_answers, n_answers) if isinstance(n_answers, int) else n_answers
    if not 1 <= lo <= hi <= n_people:
        raise InputError(
            f"n_answers must lie in [1, n_people={n_people}], got {n_answers}; one answer "
            "sentence per person at most"
        )
    if n_documents < 1 or n_documents > n_people * len(RELATIONS):
        raise InputError(
            f"n_documents must be between 1 and the number of facts ({n_people * len(RELATIONS)})"
        )
    if not 0 <= duplicate_prob <= 1:
        raise InputError(f"duplicate_prob must be in [0, 1], got {duplicate_prob}")
    if n_cases < 0:
        raise InputError(f"n_cases must be >= 0, got {n_cases}")
    cases = []
    for i in range(int(n_cases)):
        rng = np.random.default_rng([int(seed), 22, int(n_people), int(n_documents), i])
        k = int(rng.integers(lo, hi + 1))
        parts = _case(rng, n_people, n_documents, k, duplicate_prob)
        cases.append(ProgramCase(seed=int(seed), index=i, **parts))
    return cases
