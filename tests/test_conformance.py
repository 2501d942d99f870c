"""Every registered method passes the conformance suite; the suite catches broken methods."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

# importing the methods package registers every method; the generic perturbation modules are
# imported explicitly too, in case the package does not import them (yet)
import attribkit.methods
import attribkit.methods.perturbation.kernel_shap
import attribkit.methods.perturbation.lasso_surrogate
import attribkit.methods.perturbation.lime
import attribkit.methods.perturbation.rise
import attribkit.methods.perturbation.shapley  # noqa: F401
from attribkit.core.attribution import Attribution
from attribkit.core.cost import Cost, measure
from attribkit.core.gradient import GradientScorer
from attribkit.core.registry import MethodSpec, check_units, list_methods
from attribkit.core.scorer import Scorer
from attribkit.testing import (
    check_method,
    iter_checks,
    toy_gradient_scorer,
    toy_params,
    toy_scorer,
)

SPECS = list_methods()
METHODS = [spec.name for spec in SPECS if spec.kind != "generation"]


@pytest.mark.parametrize("spec", SPECS, ids=[f"{s.kind}:{s.name}" for s in SPECS])
def test_registered_method_conforms(spec: MethodSpec) -> None:
    check_method(spec, **toy_params(spec.kind, spec.name))


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("shapley", {"exact": False, "n_permutations": 6}),
        ("kernel_shap", {"n_samples": 20}),
        ("rise", {"n_masks": 40, "center": True}),
        ("lime", {"n_samples": 30}),
        ("lasso_surrogate", {"n_ablations": 16, "keep_prob": 0.3}),
    ],
)
def test_registered_method_conforms_with_params(name: str, params: dict[str, Any]) -> None:
    check_method(name, **params)


def test_the_generic_methods_are_registered() -> None:
    assert {"loo", "shapley", "kernel_shap", "lime", "lasso_surrogate", "rise"} <= set(METHODS)
    kinds = {spec.name: spec.kind for spec in list_methods()}
    assert kinds["kernel_shap"] == kinds["rise"] == "perturbation"


def test_iter_checks_names_every_check() -> None:
    names = [name for name, _ in iter_checks("loo")]
    assert names == [
        "spec",
        "output",
        "deterministic",
        "cost",
        "round_trip",
        "one_unit",
        "nan_scorer",
    ]


# --- the suite on deliberately broken methods ----------------------------------------------------
def spec_of(fn: Any, kind: str = "perturbation") -> MethodSpec:
    """An unregistered MethodSpec named after the function (the registry stays untouched)."""
    return MethodSpec(fn.__name__, fn, kind, "n forward passes", "Nobody, 'Test', 2024")  # type: ignore[arg-type]


def occlusion_like(scorer: Scorer, *, seed: int | None = 0) -> Attribution:
    """A correct toy method: f(all) − f(all without i), with a seeded random tie-break."""
    check_units(scorer)
    n = scorer.n_units
    with measure(scorer) as cost:
        values = scorer(np.vstack([np.ones(n, dtype=bool), ~np.eye(n, dtype=bool)]))
    jitter = np.random.default_rng(seed).random(n) * 1e-9
    return Attribution.from_scorer(
        scorer, values[0] - values[1:] + jitter, "occlusion_like", {}, cost
    )


def test_a_correct_method_passes() -> None:
    check_method(spec_of(occlusion_like))


def fails(spec: MethodSpec, check: str, match: str = "") -> None:
    with pytest.raises(AssertionError, match=f"fails check '{check}'.*{match}"):
        check_method(spec)


def test_detects_unseeded_randomness() -> None:
    def unseeded(scorer: Scorer, *, seed: int | None = 0) -> Attribution:
        """Ignores its seed."""
        a = occlusion_like(scorer, seed=seed)
        a.scores = a.scores + np.random.default_rng().random(scorer.n_units)
        a.method = "unseeded"
        return a

    fails(spec_of(unseeded), "deterministic")


def test_detects_made_up_cost() -> None:
    def made_up_cost(scorer: Scorer) -> Attribution:
        """Reports a cost it did not measure."""
        a = occlusion_like(scorer)
        a.cost, a.method = Cost(forward_passes=1, seconds=0.1), "made_up_cost"
        return a

    fails(spec_of(made_up_cost), "cost", "forward_passes=1")


def test_detects_cache_hits_counted_as_passes() -> None:
    def counts_hits(scorer: Scorer) -> Attribution:
        """Counts cached answers as forward passes."""
        a = occlusion_like(scorer)
        a.cost.forward_passes += a.cost.cache_hits
        a.method = "counts_hits"
        return a

    fails(spec_of(counts_hits), "cost")


def test_detects_wrong_shape_and_infinities() -> None:
    def too_few(scorer: Scorer) -> Attribution:
        """One score short."""
        check_units(scorer)
        with measure(scorer) as cost:
            scorer.full()
        return Attribution(
            list(scorer.units)[:-1], np.zeros(scorer.n_units - 1), "too_few", cost=cost
        )

    def infinite(scorer: Scorer) -> Attribution:
        """Infinite scores."""
        a = occlusion_like(scorer)
        a.scores[0], a.method = np.inf, "infinite"
        return a

    fails(spec_of(too_few), "output", "shape")
    fails(spec_of(infinite), "output", "infinities")


def test_detects_missing_input_checks() -> None:
    def no_check(scorer: Scorer) -> Attribution:
        """Never calls check_units, so a single unit gets a meaningless score."""
        n = scorer.n_units
        with measure(scorer) as cost:
            values = scorer(np.vstack([np.ones(n, dtype=bool), ~np.eye(n, dtype=bool)]))
        return Attribution.from_scorer(scorer, values[0] - values[1:], "no_check", {}, cost)

    fails(spec_of(no_check), "one_unit", "nothing was raised")


def test_detects_swallowed_scorer_errors() -> None:
    def swallows(scorer: Scorer) -> Attribution:
        """Turns a failing model into zeros."""
        check_units(scorer)
        with measure(scorer) as cost:
            try:
                values = scorer(~np.eye(scorer.n_units, dtype=bool))
            except ValueError:
                values = np.zeros(scorer.n_units)
        return Attribution.from_scorer(scorer, -values, "swallows", {}, cost)

    fails(spec_of(swallows), "nan_scorer")


def test_detects_extras_that_are_not_json() -> None:
    def opaque(scorer: Scorer) -> Attribution:
        """Keeps an object in its extras."""
        a = occlusion_like(scorer)
        a.extras["model"], a.method = object(), "opaque"
        return a

    fails(spec_of(opaque), "round_trip", "JSON")


def test_reports_unexpected_exceptions_as_failures() -> None:
    def crashes(scorer: Scorer) -> Attribution:
        """Divides by zero."""
        check_units(scorer)
        raise ZeroDivisionError("oops")

    fails(spec_of(crashes), "output", "ZeroDivisionError")


# --- gradient methods ------------------------------------------------------------------------------
def grad_times_input(scorer: GradientScorer) -> Attribution:
    """A correct toy gradient method: (x − baseline)·∇f(x), summed per unit."""
    check_units(scorer)
    with measure(scorer) as cost:
        _, grad = scorer.gradient(scorer.x[None])
    scores = scorer.to_units((scorer.x - scorer.baseline) * grad[0])
    return Attribution.from_scorer(scorer, scores, "grad_times_input", {}, cost)


def test_a_correct_gradient_method_passes() -> None:
    check_method(spec_of(grad_times_input, kind="gradient"))


def test_detects_a_gradient_method_bypassing_the_scorer() -> None:
    def bypass(scorer: GradientScorer) -> Attribution:
        """Calls the model directly, so its cost is not counted."""
        check_units(scorer)
        x = scorer.x[None].clone().requires_grad_(True)
        with measure(scorer) as cost:
            scorer.value(scorer.x[None])
            (g,) = torch.autograd.grad(scorer.forward_fn(x).sum(), x)
        scores = scorer.to_units(scorer.x * g[0])
        return Attribution.from_scorer(scorer, scores, "bypass", {}, cost)

    fails(spec_of(bypass, kind="gradient"), "cost", "model received")


def test_toy_scorers() -> None:
    s = toy_scorer()
    assert s.n_units == 6 and np.isfinite(s(np.eye(6, dtype=bool))).all()
    g = toy_gradient_scorer()
    assert g.n_units == 4 and g.value(g.x[None]).shape == (1,)
