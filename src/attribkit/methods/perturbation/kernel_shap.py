"""KernelSHAP: Shapley values as the solution of a weighted linear regression over coalitions."""

from __future__ import annotations

from itertools import combinations
from math import comb

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.cost import measure
from attribkit.core.errors import InputError
from attribkit.core.registry import check_units
from attribkit.core.scorer import Scorer
from attribkit.methods.numerics import random_subsets


def _size_masks(n: int, size: int) -> np.ndarray:
    """Every coalition of ``size`` units out of ``n``, as a (C(n, size), n) boolean array."""
    idx = np.array(list(combinations(range(n), size)), dtype=np.int64).reshape(-1, size)
    masks = np.zeros((len(idx), n), dtype=bool)
    np.put_along_axis(masks, idx, True, axis=1)
    return masks


def kernel_shap_coalitions(
    n: int, n_samples: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """The coalitions KernelSHAP evaluates and their regression weights, as in the ``shap`` package.

    Sizes are visited from the outside in (1 and n−1, then 2 and n−2, ...); a size pair is
    enumerated in full while the budget covers its share of the Shapley kernel mass. The rest of
    the budget samples sizes from the remaining kernel mass and coalitions uniformly within a
    size, each together with its complement (paired sampling); a coalition drawn again adds
    weight instead of a row. Returns ``(masks, weights, enumerated_sizes)``: at most
    ``n_samples`` distinct coalitions, neither empty nor full, weights summing to 1. No model calls.
    """
    n_sizes = n // 2  # = ceil((n−1)/2): sizes 1..n_sizes, paired with n−size
    n_paired = (n - 1) // 2  # the middle size of an even n has no distinct complement size
    kernel = np.array([(n - 1.0) / (s * (n - s)) for s in range(1, n_sizes + 1)])
    kernel[:n_paired] *= 2
    kernel /= kernel.sum()

    blocks: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    enumerated: list[int] = []
    left = n_samples
    remaining = kernel.copy()
    n_full = 0
    for size in range(1, n_sizes + 1):
        paired = size <= n_paired
        count = comb(n, size) * (2 if paired else 1)
        if left * remaining[size - 1] / count < 1.0 - 1e-8:
            break
        n_full += 1
        left -= count
        if remaining[size - 1] < 1.0:
            remaining /= 1.0 - remaining[size - 1]
        masks = _size_masks(n, size)
        if paired:
            masks = np.concatenate([masks, ~masks])
            enumerated += [size, n - size]
        else:
            enumerated.append(size)
        blocks.append(masks)
        weights.append(np.full(len(masks), kernel[size - 1] / count))

    if n_full < n_sizes and left > 0:
        probs = kernel.copy()
        probs[:n_paired] /= 2  # each paired draw adds two coalitions
        probs = probs[n_full:] / probs[n_full:].sum()
        masks, counts = _sample_paired(rng, n, left, probs, n_full, n_paired)
        blocks.append(masks)
        weights.append(counts * (kernel[n_full:].sum() / counts.sum()))
    if not blocks:
        return np.zeros((0, n), dtype=bool), np.zeros(0), []
    return np.concatenate(blocks), np.concatenate(weights), sorted(enumerated)


def _sample_paired(
    rng: np.random.Generator, n: int, left: int, probs: np.ndarray, n_full: int, n_paired: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draw coalitions (with complements for paired sizes) until ``left`` distinct ones are found.

    Returns the distinct coalitions and how many times each was drawn. At most ``4·left`` draws.
    """
    draws = np.zeros((0, n), dtype=bool)
    while True:
        sizes = n_full + 1 + rng.choice(len(probs), size=left, p=probs)
        draws = np.concatenate([draws, random_subsets(rng, n, sizes)])
        _, first, inverse = np.unique(
            np.packbits(draws, axis=1), axis=0, return_index=True, return_inverse=True
        )
        inverse = inverse.reshape(-1)
        is_new = first[inverse] == np.arange(len(draws))
        paired = draws.sum(axis=1) <= n_paired
        found = np.cumsum(is_new * (1 + paired))
        if found[-1] >= left or len(draws) >= 4 * left:
            break
    stop = int(np.searchsorted(found, left)) if found[-1] >= left else len(draws) - 1
    draws, paired = draws[: stop + 1], paired[: stop + 1]
    keep_last_complement = found[stop] <= left
    # count repeated draws of each distinct coalition, in order of first appearance
    _, first, inverse, counts = np.unique(
        np.packbits(draws, axis=1),
        axis=0,
        return_index=True,
        return_inverse=True,
        return_counts=True,
    )
    order = np.argsort(first)
    originals, counts = draws[first[order]], counts[order].astype(float)
    pair_rows = paired[first[order]]
    if not keep_last_complement:
        pair_rows = pair_rows & (first[order] != stop)
    masks = np.concatenate([originals, ~originals[pair_rows]])
    return masks, np.concatenate([counts, counts[pair_rows]])


def solve_constrained(
    masks: np.ndarray, weights: np.ndarray, values: np.ndarray, empty: float, full: float
) -> np.ndarray:
    """Weighted least squares for v(S) ≈ empty + Σ_{i∈S} φ_i subject to Σ φ_i = full − empty.

    The constraint is enforced exactly by eliminating the last unit's score (as ``shap`` does).
    """
    n = masks.shape[1]
    z = masks.astype(float)
    total = full - empty
    root = np.sqrt(weights)[:, None]
    design = root * (z[:, :-1] - z[:, -1:])
    target = root[:, 0] * (values - empty - z[:, -1] * total)
    phi = np.empty(n)
    phi[:-1] = np.linalg.lstsq(design, target, rcond=None)[0]
    phi[-1] = total - phi[:-1].sum()
    return phi


def kernel_shap(
    scorer: Scorer, *, n_samples: int | None = None, seed: int | None = 0
) -> Attribution:
    """KernelSHAP estimate of every unit's Shapley value.

    Draws ``n_samples`` coalitions from the Shapley kernel with paired (complement) sampling,
    enumerating whole coalition sizes when the budget allows (as the ``shap`` package does), and
    solves the kernel-weighted least squares with efficiency enforced exactly: the scores sum to
    f(all) − f(none). When every coalition fits the budget (2^n − 2 <= n_samples) the result is
    the exact Shapley value; for a linear value function any full-rank sample recovers it exactly.

    Cost: at most ``n_samples + 2`` forward passes in one batched scorer call (default
    ``n_samples = min(2n + 2048, 2^n − 2)``). Returns an Attribution with ``extras``:
    ``full_value``, ``empty_value``, ``n_coalitions`` (distinct coalitions regressed on),
    ``enumerated_sizes`` (coalition sizes covered in full) and ``exact`` (all coalitions used).
    """
    check_units(scorer)
    n = scorer.n_units
    space = (1 << n) - 2
    if n_samples is None:
        n_samples = min(2 * n + 2048, space)
    if n_samples < 1:
        raise InputError(f"n_samples must be >= 1 (got {n_samples}); about 2n + 2048 is typical")
    budget = min(int(n_samples), space)
    rng = np.random.default_rng(seed)
    masks, weights, enumerated = kernel_shap_coalitions(n, budget, rng)
    ends = np.stack([np.zeros(n, dtype=bool), np.ones(n, dtype=bool)])
    with measure(scorer) as cost:
        values = scorer(np.concatenate([ends, masks]))
    empty, full = float(values[0]), float(values[1])
    phi = solve_constrained(masks, weights, values[2:], empty, full)
    return Attribution.from_scorer(
        scorer,
        phi,
        "kernel_shap",
        {"n_samples": int(n_samples), "seed": seed},
        cost,
        full_value=full,
        empty_value=empty,
        n_coalitions=len(masks),
        enumerated_sizes=enumerated,
        exact=len(enumerated) == n - 1,
    )
