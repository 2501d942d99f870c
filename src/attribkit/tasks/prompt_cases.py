"""Seeded labelled examples for prompt tasks (no model calls): "but"-sentiment and Coin Flip.

- :func:`but_sentiment`: ``"The food was awful, but the staff was lovely."`` → the label of the
  clause after "but" (``"negative"`` / ``"positive"``); a share ``contrast`` of the items have
  clauses of opposite polarity, so a model that reads the first clause (or averages the two) is
  wrong on them. The setup measured in the design note (prompt_knowledge.md §4–§5).
- :func:`coin_flip`: Coin Flip (Wei et al., "Chain-of-Thought Prompting Elicits Reasoning in Large
  Language Models", 2022): ``"A coin is heads up. Ava flips the coin. Noah does not flip the coin.
  Is the coin still heads up?"`` → ``"yes"`` when an even number of people flipped it, else
  ``"no"``; 1–4 people with seeded invented names.

Labels alternate by index (item ``i`` has label ``LABELS[i % 2]``), so any even-length prefix is
balanced; item ``i`` depends only on ``(seed, i)`` (and ``contrast``), so asking for more items
extends the list without changing its start. Labels are correct by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attribkit.core.errors import InputError
from attribkit.tasks.context_cases import InventedNames

__all__ = [
    "COIN_VERBALIZERS",
    "SENTIMENT_VERBALIZERS",
    "LabeledExample",
    "but_sentiment",
    "coin_flip",
]

#: label → verbalizer (a completion whose first token is read); each is one SmolLM2 token
SENTIMENT_VERBALIZERS: dict[str, str] = {"negative": " negative", "positive": " positive"}
#: label → verbalizer for Coin Flip; " no" and " yes" are single SmolLM2 tokens
COIN_VERBALIZERS: dict[str, str] = {"no": " no", "yes": " yes"}


@dataclass(frozen=True)
class LabeledExample:
    """One labelled input: ``text`` fills the template's slot, ``label`` is a key of the
    verbalizers, ``meta`` holds how it was built (family-specific, JSON-serialisable)."""

    text: str
    label: str
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the example."""
        return {"text": self.text, "label": self.label, "meta": dict(self.meta)}


_ASPECTS = (
    "food", "staff", "service", "room", "view", "music", "coffee", "location", "decor", "bed",
    "breakfast", "pool", "waiter", "menu", "wine", "bread", "dessert", "lobby", "parking", "soup",
)  # fmt: skip
_POSITIVE = (
    "lovely", "excellent", "wonderful", "superb", "delightful", "great", "fantastic", "perfect",
    "charming", "amazing",
)  # fmt: skip
_NEGATIVE = (
    "awful", "terrible", "horrible", "dreadful", "disappointing", "bad", "poor", "mediocre",
    "unpleasant", "dismal",
)  # fmt: skip
_SENTIMENT_LABELS = ("negative", "positive")
_COIN_LABELS = ("no", "yes")


def _check_n(n: int) -> None:
    if not isinstance(n, int | np.integer) or isinstance(n, bool) or n < 0:
        raise InputError(f"n must be a non-negative integer (how many examples), got {n!r}")


def but_sentiment(n: int, seed: int = 0, contrast: float = 0.7) -> list[LabeledExample]:
    """``n`` "but"-sentiment examples ("The A was X, but the B was Y.") labelled by the clause
    after "but"; with probability ``contrast`` an item's first clause has the opposite polarity.
    Labels alternate negative/positive. ``meta``: aspects, adjectives, ``first_label`` and
    ``contrast`` (whether the clauses disagree). No model calls."""
    _check_n(n)
    if not 0.0 <= float(contrast) <= 1.0:
        raise InputError(f"contrast is a share of items, in [0, 1]; got {contrast!r}")
    out = []
    for i in range(int(n)):
        rng = np.random.default_rng([int(seed), 1, i])
        label = _SENTIMENT_LABELS[i % 2]
        opposite = bool(rng.random() < contrast)
        first_label = _SENTIMENT_LABELS[1 - i % 2] if opposite else label
        a, b = rng.choice(len(_ASPECTS), size=2, replace=False)
        words = {"negative": _NEGATIVE, "positive": _POSITIVE}
        x = words[first_label][int(rng.integers(len(words[first_label])))]
        y = words[label][int(rng.integers(len(words[label])))]
        text = f"The {_ASPECTS[a]} was {x}, but the {_ASPECTS[b]} was {y}."
        meta = {
            "aspects": [_ASPECTS[a], _ASPECTS[b]],
            "adjectives": [x, y],
            "first_label": first_label,
            "contrast": opposite,
        }
        out.append(LabeledExample(text, label, meta))
    return out


def coin_flip(n: int, seed: int = 0) -> list[LabeledExample]:
    """``n`` Coin Flip examples (Wei et al., 2022): a coin starts heads up, 1–4 invented people
    each flip it or not, "Is the coin still heads up?" → ``"yes"`` iff the number of flips is
    even. Labels alternate no/yes (the last person's action sets the parity). ``meta``: names,
    ``flips`` (one bool per person) and ``n_flips``. No model calls."""
    _check_n(n)
    out = []
    for i in range(int(n)):
        rng = np.random.default_rng([int(seed), 2, i])
        label = _COIN_LABELS[i % 2]
        names = InventedNames(rng)
        k = int(rng.integers(1, 5))
        people = [names.person() for _ in range(k)]
        flips = [bool(rng.random() < 0.5) for _ in range(k - 1)]
        odd_so_far = sum(flips) % 2 == 1
        flips.append(odd_so_far != (label == "no"))  # total odd <=> "no"
        sentences = ["A coin is heads up."]
        for name, flip in zip(people, flips, strict=True):
            sentences.append(
                f"{name} flips the coin." if flip else f"{name} does not flip the coin."
            )
        sentences.append("Is the coin still heads up?")
        meta = {"names": people, "flips": flips, "n_flips": int(sum(flips))}
        out.append(LabeledExample(" ".join(sentences), label, meta))
    return out
