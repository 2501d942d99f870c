"""RISE over units: the value averaged over random masks, weighted by whether each unit was kept."""

from __future__ import annotations

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.cost import measure
from attribkit.core.errors import InputError
from attribkit.core.registry import check_units
from attribkit.core.scorer import Scorer
from attribkit.methods.numerics import bernoulli_masks


def rise(
    scorer: Scorer,
    *,
    n_masks: int = 1000,
    keep_prob: float = 0.5,
    center: bool = False,
    seed: int | None = 0,
) -> Attribution:
    """RISE scores over units: score_i = mean over masks of f(M)·M_i / p (the paper's estimator).

    Each of ``n_masks`` masks keeps every unit independently with probability ``p = keep_prob``,
    so score_i estimates E[f | unit i kept]. With ``center=True`` the score is instead the mean
    of f over the masks that keep unit i minus its mean over the masks that remove it: the large
    offset shared by every unit cancels exactly (not only in expectation), and the score reads
    as the unit's average effect. A unit kept by every mask or by none is then unscored (NaN).
    (Smooth upsampled masks for images are not part of this unit-level version.)

    Cost: at most ``n_masks`` forward passes in one batched scorer call (repeated masks come from
    the cache). Returns an Attribution with ``extras['mean_value']``, the mean of f over masks.
    """
    check_units(scorer)
    if n_masks < 1:
        raise InputError(f"n_masks must be >= 1 (got {n_masks}); RISE uses thousands")
    if not 0.0 < keep_prob < 1.0:
        raise InputError(f"keep_prob must be strictly between 0 and 1 (got {keep_prob})")
    rng = np.random.default_rng(seed)
    masks = bernoulli_masks(rng, (n_masks, scorer.n_units), keep_prob)
    with measure(scorer) as cost:
        values = scorer(masks)
    m = masks.astype(float)
    if center:
        kept, removed = m.sum(axis=0), (1.0 - m).sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            scores = values @ m / kept - values @ (1.0 - m) / removed
        scores[(kept == 0) | (removed == 0)] = np.nan
    else:
        scores = values @ m / (n_masks * keep_prob)
    params = {"n_masks": n_masks, "keep_prob": keep_prob, "center": center, "seed": seed}
    return Attribution.from_scorer(
        scorer, scores, "rise", params, cost, mean_value=float(values.mean())
    )
