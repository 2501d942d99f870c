"""The shared numerics of the methods: IG quadrature and path, random masks, subsets and
permutations (attribkit.methods.numerics)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attribkit.methods.numerics import (
    RULES,
    bernoulli_masks,
    marginal_contributions,
    path_points,
    prefix_masks,
    quadrature,
    quadrature_steps,
    random_permutations,
    random_subsets,
)


@pytest.mark.parametrize("rule", RULES)
def test_quadrature_nodes_in_the_unit_interval_and_weights_sum_to_one(rule: str) -> None:
    nodes, weights = quadrature(rule, 7)
    assert nodes.shape == weights.shape == (7,)
    assert (nodes >= 0).all() and (nodes <= 1).all() and np.isclose(weights.sum(), 1.0)
    assert np.all(np.diff(nodes) > 0)


def test_quadrature_exactness() -> None:
    # Gauss-Legendre with n nodes integrates degree 2n - 1 exactly; ∫_0^1 t^k dt = 1 / (k + 1)
    nodes, weights = quadrature("gauss_legendre", 4)
    for k in range(8):
        assert np.isclose(weights @ nodes**k, 1.0 / (k + 1), rtol=1e-12, atol=1e-14)
    # the trapezoid and midpoint rules are exact for linear functions; the trapezoid has both ends
    for rule in ("riemann_trapezoid", "riemann_middle"):
        nodes, weights = quadrature(rule, 5)
        assert np.isclose(weights @ (3 * nodes + 2), 3.5)
    nodes, _ = quadrature("riemann_trapezoid", 5)
    assert nodes[0] == 0.0 and nodes[-1] == 1.0


def test_quadrature_steps_nests_the_trapezoid() -> None:
    coarse, _ = quadrature_steps("riemann_trapezoid", 4)
    fine, weights = quadrature_steps("riemann_trapezoid", 8)
    assert len(coarse) == 5 and len(fine) == 9 and np.isclose(weights.sum(), 1.0)
    assert set(np.round(coarse, 12)) <= set(np.round(fine, 12))
    for rule in ("gauss_legendre", "riemann_middle"):
        assert np.array_equal(quadrature_steps(rule, 6)[0], quadrature(rule, 6)[0])


def test_path_points_run_from_the_baseline_to_the_input() -> None:
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    base = torch.full_like(x, -1.0)
    points = path_points(x, base, np.array([0.0, 0.25, 1.0]))
    assert points.shape == (3, 2, 2) and points.dtype == x.dtype
    torch.testing.assert_close(points[0], base)
    torch.testing.assert_close(points[1], base + 0.25 * (x - base))
    torch.testing.assert_close(points[2], x)
    assert path_points(x.double(), base.double(), [0.5]).dtype == torch.float64


def test_bernoulli_masks_keep_with_the_given_probability() -> None:
    masks = bernoulli_masks(np.random.default_rng(0), (4000, 5), 0.3)
    assert masks.shape == (4000, 5) and masks.dtype == bool
    assert abs(masks.mean() - 0.3) < 0.02
    again = np.random.default_rng(0).random((4000, 5)) < 0.3  # one draw, as the methods made
    assert np.array_equal(masks, again)


def test_random_subsets_have_the_requested_sizes_and_cover_every_unit() -> None:
    sizes = np.array([0, 1, 3, 6, 6, 2] * 200)
    masks = random_subsets(np.random.default_rng(1), 6, sizes)
    assert masks.shape == (len(sizes), 6)
    assert np.array_equal(masks.sum(axis=1), sizes)
    ones = masks[sizes == 1]
    counts = ones.sum(axis=0)
    assert (counts > 0).all() and counts.max() < 3 * counts.min()  # roughly uniform


def test_permutation_coalitions_and_marginals_telescope() -> None:
    rng = np.random.default_rng(2)
    perms = random_permutations(rng, 5, 4)
    assert all(sorted(p) == [0, 1, 2, 3] for p in perms.tolist())
    rank = np.argsort(perms, axis=1)
    masks = prefix_masks(rank)  # (5, 5, 4)
    assert masks.shape == (5, 5, 4)
    assert np.array_equal(masks.sum(axis=2), np.tile(np.arange(5), (5, 1)))
    for p in range(5):  # coalition k keeps the first k units of the permutation
        for k in range(5):
            assert set(np.flatnonzero(masks[p, k])) == set(perms[p, :k].tolist())
    w = np.array([1.0, -2.0, 0.5, 4.0])
    additive = masks @ w  # v(S) = Σ_{i∈S} w_i: every marginal is the unit's weight
    assert np.allclose(marginal_contributions(additive, rank), np.tile(w, (5, 1)))
    v = np.sin(masks @ np.arange(1.0, 5.0))  # any v: marginals telescope to v(all) − v(∅)
    assert np.allclose(marginal_contributions(v, rank).sum(axis=1), v[:, -1] - v[:, 0])
