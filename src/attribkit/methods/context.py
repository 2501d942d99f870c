"""Context-attribution methods that need the task itself (its value choices or the LM's internals)
rather than a plain mask scorer: the ContextCite surrogate and the verified-prior hybrid."""

from __future__ import annotations

from typing import Any

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.cost import Budget, measure
from attribkit.core.registry import check_units
from attribkit.methods.perturbation.lasso_surrogate import lasso_surrogate


def contextcite(
    task: Any,
    *,
    n_ablations: int = 64,
    keep_prob: float = 0.5,
    alpha: float = 0.01,
    seed: int | None = 0,
    budget: Budget | None = None,
) -> Attribution:
    """ContextCite: ``n_ablations`` random ablations (each unit kept with ``keep_prob``), the
    span's logit-probability log P − log(1 − P) under each, and a LASSO on the standardised masks
    (coefficients rescaled by the span length, as the reference code does). Scores estimate the
    change in logit-probability from including each unit.

    Cost: ``n_ablations`` forward passes, independent of the number of units; per-token
    log-probabilities are cached on the task, so other spans are free.
    """
    check_units(task)
    scorer = task.scorer(value="logit_prob", budget=budget)
    result = lasso_surrogate(
        scorer,
        n_ablations=n_ablations,
        keep_prob=keep_prob,
        alpha=alpha,
        span_tokens=task.n_span_tokens,
        seed=seed,
    )
    result.method = "contextcite"
    return result


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


def auto(task: Any, *, budget: Budget | None = None) -> Attribution:
    """The default context method: ``attention_heads`` when a heads file ships for the model
    (one forward pass, any n), otherwise leave-one-out (n + 1 passes). The method that ran is in
    ``params['method']``; ``extras`` are that method's."""
    from attribkit.methods.attention import heads_path

    check_units(task)
    chosen = "attention_heads" if heads_path(task.lm).is_file() else "loo"
    result = task.attribute(chosen, budget=budget)
    result.params = {"method": chosen, **result.params}
    result.method = "auto"
    return result
