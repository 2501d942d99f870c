"""Evaluators: deletion/insertion curves, ERASER comprehensiveness/sufficiency, agreement."""

from __future__ import annotations

import json

import numpy as np
import pytest

import attribkit
from attribkit.core.attribution import Attribution
from attribkit.core.cost import Cost
from attribkit.core.errors import InputError
from attribkit.core.scorer import Scorer
from attribkit.core.units import FeatureUnits, TextUnits
from attribkit.evaluation.agreement import agreement, agreement_matrix
from attribkit.evaluation.curves import deletion, deletion_insertion, insertion, rank_units
from attribkit.evaluation.eraser import comprehensiveness, eraser, sufficiency


class Linear:
    """f(z) = w · z on features x = 1 with baseline 0, so f(mask) = sum of kept weights.

    Counts calls into the model to check that evaluators batch their masks.
    """

    def __init__(self, w):
        self.w = np.asarray(w, dtype=float)
        self.calls = 0

    def __call__(self, batch):
        self.calls += 1
        return np.asarray(batch) @ self.w


def linear_scorer(w, batch_size: int = 256) -> tuple[Scorer, Linear]:
    fn = Linear(w)
    return Scorer(FeatureUnits(np.ones(len(w))), fn, target="w·x", batch_size=batch_size), fn


def make(scorer: Scorer, scores, method: str = "given") -> Attribution:
    return Attribution.from_scorer(scorer, np.asarray(scores, dtype=float), method, {}, Cost())


W = np.array([5.0, -2.0, 3.0, 0.5, 4.0, -1.0, 2.0, 1.0, 0.0, 1.5, -0.5, 2.5])


# --- deletion / insertion ------------------------------------------------------------------------


def test_perfect_attribution_beats_random_on_both_curves():
    scorer, _ = linear_scorer(W)
    perfect = attribkit.attribute(scorer, "loo")  # exact for a linear model: scores == W
    np.testing.assert_allclose(perfect.vector, W)
    d_perfect = deletion(perfect, scorer).auc
    i_perfect = insertion(perfect, scorer).auc
    d_random, i_random = [], []
    for seed in range(8):
        rand = make(scorer, np.random.default_rng(seed).normal(size=len(W)), "random")
        d_random.append(deletion(rand, scorer).auc)
        i_random.append(insertion(rand, scorer).auc)
    assert d_perfect < np.mean(d_random)  # MoRF deletion: lower is better
    assert i_perfect > np.mean(i_random)  # insertion: higher is better
    # the perfect ranking is optimal for a linear model: no random ranking beats it
    assert d_perfect <= min(d_random) and i_perfect >= max(i_random)
    both = deletion_insertion(perfect, scorer)
    assert both.difference == pytest.approx(i_perfect - d_perfect)
    assert both.difference > np.mean(i_random) - np.mean(d_random)


def test_curve_endpoints_are_full_and_empty():
    scorer, _ = linear_scorer(W)
    att = make(scorer, np.arange(len(W)))
    d, i = deletion(att, scorer), insertion(att, scorer)
    f_all, f_none = W.sum(), 0.0
    assert d.values[0] == pytest.approx(f_all) and d.values[-1] == pytest.approx(f_none)
    assert i.values[0] == pytest.approx(f_none) and i.values[-1] == pytest.approx(f_all)
    assert d.fractions[0] == 0 and d.fractions[-1] == 1 and len(d.values) == len(W) + 1
    assert (d.full_value, d.empty_value) == (pytest.approx(f_all), pytest.approx(f_none))
    assert scorer.full() == pytest.approx(f_all) and scorer.empty() == pytest.approx(f_none)


def test_curve_values_and_auc_by_hand():
    w = [3.0, -1.0, 2.0]
    scorer, _ = linear_scorer(w)
    att = make(scorer, w)  # ranking 0, 2, 1
    d = deletion(att, scorer)
    np.testing.assert_allclose(d.values, [4.0, 1.0, -1.0, 0.0])
    np.testing.assert_allclose(d.fractions, [0, 1 / 3, 2 / 3, 1])
    assert d.auc == pytest.approx((2.5 + 0.0 - 0.5) / 3)
    # normalized: (v − f(none)) / (f(all) − f(none)) = v / 4
    assert d.normalized_auc == pytest.approx(d.auc / 4)
    np.testing.assert_allclose(d.normalized_values, [1.0, 0.25, -0.25, 0.0])
    i = insertion(att, scorer)
    np.testing.assert_allclose(i.values, [0.0, 3.0, 5.0, 4.0])
    assert i.auc == pytest.approx((1.5 + 4.0 + 4.5) / 3)
    # LeRF deletion removes the least relevant (unit 1, weight −1) first
    lerf = deletion(att, scorer, order="least")
    np.testing.assert_allclose(lerf.values, [4.0, 5.0, 3.0, 0.0])
    assert lerf.order == "least" and lerf.kind == "deletion"


