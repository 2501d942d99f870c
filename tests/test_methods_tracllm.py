"""TracLLM (informed search + ensemble) on synthetic scorers: recovery, pass counts, budget."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from attribkit.core.attribution import Attribution
from attribkit.core.cost import Budget
from attribkit.core.errors import InputError
from attribkit.core.registry import get_method
from attribkit.core.scorer import Scorer
from attribkit.core.units import FeatureUnits, TextUnits
from attribkit.methods.perturbation.loo import leave_one_out
from attribkit.methods.perturbation.tracllm import full_ranking, tracllm
from attribkit.testing import check_method

Fn = Callable[[np.ndarray], np.ndarray]


def features(n: int, fn: Fn, **kw: object) -> Scorer:
    """A scorer over n features equal to 1 with baseline 0, so ``fn`` receives the masks."""
    return Scorer(FeatureUnits(np.ones(n)), fn, **kw)  # type: ignore[arg-type]


def needle(j: int, n: int, noise: float = 0.0) -> Fn:
    """High iff unit j is kept, plus a weak random linear background."""
    w = noise * np.random.default_rng(j).normal(size=n)
    return lambda z: 3.0 * z[:, j] + z @ w


class Recording(Scorer):
    """A Scorer that also keeps every batch of masks a method sent it."""

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.calls: list[np.ndarray] = []

    def __call__(self, masks):  # type: ignore[no-untyped-def]
        self.calls.append(np.asarray(masks, dtype=bool))
        return super().__call__(masks)


# --- recovery --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "j"), [(10, 7), (50, 31), (200, 123)])
def test_finds_the_needle(n: int, j: int) -> None:
    a = tracllm(features(n, needle(j, n, noise=0.05)))
    assert a.ranking[0] == j
    scored = np.isfinite(a.scores)
    assert 1 <= scored.sum() <= 3 * 5  # only the functions' final lists are scored
    # every pruned unit keeps the score of the group it was pruned in (all scored at level 1)
    pruned = np.asarray(a.extras["pruned_scores"])
    assert np.isfinite(pruned[~scored]).all() and np.isnan(pruned[scored]).all()
    assert a.extras["resolved"] and not a.extras["budget_stopped"]
    order = full_ranking(a)
    assert sorted(order.tolist()) == list(range(n)) and order[0] == j
    assert set(order[: scored.sum()].tolist()) == set(np.nonzero(scored)[0].tolist())


def test_finds_a_needle_passage_in_text() -> None:
    passages = [f"Passage {i} talks about topic number {i}." for i in range(40)]
    passages[26] = "The secret code is 7431."
    scorer = Scorer(
        TextUnits.passages(passages),
        lambda texts: [5.0 if "7431" in t else 0.1 * t.count("topic") for t in texts],
    )
    a = tracllm(scorer)
    assert a.ranking[0] == 26 and a.top(1)[0][0].label == "The secret code is 7431."


def test_denoised_shapley_finds_redundant_injections() -> None:
    """Three copies of an injection, any one suffices, among five weaker independent units:
    leave-one-out sees nothing (removing one copy changes nothing), plain Shapley splits the credit
    three ways (1/3 < 0.4) and misses them; denoised Shapley's top marginals reveal them."""
    n, copies, others = 50, [7, 23, 41], [2, 15, 30, 33, 47]

    def injection(z: np.ndarray) -> np.ndarray:
        return z[:, copies].max(axis=1) + 0.4 * z[:, others].sum(axis=1)

    def top3(funcs: tuple[str, ...], seed: int = 0) -> list[int]:
        a = tracllm(features(n, injection), score_funcs=funcs, seed=seed)
        return sorted(a.ranking[:3].tolist())

    assert top3(("denoised_shapley",)) == copies
    assert sum(top3(("denoised_shapley",), seed) == copies for seed in range(1, 6)) >= 4
    assert top3(("stc", "loo", "denoised_shapley")) == copies  # the default ensemble
    assert top3(("shapley",)) != copies
    loo = tracllm(features(n, injection), score_funcs=("loo",))
    assert set(loo.ranking[:5].tolist()) == set(others)


