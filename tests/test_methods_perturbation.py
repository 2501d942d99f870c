"""Axioms and recovery properties of the generic perturbation methods (any Units + Scorer)."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest

from attribkit.core.errors import InputError
from attribkit.core.scorer import Scorer
from attribkit.core.units import FeatureUnits, TextUnits
from attribkit.methods.perturbation.kernel_shap import kernel_shap, kernel_shap_coalitions
from attribkit.methods.perturbation.lasso_surrogate import lasso_surrogate
from attribkit.methods.perturbation.lime import lime
from attribkit.methods.perturbation.loo import leave_one_out
from attribkit.methods.perturbation.rise import rise
from attribkit.methods.perturbation.shapley import shapley

RNG = np.random.default_rng(1)
X10 = RNG.normal(size=10)
W10 = RNG.normal(size=10)


def nonlinear10(z: np.ndarray) -> np.ndarray:
    """A 10-feature function with pairwise and higher-order interactions."""
    return (
        z @ W10
        + 0.8 * z[:, 0] * z[:, 1]
        - np.tanh(z[:, 2] * z[:, 3] * z[:, 4])
        + 0.5 * np.sin(z[:, 5] + z[:, 6]) * z[:, 7]
        + 0.3 * z[:, 8] ** 2 * z[:, 9]
    )


def nonlinear_scorer() -> Scorer:
    return Scorer(FeatureUnits(X10), nonlinear10)


def linear_scorer(n: int, seed: int = 0) -> tuple[Scorer, np.ndarray]:
    """A linear model with a non-zero baseline; returns the scorer and w_i·(x_i − b_i)."""
    rng = np.random.default_rng(seed)
    x, b, w = rng.normal(size=n), rng.normal(size=n), rng.normal(size=n)
    scorer = Scorer(FeatureUnits(x, baseline=b), lambda z: z @ w + 0.7)
    return scorer, w * (x - b)


class CallCounting(Scorer):
    """A Scorer that also counts how many times a method called it."""

    calls = 0

    def __call__(self, masks):  # type: ignore[no-untyped-def]
        self.calls += 1
        return super().__call__(masks)


@pytest.fixture(scope="module")
def exact10() -> np.ndarray:
    return shapley(nonlinear_scorer()).scores


# --- efficiency, symmetry, dummy ---------------------------------------------------------------
def test_exact_shapley_efficiency() -> None:
    scorer = nonlinear_scorer()
    a = shapley(scorer)
    assert a.extras["exact"] is True
    assert a.scores.sum() == pytest.approx(scorer.full() - scorer.empty(), abs=1e-10)
    assert a.extras["full_value"] - a.extras["empty_value"] == pytest.approx(a.scores.sum())


@pytest.mark.parametrize("antithetic", [True, False])
def test_permutation_shapley_efficiency_holds_exactly(antithetic: bool) -> None:
    scorer = nonlinear_scorer()
    a = shapley(scorer, exact=False, n_permutations=6, antithetic=antithetic, seed=3)
    assert a.extras["exact"] is False
    assert a.scores.sum() == pytest.approx(scorer.full() - scorer.empty(), abs=1e-10)


def test_kernel_shap_efficiency_holds_exactly_when_sampled() -> None:
    scorer = nonlinear_scorer()
    a = kernel_shap(scorer, n_samples=40, seed=2)
    assert a.extras["exact"] is False
    assert a.scores.sum() == pytest.approx(scorer.full() - scorer.empty(), abs=1e-10)


def test_exact_shapley_symmetry_and_dummy() -> None:
    # units 0 and 1 play identical roles; unit 3 never changes the output
    x = np.array([2.0, 2.0, -1.0, 5.0, 0.5])

    def fn(z: np.ndarray) -> np.ndarray:
        return z[:, 0] * z[:, 1] + z[:, 0] + z[:, 1] + np.tanh(z[:, 2] * z[:, 4]) + z[:, 4]

    a = shapley(Scorer(FeatureUnits(x), fn))
    assert a.scores[0] == pytest.approx(a.scores[1], abs=1e-12)
    assert a.scores[3] == pytest.approx(0.0, abs=1e-12)
    assert a.scores[0] == pytest.approx(2.0 + 2.0, abs=1e-12)  # x0 + half of the x0·x1 term


def test_shapley_works_on_text_units() -> None:
    units = TextUnits.words("the cat sat on the mat")
    a = shapley(Scorer(units, lambda texts: [float("cat" in t) for t in texts]))
    assert a.ranking[0] == 1
    assert a.scores[1] == pytest.approx(1.0)
    assert np.delete(a.scores, 1) == pytest.approx(np.zeros(5))


# --- linear models: exact recovery -----------------------------------------------------------
def test_loo_recovers_linear_coefficients() -> None:
    scorer, truth = linear_scorer(7)
    np.testing.assert_allclose(leave_one_out(scorer).scores, truth, atol=1e-10)


def test_exact_shapley_recovers_linear_coefficients() -> None:
    scorer, truth = linear_scorer(8)
    np.testing.assert_allclose(shapley(scorer).scores, truth, atol=1e-10)


@pytest.mark.parametrize(("n", "n_samples"), [(8, None), (16, 120), (40, 200)])
def test_kernel_shap_recovers_linear_coefficients(n: int, n_samples: int | None) -> None:
    scorer, truth = linear_scorer(n, seed=n)
    a = kernel_shap(scorer, n_samples=n_samples)
    np.testing.assert_allclose(a.scores, truth, atol=1e-9)


def test_permutation_shapley_is_exact_on_linear_models() -> None:
    scorer, truth = linear_scorer(30)
    a = shapley(scorer, n_permutations=4)
    np.testing.assert_allclose(a.scores, truth, atol=1e-10)
    np.testing.assert_allclose(a.extras["std_errors"], 0.0, atol=1e-10)


def test_lime_recovers_sign_and_order_on_a_linear_model() -> None:
    x = np.ones(6)
    w = np.array([3.0, -2.0, 1.0, -0.5, 0.25, 4.0])
    a = lime(Scorer(FeatureUnits(x), lambda z: z @ w), n_samples=500)
    assert np.array_equal(np.sign(a.scores), np.sign(w))
    assert np.array_equal(np.argsort(a.scores), np.argsort(w))
    assert a.extras["r2"] > 0.99


def test_lasso_surrogate_recovers_sparse_support() -> None:
    n = 20
    w = np.zeros(n)
    w[[2, 5, 7]] = [3.0, -2.0, 1.5]
    a = lasso_surrogate(Scorer(FeatureUnits(np.ones(n)), lambda z: z @ w + 1.0), seed=4)
    assert set(np.flatnonzero(np.abs(a.scores) > 0.1)) == {2, 5, 7}
    np.testing.assert_allclose(a.scores[[2, 5, 7]], w[[2, 5, 7]], atol=0.1)
    assert a.extras["r2"] > 0.99
    assert a.extras["intercept"] == pytest.approx(1.0, abs=0.1)


def test_lasso_surrogate_span_tokens_rescales() -> None:
    w = np.array([3.0, -2.0, 0.0, 1.0])

    def run(scale: float, tokens: int) -> np.ndarray:
        scorer = Scorer(FeatureUnits(np.ones(4)), lambda z: scale * (z @ w))
        return lasso_surrogate(scorer, span_tokens=tokens).scores

    np.testing.assert_allclose(run(5.0, 5), 5.0 * run(1.0, 1), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("center", [False, True])
def test_rise_ranks_a_dominant_unit_first(center: bool) -> None:
    w = np.array([0.3, -0.2, 0.1, 5.0, 0.2, 0.4, -0.1, 0.3])
    scorer = Scorer(FeatureUnits(np.ones(8)), lambda z: z @ w + 10.0 + 0.1 * np.tanh(z[:, 0]))
    a = rise(scorer, n_masks=300, center=center)
    assert a.ranking[0] == 3


def test_rise_centered_estimates_the_linear_effect() -> None:
    w = np.array([2.0, -1.0, 0.5, 0.0])
    a = rise(Scorer(FeatureUnits(np.ones(4)), lambda z: z @ w + 100.0), n_masks=2000, center=True)
    np.testing.assert_allclose(a.scores, w, atol=0.15)  # the offset of 100 cancels exactly
    b = rise(Scorer(FeatureUnits(np.ones(4)), lambda z: z @ w + 100.0), n_masks=2000)
    assert b.scores.min() > 90  # the paper's estimator carries the offset: E[f | unit kept]


def test_rise_centered_marks_units_never_removed_as_unscored() -> None:
    a = rise(Scorer(FeatureUnits(np.ones(3)), lambda z: z.sum(axis=1)), n_masks=1, center=True)
    assert np.isnan(a.scores).all()


# --- convergence to exact Shapley ---------------------------------------------------------------
def _mean_error(run, budgets, exact, seeds=range(6)) -> list[float]:  # type: ignore[no-untyped-def]
    scale = np.linalg.norm(exact)
    return [
        float(np.mean([np.linalg.norm(run(b, s) - exact) / scale for s in seeds])) for b in budgets
    ]


def test_kernel_shap_converges_to_exact_shapley(exact10: np.ndarray) -> None:
    errors = _mean_error(
        lambda b, s: kernel_shap(nonlinear_scorer(), n_samples=b, seed=s).scores,
        [40, 150, 600],
        exact10,
    )
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.05
    full = kernel_shap(nonlinear_scorer())  # default budget covers all 2^10 − 2 coalitions
    assert full.extras["exact"] is True
    np.testing.assert_allclose(full.scores, exact10, atol=1e-10)


def test_permutation_shapley_converges_to_exact_shapley(exact10: np.ndarray) -> None:
    errors = _mean_error(
        lambda b, s: shapley(nonlinear_scorer(), exact=False, n_permutations=b, seed=s).scores,
        [4, 20, 200],
        exact10,
    )
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.05


def test_permutation_standard_errors_are_calibrated(exact10: np.ndarray) -> None:
    small = shapley(nonlinear_scorer(), exact=False, n_permutations=10, seed=0)
    large = shapley(nonlinear_scorer(), exact=False, n_permutations=200, seed=0)
    se_small, se_large = small.extras["std_errors"], large.extras["std_errors"]
    # antithetic pairs cancel pairwise interactions exactly: only units in the 3-way terms
    # (2, 3, 4 and 5, 6, 7) have any sampling error
    noisy = se_large > 1e-12
    assert set(np.flatnonzero(noisy)) <= {2, 3, 4, 5, 6, 7} and noisy[[2, 3, 4]].all()
    assert np.all(se_large[[2, 3, 4]] < se_small[[2, 3, 4]])
    assert np.all(np.abs(large.scores - exact10)[noisy] < 4 * se_large[noisy])
    np.testing.assert_allclose(large.scores[~noisy], exact10[~noisy], atol=1e-10)


# --- cost formulas and batching ---------------------------------------------------------------
def test_costs_match_the_formulas() -> None:
    n = 7
    assert shapley(Scorer(FeatureUnits(X10[:n]), nonlinear7)).cost.forward_passes == 2**n
    assert leave_one_out(Scorer(FeatureUnits(X10[:n]), nonlinear7)).cost.forward_passes == n + 1
    ks = kernel_shap(Scorer(FeatureUnits(X10[:n]), nonlinear7))
    assert ks.cost.forward_passes == 2**n and ks.extras["exact"] is True
    ks = kernel_shap(nonlinear_scorer(), n_samples=100)
    assert ks.cost.forward_passes == 102 and ks.extras["n_coalitions"] == 100
    perm = shapley(nonlinear_scorer(), exact=False, n_permutations=8)
    assert perm.cost.forward_passes + perm.cost.cache_hits == 8 * 11
    assert perm.cost.forward_passes <= 8 * (10 - 1) + 2
    for a, bound in [
        (lasso_surrogate(nonlinear_scorer()), 64),
        (rise(nonlinear_scorer(), n_masks=200), 200),
        (lime(nonlinear_scorer(), n_samples=300), 300),
    ]:
        assert 0 < a.cost.forward_passes <= bound
        assert a.cost.forward_passes + a.cost.cache_hits == bound


def nonlinear7(z: np.ndarray) -> np.ndarray:
    return nonlinear10(np.pad(z, ((0, 0), (0, 3))))


@pytest.mark.parametrize(
    ("method", "params"),
    [
        (shapley, {}),
        (shapley, {"exact": False, "n_permutations": 6}),
        (kernel_shap, {"n_samples": 50}),
        (lime, {"n_samples": 50}),
        (lasso_surrogate, {}),
        (rise, {"n_masks": 50}),
    ],
)
def test_each_method_calls_the_scorer_once(method, params) -> None:  # type: ignore[no-untyped-def]
    scorer = CallCounting(FeatureUnits(X10), nonlinear10, batch_size=8)
    a = method(scorer, **params)
    assert scorer.calls == 1
    assert a.cost.batches == -(-a.cost.forward_passes // 8)


# --- sampling details and errors ---------------------------------------------------------------
@pytest.mark.parametrize(("n", "budget"), [(10, 30), (10, 300), (9, 100), (25, 500), (2, 2)])
def test_kernel_shap_coalitions(n: int, budget: int) -> None:
    masks, weights, sizes = kernel_shap_coalitions(n, budget, np.random.default_rng(0))
    assert 0 < len(masks) <= budget
    assert len(np.unique(masks, axis=0)) == len(masks)
    kept = masks.sum(axis=1)
    assert kept.min() >= 1 and kept.max() <= n - 1
    assert weights.sum() == pytest.approx(1.0) and np.all(weights > 0)
    for s in sizes:  # enumerated sizes are complete
        assert (kept == s).sum() == comb(n, s)


def test_antithetic_rounds_up_to_pairs() -> None:
    a = shapley(nonlinear_scorer(), exact=False, n_permutations=5)
    assert a.extras["n_permutations"] == 6 == a.params["n_permutations"]
    assert len(a.extras["std_errors"]) == 10


def test_same_seed_same_scores_other_seed_other_scores() -> None:
    for method, params in [
        (shapley, {"exact": False, "n_permutations": 6}),
        (kernel_shap, {"n_samples": 50}),
        (lime, {"n_samples": 50}),
        (lasso_surrogate, {}),
        (rise, {"n_masks": 50}),
    ]:
        a = method(nonlinear_scorer(), seed=1, **params).scores
        b = method(nonlinear_scorer(), seed=1, **params).scores
        c = method(nonlinear_scorer(), seed=2, **params).scores
        assert np.array_equal(a, b)
        assert not np.array_equal(a, c)


@pytest.mark.parametrize(
    ("method", "params"),
    [
        (shapley, {"exact": False, "n_permutations": 1}),
        (kernel_shap, {"n_samples": 0}),
        (lime, {"n_samples": 1}),
        (lime, {"kernel_width": 0.0}),
        (lasso_surrogate, {"n_ablations": 1}),
        (lasso_surrogate, {"keep_prob": 1.0}),
        (lasso_surrogate, {"span_tokens": 0}),
        (rise, {"keep_prob": 0.0}),
        (rise, {"n_masks": 0}),
    ],
)
def test_bad_parameters_raise_input_error(method, params) -> None:  # type: ignore[no-untyped-def]
    scorer = nonlinear_scorer()
    with pytest.raises(InputError):
        method(scorer, **params)
    assert scorer.cost.forward_passes == 0


def test_exact_shapley_refuses_too_many_units() -> None:
    scorer = Scorer(FeatureUnits(np.ones(21)), lambda z: z.sum(axis=1))
    with pytest.raises(InputError, match="exact=False"):
        shapley(scorer, exact=True)
    assert scorer.cost.forward_passes == 0
    a = shapley(scorer)  # above 12 units the default samples permutations
    assert a.extras["exact"] is False
    np.testing.assert_allclose(a.scores, 1.0, atol=1e-12)