def test_cost_equals_distinct_masks_and_one_model_call():
    scorer, fn = linear_scorer(W)
    att = make(scorer, W)
    d = deletion(att, scorer)
    assert d.cost.forward_passes == len(W) + 1
    assert fn.calls == 1 and d.cost.batches == 1
    # insertion shares only f(all) and f(none) with deletion: those come from the cache
    i = insertion(att, scorer)
    assert i.cost.forward_passes == len(W) - 1 and i.cost.cache_hits == 2
    fresh, _ = linear_scorer(W)
    both = deletion_insertion(att, fresh)
    assert both.cost.forward_passes == 2 * len(W)


def test_steps_gives_evenly_spaced_points():
    scorer, _ = linear_scorer(np.ones(10))
    att = make(scorer, np.arange(10))
    d = deletion(att, scorer, steps=3)
    np.testing.assert_array_equal(d.counts, [0, 5, 10])
    np.testing.assert_allclose(d.fractions, [0, 0.5, 1])
    assert d.cost.forward_passes == 3
    assert len(deletion(att, scorer, steps=100).values) == 11  # at most every count
    with pytest.raises(InputError, match="steps"):
        deletion(att, scorer, steps=1)


def test_unscored_units_go_last():
    w = [10.0, 1.0, 2.0, 3.0]
    scorer, _ = linear_scorer(w)
    att = make(scorer, [np.nan, 1.0, 2.0, 3.0])
    assert rank_units(att, "most").tolist() == [3, 2, 1, 0]
    assert rank_units(att, "least").tolist() == [1, 2, 3, 0]
    d = deletion(att, scorer)
    np.testing.assert_allclose(d.values, [16.0, 13.0, 11.0, 10.0, 0.0])


def test_curve_errors_and_serialisation():
    scorer, _ = linear_scorer(W)
    att = make(scorer, W)
    with pytest.raises(InputError, match="order"):
        deletion(att, scorer, order="middle")
    other, _ = linear_scorer(W[:5])
    with pytest.raises(InputError, match="units"):
        insertion(att, other)
    d = json.loads(json.dumps(deletion_insertion(att, scorer).to_dict()))
    assert d["deletion"]["kind"] == "deletion" and len(d["insertion"]["values"]) == len(W) + 1
    flat, _ = linear_scorer([1.0, -1.0])  # f(all) == f(none): normalization undefined
    assert np.isnan(deletion(make(flat, [1.0, -1.0]), flat).normalized_auc)


# --- ERASER --------------------------------------------------------------------------------------

W10 = np.array([4.0, 3.0, 2.0, 1.0, 0.0, -1.0, 0.5, 0.25, 0.1, 0.05])  # f(all) = 9.9


def test_comprehensiveness_and_sufficiency_by_hand():
    scorer, fn = linear_scorer(W10)
    att = make(scorer, W10)  # top units: 0, 1, 2, 3, 6 ...
    c = comprehensiveness(att, scorer, fractions=(0.1, 0.2, 0.5))  # k = 1, 2, 5
    assert c.k == [1, 2, 5]
    np.testing.assert_allclose(c.values, [4.0, 7.0, 10.5])  # weight of the removed top-k
    assert c.mean == pytest.approx(21.5 / 3)
    assert c.full_value == pytest.approx(9.9)
    assert fn.calls == 1 and c.cost.forward_passes == 4  # f(all) + 3 bins, one model call
    s = sufficiency(att, scorer, fractions=(0.1, 0.2, 0.5))
    np.testing.assert_allclose(s.values, [5.9, 2.9, -0.6])  # f(all) − weight of top-k
    assert s.mean == pytest.approx((5.9 + 2.9 - 0.6) / 3)
    assert s.cost.forward_passes == 3 and s.cost.cache_hits == 1  # f(all) was cached