def test_the_ensemble_finds_an_and_pair_that_stc_misses() -> None:
    """v = z_a·z_b: each unit alone is worth nothing (STC = 0), removing either loses all."""
    n, a_, b_ = 30, 4, 19

    def both(z: np.ndarray) -> np.ndarray:
        return z[:, a_] * z[:, b_] + 0.01 * z.sum(axis=1)

    ens = tracllm(features(n, both))
    assert sorted(ens.ranking[:2].tolist()) == [a_, b_]
    assert set(ens.extras["score_func"][i] for i in (a_, b_)) == {"loo"}
    stc = tracllm(features(n, both), score_funcs=("stc",))
    assert np.nanmax(stc.scores) == pytest.approx(0.01)  # no unit stands out alone


def test_ensemble_is_the_weighted_max_of_the_final_lists() -> None:
    n = 40
    a = tracllm(features(n, needle(11, n, noise=0.3)), loo_weight=3.0)
    expected = np.full(n, np.nan)
    for f, groups in a.extras["final_groups"].items():
        w = 3.0 if f == "loo" else 1.0
        for group, s in zip(groups, a.extras["final_scores"][f], strict=True):
            for i in group:
                expected[i] = np.fmax(expected[i], w * s)
    np.testing.assert_array_equal(a.scores, expected)


# --- the search --------------------------------------------------------------------------------------
def test_dropped_units_are_absent_from_deeper_levels() -> None:
    n = 50
    scorer = Recording(FeatureUnits(np.ones(n)), needle(9, n, noise=0.2))
    a = tracllm(scorer, score_funcs=("loo",))
    assert len(scorer.calls) == a.extras["depth"] == 4  # one scorer call per level
    alive = np.ones(n, dtype=bool)
    for masks in scorer.calls:
        assert not (masks & ~alive).any()  # no mask keeps a unit of a dropped node
        alive = masks[0].copy()  # LOO's first mask is the surviving context
    # each level keeps at most k = 5 groups: the next surviving context is smaller
    assert [int(c[0].sum()) for c in scorer.calls] == [50, 31, 16, 9]


@pytest.mark.parametrize(
    ("n", "levels", "passes"),
    [
        (10, [8, 6], 16),
        (50, [8, 10, 10, 7], 39),
        (200, [8, 10, 10, 10, 10, 7], 61),
        (1000, [8] + [10] * 6 + [9], 85),
    ],
)
def test_loo_pass_counts_match_the_notes_table(n: int, levels: list[int], passes: int) -> None:
    """The notes' table (simulated from the reference code, k=5): LOO costs Σ(m + 1) over the
    scoring levels. The group counts of the deeper levels depend on which nodes survive (a kept
    3-unit node splits into 2 groups, a kept single unit stays 1); a needle at unit 0 with ties
    kept in order reproduces the table's counts exactly."""
    a = tracllm(features(n, needle(0, n)), score_funcs=("loo",))
    assert a.extras["levels"]["loo"] == levels
    assert a.cost.forward_passes == passes == sum(m + 1 for m in levels)
    assert a.cost.cache_hits == 0


@pytest.mark.parametrize("j", [33, 199])
def test_pass_counts_follow_the_formula_for_any_needle(j: int) -> None:
    n, perms = 200, 20
    loo = tracllm(features(n, needle(j, n)), score_funcs=("loo",))
    levels = loo.extras["levels"]["loo"]
    assert loo.cost.forward_passes == sum(m + 1 for m in levels)
    # STC asks for the same number of masks, but f(∅) and re-scored single units come from the cache
    stc = tracllm(features(n, needle(j, n)), score_funcs=("stc",))
    stc_levels = stc.extras["levels"]["stc"]
    assert stc.cost.forward_passes + stc.cost.cache_hits == sum(m + 1 for m in stc_levels)
    assert stc.cost.forward_passes <= sum(m for m in stc_levels) + 1
    # Shapley asks for perms·(m + 1) coalitions per level (the reference's count), of which at
    # most perms·(m − 1) + 2 are distinct; repeated coalitions are free
    sh = tracllm(features(n, needle(j, n)), score_funcs=("denoised_shapley",))
    sh_levels = sh.extras["levels"]["denoised_shapley"]
    assert sh.cost.forward_passes + sh.cost.cache_hits == perms * sum(m + 1 for m in sh_levels)
    assert sh.cost.forward_passes <= sum(perms * (m - 1) + 2 for m in sh_levels)


