"""The verified-prior hybrid: rank units by a cheap prior (learned attention heads by default),
then verify the prior's top units by leave-one-out (attribkit's; the prior after Cohen-Wang,
Chuang, Mądry, 'Learning to Attribute with Attention', 2025)."""

from __future__ import annotations

from typing import Any

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.cost import Budget, measure
from attribkit.core.registry import check_units

__all__ = ["hybrid"]


def hybrid(
    task: Any,
    *,
    verify: int = 4,
    prior: str = "attention_heads",
    budget: Budget | None = None,
    **prior_params: Any,
) -> Attribution:
    """Rank units by a cheap prior (one attention pass by default), then score the prior's top
    ``verify`` units by leave-one-out: a unit's score is f(all) − f(all without it).

    Returns scores for the verified units; the others are NaN (unscored) and keep their prior
    order in ``extras['ranking']``; ``extras['prior_scores']`` holds the prior. Cost: the prior's
    passes plus at most ``verify + 1`` forward passes.
    """
    check_units(task)
    first = task.attribute(prior, **prior_params)
    order = [int(i) for i in first.ranking]
    checked = order[: max(1, min(verify, task.n_units))]
    scorer = task.scorer(budget=budget)
    masks = np.ones((len(checked) + 1, task.n_units), dtype=bool)
    for row, unit in enumerate(checked, start=1):
        masks[row, unit] = False
    with measure(scorer) as cost:
        values = scorer(masks)
    scores = np.full(task.n_units, np.nan)
    scores[checked] = values[0] - values[1:]
    verified = sorted(checked, key=lambda u: -scores[u])
    ranking = verified + [u for u in order if u not in checked]
    result = Attribution.from_scorer(
        scorer,
        scores,
        "hybrid",
        {"verify": verify, "prior": prior, **prior_params},
        cost + first.cost,
        prior_scores=first.scores,
        ranking=ranking,
        full_value=float(values[0]),
    )
    return result
