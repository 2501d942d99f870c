"""Numerics shared by several methods, written once: the integrated-gradients quadrature and
straight path, and the random masks, subsets and permutations of the perturbation methods.

No model calls here. Randomness comes only from the ``np.random.Generator`` passed in, and each
helper draws exactly what the code it replaced drew, so seeded results are unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

__all__ = [
    "RULES",
    "Rule",
    "bernoulli_masks",
    "marginal_contributions",
    "path_points",
    "prefix_masks",
    "quadrature",
    "quadrature_steps",
    "random_permutations",
    "random_subsets",
]

# --- integrated gradients: quadrature and path ---------------------------------------------------
Rule = Literal["gauss_legendre", "riemann_trapezoid", "riemann_middle"]
RULES: tuple[str, ...] = ("gauss_legendre", "riemann_trapezoid", "riemann_middle")


def quadrature(rule: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes in [0, 1] and weights summing to 1 for ``rule`` with ``n`` points
    (``"riemann_trapezoid"``: n points including both ends). Fresh copies of cached arrays
    (Gauss-Legendre nodes cost a noticeable share of a small model's IG call)."""
    nodes, weights = _quadrature(rule, n)
    return nodes.copy(), weights.copy()


@functools.lru_cache(maxsize=64)
def _quadrature(rule: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    if rule == "gauss_legendre":
        t, w = np.polynomial.legendre.leggauss(n)
        nodes, weights = (t + 1.0) / 2.0, w / 2.0
    elif rule == "riemann_middle":
        nodes, weights = (np.arange(n) + 0.5) / n, np.full(n, 1.0 / n)
    else:  # riemann_trapezoid: n points including both ends
        weights = np.full(n, 1.0 / (n - 1))
        weights[0] = weights[-1] = 0.5 / (n - 1)
        nodes = np.linspace(0.0, 1.0, n)
    nodes.flags.writeable = weights.flags.writeable = False  # the cache's own copies
    return nodes, weights


def quadrature_steps(rule: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`quadrature` counted in steps: the trapezoid rule uses ``steps`` intervals
    (steps + 1 nodes), so that doubling the steps keeps every node already evaluated; the other
    rules use ``steps`` nodes."""
    if rule == "riemann_trapezoid":
        return quadrature(rule, steps + 1)
    return quadrature(rule, steps)


def path_points(
    x: torch.Tensor, baseline: torch.Tensor, alphas: np.ndarray | Sequence[float] | torch.Tensor
) -> torch.Tensor:
    """Points x' + α (x − x') of the straight path from ``baseline`` x' to ``x``, one per α:
    shape (len(alphas), *x.shape), in x's dtype and on its device (α rounded to that dtype)."""
    a = torch.as_tensor(alphas).to(device=x.device, dtype=x.dtype).reshape(-1, *([1] * x.dim()))
    return baseline.unsqueeze(0) + a * (x - baseline).unsqueeze(0)


# --- random masks, subsets and permutations ------------------------------------------------------
def bernoulli_masks(
    rng: np.random.Generator, shape: int | tuple[int, ...], keep_prob: float
) -> np.ndarray:
    """Boolean masks of ``shape`` whose entries are kept (True) independently with probability
    ``keep_prob`` (one ``rng.random(shape)`` draw)."""
    return rng.random(shape) < keep_prob


def random_subsets(rng: np.random.Generator, n: int, sizes: np.ndarray) -> np.ndarray:
    """One uniformly random subset of ``sizes[i]`` of ``n`` units per row: a (len(sizes), n)
    boolean array (ranks of one ``rng.random((len(sizes), n))`` draw below the size)."""
    ranks = np.argsort(np.argsort(rng.random((len(sizes), n)), axis=1), axis=1)
    return ranks < np.asarray(sizes)[:, None]


def random_permutations(rng: np.random.Generator, n_permutations: int, n: int) -> np.ndarray:
    """(n_permutations, n) uniformly random orders of ``n`` items (row p lists item indices in
    order), from one ``rng.random`` draw."""
    return np.argsort(rng.random((n_permutations, n)), axis=1)


def prefix_masks(rank: np.ndarray) -> np.ndarray:
    """The coalitions along each permutation: ``rank[p, i]`` is item i's position in permutation
    p (``np.argsort(perms, axis=1)``); returns (P, n + 1, n) booleans, coalition k of p keeping
    the items ranked below k (k = 0: empty, k = n: all)."""
    return rank[:, None, :] < np.arange(rank.shape[1] + 1)[None, :, None]


def marginal_contributions(values: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """(P, n) marginal contribution of item i in permutation p, v(first rank+1) − v(first rank),
    from ``values`` (P, n + 1) of the :func:`prefix_masks` coalitions."""
    return np.take_along_axis(values, rank + 1, axis=1) - np.take_along_axis(values, rank, axis=1)