def test_small_inputs_are_scored_directly() -> None:
    """n <= k: one level over the single units; LOO-only equals leave-one-out (times its weight)."""
    fn = needle(2, 4, noise=0.5)
    a = tracllm(features(4, fn), score_funcs=("loo",), loo_weight=2.0)
    assert a.extras["levels"] == {"loo": [4]} and np.isfinite(a.scores).all()
    np.testing.assert_allclose(a.scores, 2.0 * leave_one_out(features(4, fn)).scores)
    assert a.cost.forward_passes == 5
    ens = tracllm(features(5, needle(3, 5)))
    assert np.isfinite(ens.scores).all() and ens.ranking[0] == 3 and ens.extras["depth"] == 1


def test_stc_is_the_unit_alone_minus_nothing() -> None:
    n = 8
    w = np.arange(1.0, n + 1)
    a = tracllm(features(n, lambda z: z @ w + 1.0), score_funcs=("stc",), k=n)
    np.testing.assert_allclose(a.scores, w)


def test_six_units_score_five_and_keep_the_sixth_as_pruned() -> None:
    """The conformance toy has n = 6 > k = 5: one unit is pruned, its main score is NaN."""
    n = 6
    a = tracllm(features(n, lambda z: z @ np.array([5.0, 4, 3, 2, 1, 0.5])))
    assert np.isnan(a.scores).sum() == 1 and np.isnan(a.scores[5])
    assert a.extras["pruned_scores"][5] == pytest.approx(2 * 0.5)  # LOO (weight 2) of unit 5
    assert a.extras["pruned_level"][5] == 1
    check_method("tracllm")


# --- budget ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("budget", [9, 20, 40])
def test_budget_stops_the_descent_without_raising(budget: int) -> None:
    """STC alone needs ~55 passes at n = 200: it stops on a group level and returns the groups."""
    n, j = 200, 77
    scorer = features(n, needle(j, n, noise=0.05), budget=Budget(forward_passes=budget))
    a = tracllm(scorer)
    e = a.extras
    assert a.cost.forward_passes <= budget
    assert e["budget_stopped"] and not e["resolved"]
    assert e["stopped_funcs"] == ["stc"] and e["skipped_funcs"] == ["loo", "denoised_shapley"]
    assert e["passes"] == {"stc": a.cost.forward_passes, "loo": 0, "denoised_shapley": 0}
    # the units of every surviving group share its score; the needle's group is the best
    groups, group_scores = e["final_groups"]["stc"], e["final_scores"]["stc"]
    assert len(groups) == 5 and max(len(g) for g in groups) > 1
    for group, score in zip(groups, group_scores, strict=True):
        np.testing.assert_array_equal(a.scores[group], score)
    assert a.scores[j] == np.nanmax(a.scores)
    assert np.isfinite(a.scores).sum() == sum(len(g) for g in groups)


def test_a_finished_function_wins_over_a_stopped_one() -> None:
    """An uncached scorer pays again for repeated coalitions, so Shapley costs more than its
    estimate and stops one level short; its unresolved pairs then count as pruned, and the
    scores come from the single units STC and LOO reached."""
    n, j = 200, 77

    def fn(z: np.ndarray) -> np.ndarray:
        return 3.0 * z[:, j] + 0.01 * z.sum(axis=1)

    a = tracllm(features(n, fn, budget=Budget(forward_passes=940), cache=False))
    e = a.extras
    assert a.cost.forward_passes <= 940
    assert e["stopped_funcs"] == ["denoised_shapley"] and e["skipped_funcs"] == []
    assert len(e["levels"]["denoised_shapley"]) < len(e["levels"]["loo"])
    assert all(len(g) == 2 for g in e["final_groups"]["denoised_shapley"])
    assert a.ranking[0] == j and np.isfinite(a.scores).sum() == 5
    assert "denoised_shapley" not in e["score_func"]
    pruned = np.asarray(e["pruned_scores"], dtype=float)
    assert np.isfinite(pruned[np.isnan(a.scores)]).all()


