"""Forced-answer importance: how much each sentence of a chain of thought moves the answer's
log-probability when the model is made to answer right after it (after Bogdan, Macar, Nanda &
Conmy, 'Thought Anchors: Which LLM Reasoning Steps Matter?', 2025).

The paper samples 100 forced answers after each prefix and compares answer distributions; this is
its teacher-forced, deterministic reading: one log-probability per prefix, no sampling.

What is scored: the answer's own tokens right after the cue, which ends in ``\boxed{`` — the
closing ``}`` is not part of the response. Scoring it would add log p(``}`` | answer), which
measures where the answer *ends* rather than which answer the model commits to (for a multi-digit
answer, "12" followed by "}" penalises a model still hesitating between "12" and "123"); the
paper compares the answers it extracted from forced samples, which have no brace either.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.cost import measure
from attribkit.core.registry import check_units

__all__ = ["forced_answer"]


def forced_answer(task: Any) -> Attribution:
    """Forced-answer importance over the sentences of a :class:`ReasoningTask`.

    The curve v_i = log p(answer | problem, sentences 0..i, answer cue) for i = -1 (no sentence)
    .. N-1 is scored in one sweep; sentence i's score is v_i − v_{i−1} (what adding it changes),
    so the scores sum to v_{N−1} − v_{−1}. Returns an Attribution over the N sentences with
    ``extras["values"]`` (the N + 1 curve values, first = no sentence).

    Costs N + 1 forward passes. With a local ``LanguageModel`` (and ``reuse_prefix``, the task
    default) one of them is a full pass over the whole trace whose key-value cache is kept, and
    each of the N others runs only the tokens after its common token prefix with it (the answer
    cue and the answer, plus the token or two where the sentence boundary tokenizes
    differently), over a copy of that cache cut to the prefix: one model call each. Without
    prefix reuse (an HTTP LM, or ``reuse_prefix=False``) all N + 1 are full passes. Prompts the
    task already scored cost nothing.
    """
    check_units(task)
    with measure(task.meter) as cost:
        values = task.values(task.prefix_texts())
    scores = np.diff(values)
    return task.result(scores, "forced_answer", {}, cost, values=values.tolist())
