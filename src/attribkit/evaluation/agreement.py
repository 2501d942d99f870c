"""How much do two attributions of the same input agree? Rank correlation, top-k overlap, sign.

Krishna et al., 'The Disagreement Problem in Explainable Machine Learning: A Practitioner's
Perspective', 2022, motivates these measures. No model calls: everything is computed from the
scores already in the Attributions.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import stats

from attribkit.core.attribution import Attribution
from attribkit.core.errors import InputError

METRICS = ("spearman", "kendall", "top_k_overlap", "sign_agreement")


def _check_same_units(a: Attribution, b: Attribution) -> None:
    if len(a) != len(b):
        raise InputError(
            f"cannot compare attributions of different inputs: {a.method!r} has {len(a)} units, "
            f"{b.method!r} has {len(b)}; compare attributions of the same units"
        )
    for ua, ub in zip(a.units, b.units, strict=True):
        if ua.label != ub.label:
            raise InputError(
                f"cannot compare attributions of different units: unit {ua.index} is "
                f"{ua.label[:40]!r} in {a.method!r} but {ub.label[:40]!r} in {b.method!r}; "
                "compare attributions of the same input split the same way"
            )


def rank_correlation(fn: Any, x: np.ndarray, y: np.ndarray) -> float:
    """``fn(x, y).statistic`` (a scipy correlation), NaN for fewer than two points or a
    constant side. No model calls."""
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")  # undefined for fewer than two points or a constant ranking
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(fn(x, y).statistic)


def top_indices(v: np.ndarray, k: int) -> set[int]:
    """The indices of the ``k`` largest values (ties: earlier first). No model calls."""
    return set(np.argsort(-v, kind="stable")[:k].tolist())


def agreement(a: Attribution, b: Attribution, k: int = 5) -> dict[str, float]:
    """Agreement between two Attributions of the same units.

    Returns a dict with ``spearman`` (rho) and ``kendall`` (tau-b) rank correlations,
    ``top_k_overlap`` = |top_k(a) ∩ top_k(b)| / k, ``sign_agreement`` = fraction of units whose
    scores have the same sign (−, 0, +), plus ``k`` (the k used, at most the number of compared
    units) and ``n_compared``. Units unscored (NaN) by either method are left out of every
    measure; correlations are NaN when fewer than two units remain or a ranking is constant.
    Raises InputError when the two do not describe the same units (count and labels).
    Cost: no model calls.
    """
    _check_same_units(a, b)
    if k < 1:
        raise InputError(f"k must be >= 1, got {k}")
    va, vb = a.vector, b.vector
    ok = ~(np.isnan(va) | np.isnan(vb))
    x, y = va[ok], vb[ok]
    m = int(ok.sum())
    k_eff = min(int(k), m)
    overlap = len(top_indices(x, k_eff) & top_indices(y, k_eff)) / k_eff if k_eff else float("nan")
    sign = float(np.mean(np.sign(x) == np.sign(y))) if m else float("nan")
    return {
        "spearman": rank_correlation(stats.spearmanr, x, y),
        "kendall": rank_correlation(stats.kendalltau, x, y),
        "top_k_overlap": float(overlap),
        "sign_agreement": sign,
        "k": k_eff,
        "n_compared": m,
    }


def agreement_matrix(attributions: Mapping[str, Attribution], k: int = 5) -> dict[str, Any]:
    """Pairwise :func:`agreement` between several methods' Attributions of the same input.

    Returns ``{"methods": [names], "k": k, "spearman": M, "kendall": M, "top_k_overlap": M,
    "sign_agreement": M}`` where each ``M`` is a symmetric (m, m) numpy array, ``M[i, j]`` the
    agreement of methods i and j (the diagonal compares a method with itself). Raises InputError
    when fewer than one attribution is given or they describe different units.
    Cost: no model calls.
    """
    names = list(attributions)
    if not names:
        raise InputError("no attributions given: pass a dict {method name: Attribution}")
    m = len(names)
    out: dict[str, Any] = {"methods": names, "k": k}
    mats = {key: np.full((m, m), np.nan) for key in METRICS}
    for i in range(m):
        for j in range(i, m):
            r = agreement(attributions[names[i]], attributions[names[j]], k=k)
            for key in METRICS:
                mats[key][i, j] = mats[key][j, i] = r[key]
    out.update(mats)
    return out