def test_budget_skips_a_function_that_cannot_finish() -> None:
    """After STC and LOO (~113 passes at n = 200) Shapley is expected to need ~690 more: with
    a budget of 300 it is not started, so no pass is spent on groups the ensemble would drop."""
    n = 200
    a = tracllm(features(n, needle(0, n), budget=Budget(forward_passes=300)))
    e = a.extras
    assert e["skipped_funcs"] == ["denoised_shapley"] and e["stopped_funcs"] == []
    assert e["budget_stopped"] and not e["resolved"]
    assert e["levels"]["loo"] == [8, 10, 10, 10, 10, 7] and e["levels"]["denoised_shapley"] == []
    assert a.cost.forward_passes == e["passes"]["stc"] + e["passes"]["loo"] < 150
    assert a.ranking[0] == 0


def test_enough_budget_changes_nothing() -> None:
    """A budget with room for the 10 % margin on the (few percent off) cost estimate runs all."""
    n = 200
    free = tracllm(features(n, needle(9, n, noise=0.05)))
    budget = Budget(forward_passes=int(1.2 * free.cost.forward_passes))
    capped = tracllm(features(n, needle(9, n, noise=0.05), budget=budget))
    assert not capped.extras["budget_stopped"] and capped.extras["resolved"]
    np.testing.assert_array_equal(free.scores, capped.scores)
    assert capped.cost.forward_passes == free.cost.forward_passes


def test_a_budget_too_small_for_one_level_returns_no_scores() -> None:
    a = tracllm(features(50, needle(3, 50), budget=Budget(forward_passes=5)))
    assert a.cost.forward_passes == 0 and np.isnan(a.scores).all()
    assert a.extras["budget_stopped"] and a.extras["depth"] == 0


def test_budget_on_an_uncached_scorer_never_raises() -> None:
    """Without a cache, repeated masks cost again: the scorer's refusal also stops the run."""
    n = 200
    scorer = features(n, needle(5, n), budget=Budget(forward_passes=400), cache=False)
    a = tracllm(scorer)
    assert a.cost.forward_passes <= 400 and a.extras["budget_stopped"]
    assert a.ranking[0] == 5


# --- contract ----------------------------------------------------------------------------------------
def test_deterministic_under_a_seed() -> None:
    n = 60

    def fn(z: np.ndarray) -> np.ndarray:
        return np.tanh(z[:, 3] + z[:, 40]) + 0.2 * z[:, 10:20].sum(axis=1)

    first = tracllm(features(n, fn), seed=5)
    second = tracllm(features(n, fn), seed=5)
    np.testing.assert_array_equal(first.scores, second.scores)
    assert first.extras["final_groups"] == second.extras["final_groups"]
    np.testing.assert_array_equal(first.extras["pruned_scores"], second.extras["pruned_scores"])
    other = tracllm(features(n, fn), seed=6, score_funcs=("shapley",))
    same = tracllm(features(n, fn), seed=5, score_funcs=("shapley",))
    assert not np.array_equal(other.scores, same.scores, equal_nan=True)


def test_a_function_gets_the_same_randomness_in_any_ensemble() -> None:
    n = 30

    def fn(z: np.ndarray) -> np.ndarray:
        return z[:, 2] * z[:, 17] + 0.1 * z[:, :10].sum(axis=1)

    alone = tracllm(features(n, fn), score_funcs=("denoised_shapley",))
    ens = tracllm(features(n, fn))
    key = "denoised_shapley"
    assert alone.extras["final_scores"][key] == ens.extras["final_scores"][key]


def test_registered_and_conformant() -> None:
    spec = get_method("tracllm")
    assert spec.kind == "perturbation" and "TracLLM" in spec.cite and "61" in spec.cost
    check_method("tracllm", score_funcs=("loo",), k=2)
    check_method("tracllm", k=8)  # n = 6 <= k: every unit scored


def test_round_trip_keeps_pruned_scores() -> None:
    a = tracllm(features(20, needle(4, 20, noise=0.1)))
    b = Attribution.from_dict(a.to_dict())
    np.testing.assert_array_equal(full_ranking(a), full_ranking(b))


def test_input_errors() -> None:
    s = features(10, needle(1, 10))
    for bad in (
        {"score_funcs": ("stc", "nope")},
        {"score_funcs": ()},
        {"score_funcs": ("loo", "loo")},
        {"k": 0},
        {"beta": 0.0},
        {"n_permutations": 0},
        {"loo_weight": -1.0},
    ):
        with pytest.raises(InputError):
            tracllm(s, **bad)  # type: ignore[arg-type]
    with pytest.raises(InputError):
        tracllm(features(1, lambda z: z[:, 0]))
