"""Agreement report over inputs (Neely et al., 2022): mean ± std of pairwise rank agreement."""

from __future__ import annotations

import json

import numpy as np
import pytest

from attribkit.core.attribution import Attribution
from attribkit.core.errors import InputError
from attribkit.core.units import Unit
from attribkit.evaluation.agreement_report import CAVEAT, agreement_report


def _att(scores, method="m", labels=None) -> Attribution:
    scores = np.asarray(scores, dtype=float)
    n = scores.shape[-1]
    labels = labels or [f"u{i}" for i in range(n)]
    return Attribution([Unit(i, labels[i], 0, 1) for i in range(n)], scores, method)


def test_identical_and_reversed():
    a = [_att([1, 2, 3, 4]), _att([0.5, 0.1, 0.9, 0.2])]
    rev = [_att([4, 3, 2, 1]), _att([-0.5, -0.1, -0.9, -0.2])]
    r = agreement_report({"a": a, "same": list(a), "rev": rev}, k=2, absolute=False)
    assert r.matrix("kendall")[0, 1] == pytest.approx(1.0)
    assert r.matrix("spearman")[0, 1] == pytest.approx(1.0)
    assert r.matrix("top_k_overlap")[0, 1] == pytest.approx(1.0)
    assert r.matrix("kendall")[0, 2] == pytest.approx(-1.0)
    assert r.matrix("kendall", "std")[0, 2] == pytest.approx(0.0)
    assert r.matrix("kendall", "n")[0, 2] == 2
    assert np.allclose(np.diag(r.matrix("kendall")), 1.0)


def test_hand_computed_mean_and_std():
    # input 0: x = [1, 2, 3, 4], y = [1, 3, 2, 4]: one discordant pair of 6 -> tau = 2/3;
    # sum d^2 = 2 -> rho = 1 - 6*2/(4*15) = 0.8; top-2 {3, 2} vs {3, 1} -> 1/2.
    # input 1: identical -> 1, 1, 1.
    a = [_att([1, 2, 3, 4]), _att([1, 2, 3])]
    b = [_att([1, 3, 2, 4]), _att([1, 2, 3])]
    r = agreement_report({"a": a, "b": b}, k=2)
    assert r.matrix("kendall")[0, 1] == pytest.approx(5 / 6)
    assert r.matrix("kendall", "std")[0, 1] == pytest.approx(1 / 6)
    assert r.matrix("spearman")[0, 1] == pytest.approx(0.9)
    assert r.matrix("spearman", "std")[0, 1] == pytest.approx(0.1)
    assert r.matrix("top_k_overlap")[0, 1] == pytest.approx(0.75)
    d = r.to_dict()
    json.dumps(d)
    assert d["pairs"][0]["kendall"] == {
        "mean": pytest.approx(5 / 6),
        "std": pytest.approx(1 / 6),
        "n": 2,
    }
    assert d["caveat"] == CAVEAT
    table = r.table()
    assert "+0.833 ± 0.167" in table and "top-2 overlap" in table and "validate" in table


def test_absolute_by_default():
    a, b = [_att([-3, 1, 2])], [_att([3, 1, 2])]
    assert agreement_report({"a": a, "b": b}).matrix("kendall")[0, 1] == pytest.approx(1.0)
    signed = agreement_report({"a": a, "b": b}, absolute=False)
    assert signed.matrix("kendall")[0, 1] == pytest.approx(-1 / 3)


def test_nan_columns_left_out():
    a, b = [_att([1, np.nan, 2, 3])], [_att([3, 5, 2, 1])]
    r = agreement_report({"a": a, "b": b}, k=1)
    assert r.matrix("kendall")[0, 1] == pytest.approx(-1.0)
    assert r.matrix("top_k_overlap")[0, 1] == pytest.approx(0.0)
    # all NaN: undefined, reported as n/a and None
    r = agreement_report({"a": [_att([np.nan, np.nan])], "b": [_att([1, 2])]})
    assert np.isnan(r.matrix("kendall")[0, 1]) and r.matrix("kendall", "n")[0, 1] == 0
    assert "n/a" in r.table() and r.to_dict()["pairs"][0]["kendall"]["mean"] is None


def test_rows_each_and_sum():
    nan = np.nan
    a = _att([[1, 2, nan, nan], [1, 2, 3, nan], [1, 2, 3, 4]])
    b = _att([[2, 1, nan, nan], [1, 2, 3, nan], [1, 2, 3, 4]])
    r = agreement_report({"a": [a], "b": [b]}, rows="each")
    # rows: tau -1, 1, 1 over the columns each row can see -> mean 1/3
    assert r.matrix("kendall")[0, 1] == pytest.approx(1 / 3)
    s = agreement_report({"a": [a], "b": [b]}, rows="sum")
    # column sums [3, 6, 6, 4] vs [4, 5, 6, 4]
    x, y = np.array([3, 6, 6, 4.0]), np.array([4, 5, 6, 4.0])
    from scipy.stats import kendalltau

    assert s.matrix("kendall")[0, 1] == pytest.approx(kendalltau(x, y).statistic)
    with pytest.raises(InputError, match="rows='sum'"):
        agreement_report({"a": [a], "b": [_att([[1, 2, 3, 4]])]})


def test_errors():
    a = [_att([1, 2, 3])]
    with pytest.raises(InputError):
        agreement_report({"a": a})
    with pytest.raises(InputError, match="same order"):
        agreement_report({"a": a, "b": a + a})
    with pytest.raises(InputError, match="different units"):
        agreement_report({"a": a, "b": [_att([1, 2, 3], labels=["x", "y", "z"])]})
    with pytest.raises(InputError):
        agreement_report({"a": a, "b": a}, k=0)
