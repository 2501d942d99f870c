"""LIME: a locally weighted linear surrogate fitted on random removals of units."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import Ridge

from attribkit.core.attribution import Attribution
from attribkit.core.cost import measure
from attribkit.core.errors import InputError
from attribkit.core.registry import check_units
from attribkit.core.scorer import Scorer
from attribkit.methods.numerics import random_subsets


def lime_masks(n: int, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """LIME-text neighbourhood: row 0 keeps every unit; each other row removes a number of units
    drawn uniformly from 1..n, chosen uniformly at random. Returns (n_samples, n) booleans."""
    removed = rng.integers(1, n + 1, size=n_samples - 1)
    return np.concatenate([np.ones((1, n), dtype=bool), ~random_subsets(rng, n, removed)])


def lime_kernel(masks: np.ndarray, kernel_width: float) -> np.ndarray:
    """LIME's weights sqrt(exp(−d²/width²)), d = 100 × cosine distance to the all-ones mask.

    For a binary mask keeping k of n units, cosine similarity to all-ones is sqrt(k/n); an empty
    mask gets distance 1 (as ``sklearn.metrics.pairwise_distances`` gives for a zero vector).
    """
    kept = masks.sum(axis=1) / masks.shape[1]
    distance = (1.0 - np.sqrt(kept)) * 100.0
    return np.sqrt(np.exp(-(distance**2) / kernel_width**2))


def lime(
    scorer: Scorer,
    *,
    n_samples: int = 1000,
    kernel_width: float = 25.0,
    alpha: float = 1.0,
    seed: int | None = 0,
) -> Attribution:
    """LIME scores: coefficients of a weighted ridge regression of v(mask) on the binary mask.

    Follows LIME for text: ``n_samples`` masks (the first keeps everything; each other removes a
    uniformly drawn number of units), weighted by an exponential kernel of width ``kernel_width``
    on 100 × the cosine distance to the all-ones mask, then ``Ridge(alpha)`` with an intercept on
    all units (no feature selection). Cost: at most ``n_samples`` forward passes, one batched
    scorer call (repeated masks come from the cache; LIME's own default is 5000 samples).
    Returns an Attribution with ``extras``: ``intercept``, ``r2`` (the surrogate's weighted R²
    on the samples) and ``full_value``.
    """
    check_units(scorer)
    if n_samples < 2:
        raise InputError(f"n_samples must be >= 2 (got {n_samples}); LIME uses thousands")
    if kernel_width <= 0:
        raise InputError(f"kernel_width must be positive (got {kernel_width}); LIME text uses 25")
    rng = np.random.default_rng(seed)
    masks = lime_masks(scorer.n_units, n_samples, rng)
    with measure(scorer) as cost:
        values = scorer(masks)
    weights = lime_kernel(masks, kernel_width)
    x = masks.astype(float)
    model = Ridge(alpha=alpha, fit_intercept=True).fit(x, values, sample_weight=weights)
    r2 = float(model.score(x, values, sample_weight=weights))
    params = {"n_samples": n_samples, "kernel_width": kernel_width, "alpha": alpha, "seed": seed}
    return Attribution.from_scorer(
        scorer,
        model.coef_,
        "lime",
        params,
        cost,
        intercept=float(model.intercept_),
        r2=r2,
        full_value=float(values[0]),
    )
