"""Shapley values over units: exact enumeration for small n, antithetic permutation sampling above."""

from __future__ import annotations

from math import comb

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.cost import measure
from attribkit.core.errors import InputError
from attribkit.core.registry import check_units
from attribkit.core.scorer import Scorer
from attribkit.methods.numerics import (
    marginal_contributions,
    prefix_masks,
    random_permutations,
)

EXACT_AUTO_MAX = 12
"""Largest number of units for which ``shapley`` enumerates every coalition by default."""

EXACT_HARD_MAX = 20
"""Largest number of units ``exact=True`` accepts (2^20 ≈ 10^6 coalitions)."""


def all_coalitions(n: int) -> np.ndarray:
    """Every subset of ``n`` units as a (2^n, n) boolean array; row ``k`` keeps the bits of ``k``."""
    codes = np.arange(1 << n, dtype=np.int64)
    return ((codes[:, None] >> np.arange(n)) & 1).astype(bool)


def shapley_from_table(values: np.ndarray, n: int) -> np.ndarray:
    """Exact Shapley values from ``values[k] = v(subset with the bits of k)`` (length 2^n).

    φ_i = Σ_{S ∌ i} |S|!(n−|S|−1)!/n! · (v(S ∪ {i}) − v(S)). No model calls.
    """
    values = np.asarray(values, dtype=float)
    codes = np.arange(1 << n, dtype=np.int64)
    sizes = ((codes[:, None] >> np.arange(n)) & 1).sum(axis=1)
    # weight of a coalition S of size s not containing i: 1 / (n · C(n−1, s))
    weight = np.array([1.0 / (n * comb(n - 1, s)) for s in range(n)])
    phi = np.empty(n)
    for i in range(n):  # n vectorised passes over the table; no model calls
        without = codes[(codes >> i) & 1 == 0]
        phi[i] = np.dot(weight[sizes[without]], values[without | (1 << i)] - values[without])
    return phi


def shapley(
    scorer: Scorer,
    *,
    exact: bool | None = None,
    n_permutations: int = 50,
    antithetic: bool = True,
    seed: int | None = 0,
) -> Attribution:
    """Shapley value of every unit for the value function v(S) = scorer(S).

    ``exact=None`` enumerates all 2^n coalitions when n <= 12 and samples permutations above;
    ``exact=True`` forces enumeration (n <= 20), ``exact=False`` forces sampling. Sampling
    (Castro et al. 2009) averages each unit's marginal contribution over ``n_permutations``
    random orders; with ``antithetic=True`` every order is paired with its reverse (Mitchell et
    al. 2022), so ``n_permutations`` is rounded up to an even number. Both versions satisfy
    efficiency exactly: the scores sum to f(all) − f(none) (each permutation telescopes).

    Cost: exactly 2^n forward passes when exact (one batched scorer call); at most
    ``n_permutations·(n−1) + 2`` when sampled (repeated coalitions come from the cache).
    Returns an Attribution with ``extras``: ``full_value``, ``empty_value``, ``exact`` and, when
    sampled, ``std_errors`` (per-unit standard error of the mean) and ``n_permutations``.
    """
    check_units(scorer)
    n = scorer.n_units
    use_exact = n <= EXACT_AUTO_MAX if exact is None else bool(exact)
    if use_exact and n > EXACT_HARD_MAX:
        raise InputError(
            f"exact Shapley over {n} units needs 2^{n} model calls; use exact=False (permutation "
            f"sampling) or 'kernel_shap', or group the input into at most {EXACT_HARD_MAX} units"
        )
    if not use_exact:
        return _permutation_shapley(scorer, n_permutations, antithetic, seed)

    masks = all_coalitions(n)
    with measure(scorer) as cost:
        values = scorer(masks)
    phi = shapley_from_table(values, n)
    params = {"exact": True}
    return Attribution.from_scorer(
        scorer,
        phi,
        "shapley",
        params,
        cost,
        full_value=float(values[-1]),
        empty_value=float(values[0]),
        exact=True,
    )


def _permutation_shapley(
    scorer: Scorer, n_permutations: int, antithetic: bool, seed: int | None
) -> Attribution:
    n = scorer.n_units
    if n_permutations < 2:
        raise InputError(f"n_permutations must be >= 2 (got {n_permutations}) to estimate errors")
    rng = np.random.default_rng(seed)
    if antithetic:
        half = -(-n_permutations // 2)
        base = random_permutations(rng, half, n)
        perms = np.concatenate([base, base[:, ::-1]])  # pair p with p + half
    else:
        perms = random_permutations(rng, n_permutations, n)
    m = len(perms)
    # rank[p, i] = position of unit i in permutation p; coalition k of p = units ranked below k
    rank = np.argsort(perms, axis=1)
    masks = prefix_masks(rank)  # (m, n+1, n)
    with measure(scorer) as cost:
        values = scorer(masks.reshape(-1, n)).reshape(m, n + 1)
    # marginal contribution of unit i in permutation p: v(first rank+1) − v(first rank)
    contrib = marginal_contributions(values, rank)
    # independent samples: antithetic pairs are averaged first
    samples = 0.5 * (contrib[: m // 2] + contrib[m // 2 :]) if antithetic else contrib
    phi = samples.mean(axis=0)
    if len(samples) > 1:
        std_errors = samples.std(axis=0, ddof=1) / np.sqrt(len(samples))
    else:  # a single antithetic pair: no spread to estimate an error from
        std_errors = np.full(n, np.nan)
    params = {"exact": False, "n_permutations": m, "antithetic": antithetic, "seed": seed}
    return Attribution.from_scorer(
        scorer,
        phi,
        "shapley",
        params,
        cost,
        full_value=float(values[0, -1]),
        empty_value=float(values[0, 0]),
        exact=False,
        std_errors=std_errors,
        n_permutations=m,
    )
