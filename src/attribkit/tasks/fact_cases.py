"""Synthetic fact clusters: entity records whose questions need two attributes of one entity
(no model calls).

Each :class:`FactCase` holds ``n_entities`` records, one per invented person: a ``name`` plus 5–8
attributes drawn from :data:`ATTRIBUTES` (birthplace, residence, employer, access code, mentor,
pet, locker, project). Every value is invented (syllable words, codes, 4-digit numbers) and
unique within the case, so a language model can only answer from the context. The question names
one attribute value of the gold entity (the *key*) and asks for another (the *answer*):
``"What is the employer of the person whose birthplace is Zoutheim?"``. The gold cluster is the
gold entity's record; the two facts it needs are its key and answer attributes.

The same facts come in three forms, for OG-RAG hyperedges and its two chunking baselines:

- :attr:`FactCase.records` — the fact dicts (one hyperedge each with
  ``HyperedgeUnits.from_facts``), or :meth:`FactCase.jsonld` for ``from_jsonld``;
- :attr:`FactCase.sentences` — one sentence per attribute, ``"The employer of Zarbo is Drakel
  Labs."``, grouped per entity in record order (attributes in a random order);
- :func:`word_chunk_spans` — fixed-size chunks of :attr:`FactCase.text` (every ``size`` words).

Cases are reproducible: case ``i`` of ``make_fact_cases(n, n_entities, seed)`` depends only on
``(seed, n_entities, i)``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from attribkit.core.errors import InputError
from attribkit.tasks.context_cases import InventedNames

#: attribute key -> the kind of invented value it takes
ATTRIBUTES: dict[str, str] = {
    "birthplace": "town",
    "residence": "town",
    "employer": "company",
    "access code": "code",
    "mentor": "person",
    "pet": "person",
    "locker": "number",
    "project": "word",
}
SENTENCE = "The {key} of {name} is {value}."
QUESTION = "What is the {answer_key} of the person whose {key} is {key_value}?"
ANSWER_PREFIX = "The {answer_key} of the person whose {key} is {key_value} is"
MIN_ATTRIBUTES, MAX_ATTRIBUTES = 5, 8


@dataclass
class FactCase:
    """One generated case.

    ``records``: one dict per entity (``name`` first, then its attributes; all values strings).
    ``gold``: the index of the gold entity; ``key`` / ``answer_key``: the attribute the question
    names and the one it asks for; ``answer``: the asked value (also the forced ``response``).
    ``sentences``: one sentence per (entity, attribute), grouped by entity; ``sentence_facts``:
    the ``(entity, attribute)`` of each sentence.
    """

    records: list[dict[str, str]]
    query: str
    response: str
    answer: str
    gold: int
    key: str
    answer_key: str
    sentences: list[str]
    sentence_facts: list[tuple[int, str]]
    seed: int = 0
    index: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def gold_record(self) -> dict[str, str]:
        """The gold entity's record (the gold cluster)."""
        return self.records[self.gold]

    @property
    def answer_prefix(self) -> str:
        """The question restated as the start of an answer (``"The employer of the person whose
        birthplace is Zoutheim is"``), for prefilled generation: the model then writes only the
        value."""
        return ANSWER_PREFIX.format(
            answer_key=self.answer_key, key=self.key, key_value=self.gold_record[self.key]
        )

    @property
    def gold_sentences(self) -> list[int]:
        """Indices of the two sentences the question needs (key fact, answer fact), sorted."""
        need = {(self.gold, self.key), (self.gold, self.answer_key)}
        return [i for i, f in enumerate(self.sentence_facts) if tuple(f) in need]

    @property
    def answer_sentence(self) -> int:
        """Index of the sentence stating the answer."""
        return self.sentence_facts.index((self.gold, self.answer_key))

    @property
    def text(self) -> str:
        """The sentences as one text: single spaces within an entity, a newline between
        entities."""
        parts: list[str] = []
        for i, (sentence, (entity, _)) in enumerate(
            zip(self.sentences, self.sentence_facts, strict=True)
        ):
            if i:
                parts.append(" " if self.sentence_facts[i - 1][0] == entity else "\n")
            parts.append(sentence)
        return "".join(parts)

    def sentence_spans(self) -> list[tuple[int, int]]:
        """Character ranges of the sentences in :attr:`text`."""
        spans, pos = [], 0
        text = self.text
        for s in self.sentences:
            start = text.index(s, pos)
            spans.append((start, start + len(s)))
            pos = start + len(s)
        return spans

    def jsonld(self) -> dict[str, Any]:
        """The records as a JSON-LD document: ``{"@context": ..., "@graph": [{"@type":
        "Person", ...}]}`` (keys become ``"Person <key>"`` once flattened)."""
        return {
            "@context": {"@vocab": "https://schema.org/"},
            "@graph": [{"@type": "Person", **r} for r in self.records],
        }

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the case."""
        d = asdict(self)
        d["sentence_facts"] = [list(f) for f in self.sentence_facts]
        return d


def _value(names: InventedNames, kind: str, numbers: set[str]) -> str:
    if kind == "town":
        return names.town()
    if kind == "company":
        return names.company()
    if kind == "code":
        return names.code()
    if kind == "person":
        return names.person()
    if kind == "word":
        return names._unique(lambda: names._word(2))
    for _ in range(1000):  # "number": 4 digits, never a substring of a code (3 + 2 digits)
        v = str(int(names.rng.integers(1000, 10_000)))
        if v not in numbers:
            numbers.add(v)
            return v
    raise RuntimeError("could not draw a unique number")  # pragma: no cover


def _case(rng: np.random.Generator, n_entities: int) -> dict[str, Any]:
    names, numbers = InventedNames(rng), set()
    keys = list(ATTRIBUTES)
    records = []
    for _ in range(n_entities):
        k = int(rng.integers(MIN_ATTRIBUTES, MAX_ATTRIBUTES + 1))
        chosen = [keys[j] for j in sorted(rng.choice(len(keys), size=k, replace=False))]
        record = {"name": names.person()}
        record.update({key: _value(names, ATTRIBUTES[key], numbers) for key in chosen})
        records.append(record)
    gold = int(rng.integers(n_entities))
    attrs = [k for k in records[gold] if k != "name"]
    key, answer_key = (attrs[j] for j in rng.choice(len(attrs), size=2, replace=False))
    sentences, facts = [], []
    for e, record in enumerate(records):
        attr_keys = [k for k in record if k != "name"]
        for j in rng.permutation(len(attr_keys)):
            a = attr_keys[int(j)]
            sentences.append(SENTENCE.format(key=a, name=record["name"], value=record[a]))
            facts.append((e, a))
    answer = records[gold][answer_key]
    return {
        "records": records,
        "query": QUESTION.format(answer_key=answer_key, key=key, key_value=records[gold][key]),
        "response": answer,
        "answer": answer,
        "gold": gold,
        "key": key,
        "answer_key": answer_key,
        "sentences": sentences,
        "sentence_facts": facts,
    }


def make_fact_cases(n_cases: int, n_entities: int = 8, seed: int = 0) -> list[FactCase]:
    """``n_cases`` reproducible fact-cluster cases of ``n_entities`` records each.

    Returns a list of :class:`FactCase`. No model calls; pure Python and numpy.
    """
    if int(n_cases) < 0:
        raise InputError(f"n_cases must be >= 0, got {n_cases}")
    if int(n_entities) < 1:
        raise InputError(f"a case needs at least 1 entity, got n_entities={n_entities}")
    cases = []
    for i in range(int(n_cases)):
        rng = np.random.default_rng([int(seed), int(n_entities), i, 22])
        cases.append(FactCase(**_case(rng, int(n_entities)), seed=int(seed), index=i))
    return cases


def word_chunk_spans(text: str, size: int) -> list[tuple[int, int]]:
    """Character ranges of fixed-size chunks of ``text``: every ``size`` whitespace-separated
    words form one chunk (the last may be shorter), from its first word's start to its last
    word's end. Ready for ``TextUnits(text, spans)``. No model calls."""
    if int(size) < 1:
        raise InputError(f"chunk size must be >= 1 word, got {size}")
    words = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
    if not words:
        raise InputError("the text has no words to chunk; pass a non-empty text")
    size = int(size)
    return [
        (words[i][0], words[min(i + size, len(words)) - 1][1]) for i in range(0, len(words), size)
    ]
