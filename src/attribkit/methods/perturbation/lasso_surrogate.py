"""ContextCite's surrogate: a sparse linear model fitted on random ablations of the units."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import Lasso
from sklearn.preprocessing import StandardScaler

from attribkit.core.attribution import Attribution
from attribkit.core.cost import measure
from attribkit.core.errors import InputError
from attribkit.core.registry import check_units
from attribkit.core.scorer import Scorer
from attribkit.methods.numerics import bernoulli_masks


def fit_lasso_surrogate(
    masks: np.ndarray, values: np.ndarray, alpha: float = 0.01, span_tokens: int = 1
) -> tuple[np.ndarray, float, float]:
    """ContextCite's ``LassoRegression`` solver: Lasso on standardised masks, mapped back.

    Fits ``Lasso(alpha)`` to ``values / span_tokens`` on ``StandardScaler``-ed masks and returns
    ``(weights, intercept, r2)`` on the original scale: ``weights = coef / scale · span_tokens``,
    ``intercept = (b − (mean / scale) · coef) · span_tokens`` and the surrogate's R² on the samples.
    """
    x = np.asarray(masks, dtype=float)
    y = np.asarray(values, dtype=float) / span_tokens
    scaler = StandardScaler().fit(x)
    xs = scaler.transform(x)
    lasso = Lasso(alpha=alpha, fit_intercept=True, random_state=0).fit(xs, y)
    weights = lasso.coef_ / scaler.scale_
    intercept = float(lasso.intercept_ - (scaler.mean_ / scaler.scale_) @ lasso.coef_)
    return weights * span_tokens, intercept * span_tokens, float(lasso.score(xs, y))


def lasso_surrogate(
    scorer: Scorer,
    *,
    n_ablations: int = 64,
    keep_prob: float = 0.5,
    alpha: float = 0.01,
    span_tokens: int = 1,
    seed: int | None = 0,
) -> Attribution:
    """ContextCite scores: the weights of a sparse linear surrogate of v(mask).

    Draws ``n_ablations`` masks keeping each unit independently with probability ``keep_prob``,
    fits ``Lasso(alpha)`` on the standardised masks and maps the coefficients back to the mask
    scale, so a score is the estimated change in the value from including that unit. ContextCite
    divides the target by the response span's length in tokens so that ``alpha`` is per token:
    pass ``span_tokens`` when the value sums over that many tokens (the scores are scaled back).

    Cost: at most ``n_ablations`` forward passes in one batched scorer call, independent of the
    number of units (repeated masks come from the cache). Returns an Attribution with
    ``extras``: ``intercept`` and ``r2`` (the surrogate's R² on the ablations).
    """
    check_units(scorer)
    if n_ablations < 2:
        raise InputError(f"n_ablations must be >= 2 (got {n_ablations}); ContextCite uses 32-256")
    if not 0.0 < keep_prob < 1.0:
        raise InputError(f"keep_prob must be strictly between 0 and 1 (got {keep_prob})")
    if span_tokens < 1:
        raise InputError(f"span_tokens must be >= 1 (got {span_tokens})")
    rng = np.random.default_rng(seed)
    masks = bernoulli_masks(rng, (n_ablations, scorer.n_units), keep_prob)
    with measure(scorer) as cost:
        values = scorer(masks)
    weights, intercept, r2 = fit_lasso_surrogate(masks, values, alpha, span_tokens)
    params = {
        "n_ablations": n_ablations,
        "keep_prob": keep_prob,
        "alpha": alpha,
        "span_tokens": span_tokens,
        "seed": seed,
    }
    return Attribution.from_scorer(
        scorer, weights, "lasso_surrogate", params, cost, intercept=intercept, r2=r2
    )
