"""Open-set core: open_set_report (AUROC = scikit-learn's, OSCR properties, TNR convention),
open_world_report (Hungarian = brute force, both conventions), few_shot_episodes (seeded), and
the rejecting classifiers (RejectingClassifier, Hierarchy) on a generated Gaussian mixture."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    adjusted_rand_score,
    f1_score,
    normalized_mutual_info_score,
    roc_auc_score,
    roc_curve,
)

from attribkit.core.errors import InputError
from attribkit.evaluation.open_set import (
    auroc,
    few_shot_episodes,
    hungarian_match,
    max_softmax,
    open_set_report,
    open_world_report,
    oscr,
)
from attribkit.models.open_set import (
    Hierarchy,
    RejectingClassifier,
    SourceDecision,
    threshold_at_tpr,
)


def _random_case(seed: int, n: int = 60, k: int = 4, ties: bool = True):
    rng = np.random.default_rng(seed)
    y = rng.integers(-1, k, size=n)
    y[0], y[1] = -1, 0  # at least one unknown and one known
    s = rng.normal(size=(n, k))
    s[np.arange(n)[y >= 0], y[y >= 0]] += rng.uniform(0, 2)
    if ties:
        s = np.round(s, 1)  # many tied confidences
    return s, y


def _oscr_reference(ck, correct, cu) -> float:
    """Direct definition: one curve point per distinct threshold, trapezoids over FPR."""
    pts = [(0.0, 0.0)]
    for t in sorted(set(ck.tolist()) | set(cu.tolist()), reverse=True):
        pts.append((np.mean(cu >= t), np.sum((ck >= t) & correct) / ck.size))
    return sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in itertools.pairwise(pts))


# ---------------------------------------------------------------------------------------------
# AUROC and TNR
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(20))
def test_auroc_equals_sklearn_including_ties(seed: int) -> None:
    for ties in (True, False):
        s, y = _random_case(seed, ties=ties)
        rep = open_set_report(s, y)
        conf = max_softmax(s)
        assert abs(rep["auroc"] - roc_auc_score(y >= 0, conf)) <= 1e-12
        rep_l = open_set_report(s, y, score="logit")
        assert abs(rep_l["auroc"] - roc_auc_score(y >= 0, s.max(axis=1))) <= 1e-12


def test_auroc_with_heavy_ties_and_integers() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        pos = rng.integers(0, 4, size=rng.integers(1, 30)).astype(float)
        neg = rng.integers(0, 4, size=rng.integers(1, 30)).astype(float)
        lab = np.r_[np.ones(pos.size), np.zeros(neg.size)]
        assert abs(auroc(pos, neg) - roc_auc_score(lab, np.r_[pos, neg])) <= 1e-12


def test_softmax_rule_for_probabilities_and_logits() -> None:
    p = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25], [0.1, 0.1, 0.8], [0.34, 0.33, 0.33]])
    y = np.array([0, -1, 2, -1])
    rep = open_set_report(p, y)
    assert rep["inputs"] == "proba"
    assert rep["threshold_95_tpr"] == pytest.approx(0.7)  # max probability itself
    as_logits = open_set_report(p, y, inputs="logits")
    assert as_logits["inputs"] == "logits"
    assert as_logits["threshold_95_tpr"] == pytest.approx(max_softmax(p[[0, 2]]).min())
    z = np.log(p) + 3.0  # logits of the same distribution
    assert open_set_report(z, y)["threshold_95_tpr"] == pytest.approx(0.7)
    assert max_softmax(np.array([[1000.0, 0.0]]))[0] == 1.0  # stable


@pytest.mark.parametrize("seed", range(8))
def test_tnr_at_95_tpr_is_roc_curves_first_point_reaching_95(seed: int) -> None:
    s, y = _random_case(seed, n=120)
    rep = open_set_report(s, y)
    conf = max_softmax(s)
    fpr, tpr, thr = roc_curve(y >= 0, conf, drop_intermediate=False)
    i = int(np.argmax(tpr >= 0.95))
    assert rep["threshold_95_tpr"] == pytest.approx(thr[i], abs=1e-15)
    assert rep["tnr_at_95_tpr"] == pytest.approx(1 - fpr[i], abs=1e-12)
    assert np.mean(conf[y >= 0] >= rep["threshold_95_tpr"]) >= 0.95


def test_threshold_at_tpr_convention() -> None:
    conf = np.arange(1, 21, dtype=float)  # 20 knowns
    assert threshold_at_tpr(conf, 0.95) == 2.0  # ceil(19.0) = 19th largest, not the 20th
    assert threshold_at_tpr(conf, 1.0) == 1.0
    assert threshold_at_tpr(conf, 0.5) == 11.0
    assert threshold_at_tpr(np.array([0.3, 0.3, 0.3, 0.9]), 0.5) == 0.3  # ties all accepted
    with pytest.raises(InputError, match="tpr must be in"):
        threshold_at_tpr(conf, 0.0)


# ---------------------------------------------------------------------------------------------
# OSCR
# ---------------------------------------------------------------------------------------------
def test_oscr_equals_accuracy_when_unknowns_score_below_knowns() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        ck = rng.uniform(0.6, 1.0, size=30)
        cu = rng.uniform(0.0, 0.59, size=17)
        correct = rng.random(30) < 0.7
        assert oscr(ck, correct, cu) == correct.mean()
    s = np.array([[5.0, 0.0], [0.0, 4.0], [3.0, 0.0], [0.0, 6.0], [0.2, 0.0], [0.0, 0.1]])
    y = np.array([0, 1, 1, 1, -1, -1])  # one known wrong; unknowns least confident
    rep = open_set_report(s, y)
    assert rep["closed_set_accuracy"] == 0.75
    assert rep["oscr"] == rep["closed_set_accuracy"]
    assert rep["auroc"] == 1.0


def test_oscr_is_zero_when_every_known_is_wrong() -> None:
    rng = np.random.default_rng(1)
    s = rng.normal(size=(40, 3))
    y = np.where(rng.random(40) < 0.3, -1, (s.argmax(axis=1) + 1) % 3)
    rep = open_set_report(s, y)
    assert rep["closed_set_accuracy"] == 0.0
    assert rep["oscr"] == 0.0


@pytest.mark.parametrize("seed", range(40))
def test_oscr_never_above_accuracy_and_matches_definition(seed: int) -> None:
    s, y = _random_case(seed, n=int(np.random.default_rng(seed).integers(5, 80)), ties=seed % 2)
    rep = open_set_report(s, y)
    assert rep["oscr"] <= rep["closed_set_accuracy"] + 1e-15
    conf = max_softmax(s)
    known = y >= 0
    correct = s.argmax(axis=1)[known] == y[known]
    assert rep["oscr"] == pytest.approx(_oscr_reference(conf[known], correct, conf[~known]), 1e-12)


def test_oscr_equals_auroc_when_every_known_is_correct_and_ignores_order() -> None:
    rng = np.random.default_rng(5)
    ck = np.round(rng.uniform(size=50), 1)
    cu = np.round(rng.uniform(size=30) - 0.2, 1)
    correct = np.ones(50, bool)
    lab = np.r_[np.ones(50), np.zeros(30)]
    assert abs(oscr(ck, correct, cu) - roc_auc_score(lab, np.r_[ck, cu])) <= 1e-12
    correct = rng.random(50) < 0.6
    perm_k, perm_u = rng.permutation(50), rng.permutation(30)
    assert oscr(ck, correct, cu) == oscr(ck[perm_k], correct[perm_k], cu[perm_u])


# ---------------------------------------------------------------------------------------------
# the rest of the report
# ---------------------------------------------------------------------------------------------
def test_report_f1_rejection_scenarios_and_json() -> None:
    s, y = _random_case(7, n=90)
    scen = np.array(["unseen_seed" if i % 2 else "unseen_arch" for i in range(90)], dtype=object)
    scen[y >= 0] = None  # ignored for knowns
    rep = open_set_report(s, y, known_labels=["a", "b", "c", "d"], scenario=scen, threshold=0.5)
    json.loads(json.dumps(rep, allow_nan=False))
    known = y >= 0
    pred = s.argmax(axis=1)
    assert rep["macro_f1"] == pytest.approx(f1_score(y[known], pred[known], average="macro"))
    conf = max_softmax(s)
    rejected = np.where(conf >= 0.5, pred, -1)
    assert rep["macro_f1_with_rejection"] == pytest.approx(f1_score(y, rejected, average="macro"))
    assert rep["threshold"] == 0.5 and rep["threshold_rule"] == "given"
    assert rep["n_known"] + rep["n_unknown"] == 90
    assert set(rep["per_source_f1"]) <= {"a", "b", "c", "d"}
    assert set(rep["per_scenario"]) == {"unseen_seed", "unseen_arch"}
    for name, fig in rep["per_scenario"].items():
        m = ~known & (scen == name)
        assert fig["n"] == int(m.sum())
        ref = roc_auc_score(
            np.r_[np.ones(known.sum()), np.zeros(m.sum())], np.r_[conf[known], conf[m]]
        )
        assert abs(fig["auroc"] - ref) <= 1e-12
        assert fig["oscr"] <= rep["closed_set_accuracy"]
    default = open_set_report(s, y)
    assert default["threshold"] == default["threshold_95_tpr"]
    assert "0.95" in default["threshold_rule"] and default["per_scenario"] == {}
    assert default["tpr_at_threshold"] >= 0.95


_BASE = np.array([[2.0, 0.0], [0.0, 1.0], [0.5, 0.0]])  # three distinct confidences


@pytest.mark.parametrize(
    ("scores", "y", "kwargs", "match"),
    [
        (np.ones((4, 1)), [0, 0, -1, -1], {}, "at least two known sources"),
        (np.eye(3)[:, :2], [-1, -1, -1], {}, "no known samples"),
        (np.array([[1.0, 0.0], [0.0, 2.0]]), [0, 1], {}, "no unknown samples"),
        (np.array([[np.nan, 0.0], [0.0, 2.0]]), [0, -1], {}, "NaN"),
        (_BASE, [0, -1], {}, "one label per row"),
        (_BASE, [0, 2, -1], {}, "outside -1..1"),
        (_BASE, [0, -2, -1], {}, "outside -1..1"),
        (np.array([[0.0, 1.0], [1.0, 2.0], [5.0, 6.0]]), [0, 1, -1], {}, "all scores are tied"),
        (_BASE, [0.5, 1, -1], {}, "integers"),
        (_BASE, [0, 1, -1], {"known_labels": ["x"]}, "name each"),
        (_BASE, [0, 1, -1], {"inputs": "proba"}, "not probabilities"),
        (_BASE, [0, 1, -1], {"score": "energy"}, "score must be"),
        (_BASE, [0, 1, -1], {"scenario": ["a", "b"]}, "one entry per"),
        (_BASE, [0, 1, -1], {"scenario": ["a", "b", None]}, "scenario"),
        (_BASE, [0, 1, -1], {"tpr": 1.5}, "tpr must be"),
        (np.array([2.0, 1.0, 0.5]), [0, 1, -1], {}, "2-D"),
    ],
)
def test_report_bad_input(scores, y, kwargs, match) -> None:
    with pytest.raises(InputError, match=match):
        open_set_report(scores, np.asarray(y), **kwargs)


def test_all_tied_is_an_error_for_uniform_logits_too() -> None:
    s = np.array([[3.0, 3.0], [1.0, 1.0], [-2.0, -2.0]])  # every softmax is 0.5
    with pytest.raises(InputError, match="identical"):
        open_set_report(s, np.array([0, 1, -1]))


# ---------------------------------------------------------------------------------------------
# open world
# ---------------------------------------------------------------------------------------------
def _brute_force_matches(y: np.ndarray, p: np.ndarray) -> int:
    classes, clusters = np.unique(y).tolist(), np.unique(p).tolist()
    best = 0
    if len(clusters) <= len(classes):
        for perm in itertools.permutations(classes, len(clusters)):
            m = dict(zip(clusters, perm, strict=True))
            best = max(best, sum(m[a] == b for a, b in zip(p.tolist(), y.tolist(), strict=True)))
    else:
        for perm in itertools.permutations(clusters, len(classes)):
            m = dict(zip(perm, classes, strict=True))
            best = max(
                best, sum(m.get(a) == b for a, b in zip(p.tolist(), y.tolist(), strict=True))
            )
    return best


@pytest.mark.parametrize("seed", range(30))
def test_hungarian_equals_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_classes, n_clusters = int(rng.integers(1, 7)), int(rng.integers(1, 7))
    n = int(rng.integers(5, 60))
    y = rng.integers(0, n_classes, size=n) * 3 + 10  # arbitrary label values
    p = np.where(rng.random(n) < 0.6, y % n_clusters, rng.integers(0, n_clusters, size=n)) - 2
    matched, mapping = hungarian_match(y, p)
    assert matched == _brute_force_matches(y, p)
    assert len(set(mapping.values())) == len(mapping)  # one-to-one
    rep = open_world_report(y, p)
    assert rep["accuracy"] == matched / n


def test_open_world_conventions_differ_and_match_definitions() -> None:
    # classes 0, 1 known; 2, 3 novel. Cluster 7 holds class 0 and most of class 2.
    y = np.array([0] * 10 + [1] * 10 + [2] * 10 + [3] * 10)
    p = np.array([7] * 10 + [5] * 10 + [7] * 8 + [6] * 2 + [6] * 10)
    rep = open_world_report(y, p, known=[0, 1])
    json.loads(json.dumps(rep, allow_nan=False))
    # global: 7->0 or 7->2 (10 vs 8: 7->0), 5->1, 6->3 (12-2 -> 10 of class 3), class 2 unmatched
    assert rep["accuracy"] == rep["global_matching"]["all"] == 30 / 40
    assert rep["global_matching"]["known"] == 1.0
    assert rep["global_matching"]["novel"] == 10 / 20
    # separate: within novel, 7->2 (8) and 6->3 (10)
    assert rep["separate_matching"]["known"] == 1.0
    assert rep["separate_matching"]["novel"] == 18 / 20
    assert rep["separate_matching"]["known_plain"] == 0.0  # cluster ids are not the labels
    assert rep["nmi"] == pytest.approx(normalized_mutual_info_score(y, p))
    assert rep["ari"] == pytest.approx(adjusted_rand_score(y, p))
    assert rep["novel"]["ari"] == pytest.approx(adjusted_rand_score(y[20:], p[20:]))
    assert rep["n_known"] == 20 and rep["n_novel"] == 20 and rep["n_clusters"] == 3
    assert open_world_report(y, y, known=[0, 1])["separate_matching"]["known_plain"] == 1.0
    assert open_world_report(y, p)["global_matching"]["known"] is None


@pytest.mark.parametrize(
    ("y", "p", "kwargs", "match"),
    [
        ([0, 1, 2], [0, 1], {}, "one cluster id per sample"),
        ([], [], {}, "no samples"),
        ([0.5, 1], [0, 1], {}, "integer labels"),
        ([0, 1, 2], [0, 1, 1], {"known": [5]}, "no sample has a known label"),
        ([0, 1, 2], [0, 1, 1], {"known": [0, 1, 2]}, "no novel sources"),
        ([0, 1, 2], [0, 1, 1], {"known": ["a"]}, "integer labels"),
    ],
)
def test_open_world_bad_input(y, p, kwargs, match) -> None:
    with pytest.raises(InputError, match=match):
        open_world_report(np.asarray(y), np.asarray(p), **kwargs)


# ---------------------------------------------------------------------------------------------
# few-shot episodes
# ---------------------------------------------------------------------------------------------
def _blobs(seed: int, n_classes: int = 8, per: int = 30, d: int = 16, spread: float = 1.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, d)) * 3
    x = np.repeat(centres, per, axis=0) + rng.normal(size=(n_classes * per, d)) * spread
    return x, np.repeat([f"gen{i}" for i in range(n_classes)], per)


def test_few_shot_seeded_episodes_repeat() -> None:
    x, lab = _blobs(0, spread=3.0)
    a = few_shot_episodes(x, lab, n_episodes=100, seed=3, return_episodes=True)
    b = few_shot_episodes(x, lab, n_episodes=100, seed=3, return_episodes=True)
    assert a == b
    c = few_shot_episodes(x, lab, n_episodes=100, seed=4, return_episodes=True)
    assert c["episode_accuracies"] != a["episode_accuracies"]
    json.loads(json.dumps(a))
    eps = np.array(a["episode_accuracies"])
    assert a["accuracy"] == pytest.approx(eps.mean())
    assert a["ci95"] == pytest.approx(1.96 * eps.std() / np.sqrt(100))
    assert a["chance"] == 0.2 and a["n_episodes"] == 100 and 0.2 < a["accuracy"] < 1.0


def test_few_shot_separable_is_perfect_and_noise_is_near_chance() -> None:
    x, lab = _blobs(1, spread=0.05)
    assert few_shot_episodes(x, lab, n_episodes=50)["accuracy"] == 1.0
    rng = np.random.default_rng(2)
    noise = rng.normal(size=x.shape)
    rep = few_shot_episodes(noise, lab, n_way=4, k_shot=5, n_query=10, n_episodes=300)
    assert abs(rep["accuracy"] - 0.25) < 4 * rep["ci95"] + 0.02
    held = few_shot_episodes(x, lab, n_way=3, classes=["gen5", "gen6", "gen7"], n_episodes=5)
    assert held["classes"] == ["gen5", "gen6", "gen7"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k_shot": 20, "n_query": 15}, "needs k_shot \\+ n_query = 35"),
        ({"n_way": 9}, "only 8 class"),
        ({"classes": ["gen0", "nope"], "n_way": 2}, "no sample"),
        ({"n_way": 1}, "n_way must be"),
        ({"k_shot": 0}, "k_shot must be"),
        ({"n_episodes": 0}, "n_episodes must be"),
    ],
)
def test_few_shot_bad_input(kwargs, match) -> None:
    x, lab = _blobs(0)
    with pytest.raises(InputError, match=match):
        few_shot_episodes(x, lab, **kwargs)


def test_few_shot_bad_features() -> None:
    x, lab = _blobs(0)
    with pytest.raises(InputError, match="one label per row"):
        few_shot_episodes(x, lab[:-1])
    x2 = x.copy()
    x2[0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        few_shot_episodes(x2, lab)
    x2[0] = 0.0
    with pytest.raises(InputError, match="all zeros"):
        few_shot_episodes(x2, lab)


# ---------------------------------------------------------------------------------------------
# rejecting classifiers
# ---------------------------------------------------------------------------------------------
def _mixture(seed: int, n_per: int = 60):
    """Two families (A, B) of three models each, plus a held-out model A/a4 and family C."""
    rng = np.random.default_rng(seed)
    d = 6
    fam_centre = {"A": np.r_[4.0, 0, 0, 0, 0, 0], "B": np.r_[-4.0, 0, 0, 0, 0, 0]}
    fam_centre["C"] = np.r_[0.0, 0, 0, 0, 0, 5.0]
    models = {f: [f"{f.lower()}{i}" for i in range(1, 5)] for f in "ABC"}
    offsets = {
        m: rng.normal(size=d) * np.r_[0, 2.5, 2.5, 2.5, 0, 0] for ms in models.values() for m in ms
    }

    def draw(f: str, m: str, n: int):
        return fam_centre[f] + offsets[m] + rng.normal(size=(n, d)) * 0.5

    parts = {
        (f, m): (draw(f, m, n_per), draw(f, m, n_per), draw(f, m, n_per))
        for f in "ABC"
        for m in models[f]
    }
    return parts


def _split(parts, keep, which: int):
    xs, fs, ms = [], [], []
    for (f, m), arrs in parts.items():
        if keep(f, m):
            xs.append(arrs[which])
            fs += [f] * len(arrs[which])
            ms += [m] * len(arrs[which])
    return np.vstack(xs), np.array(fs), np.array(ms)


def _known(f: str, m: str) -> bool:
    return f in "AB" and not m.endswith("4")


class _Counting:
    """A wrapper that records how many rows each predict call saw."""

    def __init__(self, est) -> None:
        self.est, self.calls = est, []

    def fit(self, X, y):
        self.est.fit(X, y)
        return self

    @property
    def classes_(self):
        return self.est.classes_

    def predict_proba(self, X):
        self.calls.append(len(X))
        return self.est.predict_proba(X)


def test_rejecting_classifier_threshold_decide_predict() -> None:
    parts = _mixture(0)
    X, f, _ = _split(parts, _known, 0)
    Xv, fv, _ = _split(parts, lambda *_: True, 1)  # validation incl. unknown family C
    clf = RejectingClassifier(LogisticRegression(max_iter=500).fit(X, f))
    with pytest.raises(InputError, match="tau is not set"):
        clf.decide(X[:2])
    clf.fit_threshold(Xv, fv, tpr=0.9)  # C rows are left out of the threshold
    conf_known = clf.confidence(Xv[np.isin(fv, ["A", "B"])])
    assert clf.tau == threshold_at_tpr(conf_known, 0.9)
    assert np.mean(conf_known >= clf.tau) >= 0.9
    decisions = clf.decide(Xv)
    preds = clf.predict(Xv)
    assert [d.prediction for d in decisions] == preds
    for d in decisions:
        assert isinstance(d, SourceDecision) and abs(sum(d.proba) - 1) < 1e-9
        assert d.is_unknown == (d.confidence < clf.tau)
        json.loads(json.dumps(d.to_dict()))
    # max-logit score through decision_function (binary: logits [-s/2, s/2])
    lg = RejectingClassifier(clf.base, score="logit").fit_threshold(Xv, fv)
    s = clf.base.decision_function(Xv)
    assert np.allclose(lg.confidence(Xv), np.abs(s) / 2)


def test_rejecting_classifier_errors() -> None:
    with pytest.raises(InputError, match="not fitted"):
        RejectingClassifier(LogisticRegression(), tau=0.5).decide(np.zeros((1, 2)))
    with pytest.raises(InputError, match="predict_proba"):
        RejectingClassifier(object())
    with pytest.raises(InputError, match="score must be"):
        RejectingClassifier(LogisticRegression(), score="energy")
    base = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], ["x", "x", "y", "y"])
    with pytest.raises(InputError, match="one label per row"):
        RejectingClassifier(base).fit_threshold([[0.0]], ["x", "y"])
    with pytest.raises(InputError, match="no row of y_val"):
        RejectingClassifier(base).fit_threshold([[0.0]], ["z"])


def test_hierarchy_rejects_held_out_sources_and_consults_level2_only_when_accepted() -> None:
    parts = _mixture(1)
    X, f, m = _split(parts, _known, 0)
    Xv, fv, mv = _split(parts, _known, 1)
    h = Hierarchy.fit(X, f, m, X_val=Xv, families_val=fv, models_val=mv, tpr=0.95)
    Xt, ft, mt = _split(parts, lambda *_: True, 2)
    preds = np.array(h.predict(Xt))
    known = np.array([_known(a, b) for a, b in zip(ft, mt, strict=True)])
    rejected_family = preds == "unknown"
    rejected_any = np.char.endswith(preds.astype(str), "unknown")
    held_family = ft == "C"
    held_model = (ft != "C") & ~known
    assert rejected_family[held_family].mean() > rejected_family[known].mean() + 0.3
    assert rejected_any[held_model].mean() > rejected_any[known].mean() + 0.2
    correct = preds[known] == np.char.add(np.char.add(ft[known], "/"), mt[known])
    assert correct.mean() > 0.8
    for d in h.decide(Xt[:20]):
        assert d.level_path is not None and d.level_path[0].sources == ["A", "B"]
        if d.prediction == "unknown":
            assert len(d.level_path) == 1
        else:
            assert len(d.level_path) == 2 and d.prediction.split("/")[0] in "AB"
            assert d.sources[0].startswith(d.prediction.split("/")[0] + "/")
        json.loads(json.dumps(d.to_dict()))

    # counting wrappers: level 2 sees exactly the rows level 1 accepted for its family
    l1 = RejectingClassifier(_Counting(h.level1.base), h.level1.tau)
    l2 = {k: RejectingClassifier(_Counting(v.base), v.tau) for k, v in h.level2.items()}
    hc = Hierarchy(l1, l2)
    first = [d.prediction for d in l1.decide(Xt)]
    l1.base.calls.clear()
    hc.decide(Xt)
    assert l1.base.calls == [len(Xt)]
    for fam in ("A", "B"):
        n_acc = first.count(fam)
        assert l2[fam].base.calls == ([n_acc] if n_acc else [])


def test_hierarchy_single_model_family_and_errors() -> None:
    parts = _mixture(2, n_per=20)
    keep = lambda f, m: (f == "A" and m == "a1") or (f == "B" and m in ("b1", "b2"))  # noqa: E731
    X, f, m = _split(parts, keep, 0)
    Xv, fv, mv = _split(parts, keep, 1)
    h = Hierarchy.fit(X, f, m, X_val=Xv, families_val=fv, models_val=mv)
    assert sorted(h.level2) == ["B"]
    assert set(h.predict(Xv[fv == "A"])) <= {"A", "unknown"}
    with pytest.raises(InputError, match="one family and one model name per row"):
        Hierarchy.fit(X, f[:-1], m, X_val=Xv, families_val=fv, models_val=mv)
    with pytest.raises(InputError, match="at least two families"):
        Hierarchy.fit(X, np.full(len(f), "A"), m, X_val=Xv, families_val=fv, models_val=mv)
    with pytest.raises(InputError, match="level 1 does not know"):
        Hierarchy(h.level1, {"Z": h.level2["B"]})