def test_eraser_signs_good_vs_reversed_attribution():
    scorer, _ = linear_scorer(W10)
    good, bad = make(scorer, W10), make(scorer, -W10)
    both = eraser(good, scorer)
    assert both["comprehensiveness"].k == [1, 1, 1, 2, 5]  # default fractions, n = 10
    assert both["comprehensiveness"].mean > 0
    assert both["comprehensiveness"].mean > comprehensiveness(bad, scorer).mean
    assert both["sufficiency"].mean < sufficiency(bad, scorer).mean
    assert json.loads(json.dumps(both["sufficiency"].to_dict()))["metric"] == "sufficiency"
    with pytest.raises(InputError, match="fractions"):
        comprehensiveness(good, scorer, fractions=(0.0, 0.5))
    with pytest.raises(InputError, match="fractions"):
        sufficiency(good, scorer, fractions=())


# --- agreement -----------------------------------------------------------------------------------


def test_agreement_identical_and_reversed():
    scorer, _ = linear_scorer(W10)
    a = make(scorer, W10)
    same = agreement(a, make(scorer, W10.copy()), k=3)
    assert same["spearman"] == pytest.approx(1) and same["kendall"] == pytest.approx(1)
    assert same["top_k_overlap"] == 1 and same["sign_agreement"] == 1 and same["k"] == 3
    rev = agreement(a, make(scorer, -W10), k=3)
    assert rev["spearman"] == pytest.approx(-1) and rev["kendall"] == pytest.approx(-1)
    assert rev["top_k_overlap"] == 0
    assert rev["sign_agreement"] == pytest.approx(0.1)  # only the zero weight keeps its sign
    assert a.compare(make(scorer, W10))["spearman"] == pytest.approx(1)


def test_agreement_partial_overlap_and_nan_pairwise():
    scorer, _ = linear_scorer(np.ones(5))
    a = make(scorer, [5, 4, 3, 2, 1])
    b = make(scorer, [5, 1, 4, 3, 2])  # top-2: {0, 1} vs {0, 2}
    assert agreement(a, b, k=2)["top_k_overlap"] == 0.5
    c = make(scorer, [np.nan, 4, 3, 2, 1])
    r = agreement(a, c, k=10)
    assert r["n_compared"] == 4 and r["k"] == 4 and r["spearman"] == pytest.approx(1)


def test_agreement_needs_same_units():
    s5, _ = linear_scorer(np.ones(5))
    s4, _ = linear_scorer(np.ones(4))
    with pytest.raises(InputError, match="same units"):
        agreement(make(s5, np.arange(5)), make(s4, np.arange(4)))
    text = Scorer(TextUnits.words("a b c d e"), lambda xs: [len(x) for x in xs])
    with pytest.raises(InputError, match="same input"):
        agreement(make(s5, np.arange(5)), make(text, np.arange(5)))


def test_agreement_matrix():
    scorer, _ = linear_scorer(W10)
    atts = {"truth": make(scorer, W10), "copy": make(scorer, W10 * 2), "neg": make(scorer, -W10)}
    m = agreement_matrix(atts, k=3)
    assert m["methods"] == ["truth", "copy", "neg"]
    rho = m["spearman"]
    assert rho.shape == (3, 3) and np.allclose(rho, rho.T)
    np.testing.assert_allclose(np.diag(rho), 1)
    assert rho[0, 1] == pytest.approx(1) and rho[0, 2] == pytest.approx(-1)
    with pytest.raises(InputError):
        agreement_matrix({})


def test_wilson_interval_matches_the_closed_form_and_rejects_bad_counts() -> None:
    from attribkit.evaluation import format_proportion, wilson_interval

    lo, hi = wilson_interval(114, 120)
    assert abs(lo - 0.8953) < 1e-3 and abs(hi - 0.9770) < 1e-3
    assert wilson_interval(0, 8)[0] == 0.0 and wilson_interval(8, 8)[1] == 1.0
    assert format_proportion(114, 120) == "0.950 [0.895, 0.977]"
    with pytest.raises(InputError, match="at least one trial"):
        wilson_interval(0, 0)
    with pytest.raises(InputError, match="successes"):
        wilson_interval(5, 4)
