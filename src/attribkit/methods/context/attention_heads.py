"""AT2-lite: context attribution by a small learned set of attention heads (after Cohen-Wang,
Chuang, Mądry, 'Learning to Attribute with Attention', 2025).

One forward pass; each unit's score is a weighted sum, over the heads, of the attention mass the
target rows put on the unit. The heads and weights ship per model as JSON in
``attribkit/data/heads/<model>.json``: for SmolLM2 they are learned on real QA data by
:func:`~attribkit.methods.context.head_training.train_heads` (``attribkit train-heads``; the
file records the exact command). The heads selected on synthetic template cases by
:func:`~attribkit.methods.context.head_selection.select_heads` (``attribkit select-heads``) ship
as the variant ``<model>.synthetic.json``: ``attention_heads(task, heads="synthetic")``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.cost import Budget, Cost, measure
from attribkit.core.errors import InputError
from attribkit.core.registry import check_units
from attribkit.methods.context.attention_reading import (
    all_heads,
    attention_lm,
    check_heads,
    head_unit_features,
)
from attribkit.methods.context.heads import heads_path, load_heads

__all__ = ["attention_heads"]


def attention_heads(
    task: Any,
    *,
    heads: str | Sequence[Sequence[int]] | None = None,
    weights: Sequence[float] | None = None,
    budget: Budget | None = None,
) -> Attribution:
    """AT2-lite: unit score = Σ_h w_h · (attention of head h from the target rows to the unit).

    The feature of head ``h`` for unit ``u`` is the attention summed over ``u``'s tokens and
    averaged over the rows that predict the target tokens (the response, or only the span's), as
    in AT2. With ``heads=None`` the heads and weights come from the model's shipped file
    (:func:`load_heads`; InputError if there is none; for SmolLM2 the heads learned on real QA
    data). ``heads="synthetic"`` (or another shipped variant name) reads the variant file
    ``<model>.<variant>.json`` (for SmolLM2: the heads selected on synthetic template cases).
    ``heads=[(layer, head), ...]`` uses those (``weights`` default to equal, 1/len);
    ``heads="all"`` averages every layer and head (the naive baseline). Returns an Attribution
    over the task's units; ``extras["features"]`` holds the per-head unit features. Costs one
    forward pass.
    """
    check_units(task)
    lm = attention_lm(task)
    source = "given"
    if heads is None or (isinstance(heads, str) and heads != "all"):
        if weights is not None:
            raise InputError("weights= needs heads= (the (layer, head) pairs they weigh)")
        variant = None if heads is None else heads
        spec = load_heads(lm, variant=variant)
        path = heads_path(lm, variant)
        heads, weights, source = spec["heads"], spec["weights"], f"file:{path.name}"
    head_list = all_heads(lm) if isinstance(heads, str) and heads == "all" else None
    head_list = head_list or check_heads(lm, heads)  # type: ignore[arg-type]
    if weights is None:
        w = np.full(len(head_list), 1.0 / len(head_list))
    else:
        w = np.asarray(weights, dtype=np.float64).ravel()
        if w.shape != (len(head_list),) or not np.isfinite(w).all():
            raise InputError(
                f"weights must be {len(head_list)} finite numbers, one per head; got {w.shape[0]}"
            )
    if budget is not None:
        budget.check(Cost(), 1)
    with measure(task.meter) as cost:
        features = head_unit_features(task, head_list)
    scores = w @ features
    params = {
        "heads": "all" if heads == "all" else [list(h) for h in head_list],
        "weights": w.tolist(),
        "source": source,
    }
    extras = {"features": features.tolist()} if len(head_list) <= 64 else {}
    return task.result(  # type: ignore[no-any-return]
        scores, "attention_heads", params, cost, **extras
    )
