"""Time-series attribution (issue 20): TimeX's synthetic sets with their truth masks, the
TimeSeriesTask (cells, steps, windows, overlapping windows; torch, scikit-learn and callable
models), TimeX's metrics (AUPRC = scikit-learn), occlusion, the generic gradient methods through
the task, TimeX, the UCR reader and bad inputs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import auc, average_precision_score, precision_recall_curve

import attribkit as ak
from attribkit.core.attribution import Attribution
from attribkit.core.errors import InputError, ScorerError
from attribkit.core.registry import MethodSpec, run
from attribkit.evaluation.timeseries import (
    aup_aur,
    average_precision,
    ground_truth_scores,
    iou_at_quantile,
    normalize_map,
    random_maps,
)
from attribkit.methods.timeseries.timex import TimeX
from attribkit.models.timeseries import (
    SeriesCNN,
    fit_series_classifier,
    load_series_cnn,
    predict_series,
    save_series_cnn,
)
from attribkit.tasks.timeseries import (
    OverlappingWindowUnits,
    SeriesUnits,
    TimeSeriesTask,
    series_map,
)
from attribkit.tasks.timeseries_data import (
    find_sktime_wheel,
    freq_shapes,
    load_ucr,
    low_var_detect,
    narma2,
    read_series,
    read_ts,
    seqcomb_mv,
    seqcomb_uv,
    synthetic_splits,
)

#: the registry entries proposed for the catalog (tested here without registering them)
OCCLUSION = MethodSpec(
    "occlusion",
    "attribkit.methods.timeseries.occlusion:occlusion",
    "timeseries",
    cost="n_windows × (C if by_channel else 1) + 1 forward passes",
    cite="Zeiler & Fergus, 'Visualizing and Understanding Convolutional Networks', ECCV 2014",
)
TIMEX = MethodSpec(
    "timex",
    "attribkit.methods.timeseries.timex:timex",
    "timeseries",
    cost="3 forward passes; training here: N forward + epochs × N forward and backward passes",
    cite="Queen et al., 'Encoding Time-Series Explanations through Self-Supervised Model "
    "Behavior Consistency', NeurIPS 2023",
)


class Linear(torch.nn.Module):
    """logits_k = sum_{t,c} W[k, t, c] x[t, c] on (B, T, C) batches."""

    def __init__(self, w: np.ndarray) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.as_tensor(w, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("btc,ktc->bk", x.to(self.w.dtype), self.w)


def linear_task(t: int = 12, c: int = 2, **kw: Any) -> tuple[TimeSeriesTask, np.ndarray]:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, t, c))
    x = rng.normal(size=(t, c))
    return TimeSeriesTask(Linear(w), x, target=1, **kw), w[1]


# --- the synthetic sets -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, shape", [(freq_shapes, (50, 1)), (seqcomb_uv, (200, 1)), (seqcomb_mv, (200, 4))]
)
def test_generators_are_seeded_balanced_and_have_masks_of_the_right_shape(make, shape) -> None:
    a, b, other = make(40, seed=3), make(40, seed=3), make(40, seed=4)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert not np.array_equal(a.X, other.X)
    assert a.X.shape == (40, *shape) and a.masks.shape == a.X.shape and a.masks.dtype == bool
    assert np.bincount(a.y).tolist() == [10, 10, 10, 10]
    assert np.isfinite(a.X).all()


def test_freq_shapes_spikes_are_the_truth() -> None:
    s = freq_shapes(80, seed=0)
    for x, m, y in zip(s.X[:, :, 0], s.masks[:, :, 0], s.y, strict=True):
        assert m.sum() % 3 == 0 and m.sum() >= 3  # whole 3-step spikes, at least one
        starts = np.nonzero(np.diff(np.r_[0, m.astype(int)]) == 1)[0]
        assert set(np.diff(starts)) <= {10 if y < 2 else 17}  # the class's period
        sign = 1 if y % 2 == 1 else -1
        assert (sign * x[m]).mean() > 1.5  # spikes of ±(1.75, 2, 1.75) under 0.25 noise
        assert abs(x[~m].mean()) < 0.25


def test_seqcomb_truth_is_two_subsequences_and_none_for_class_zero() -> None:
    uv = seqcomb_uv(60, seed=1)
    for m, y in zip(uv.masks[:, :, 0], uv.y, strict=True):
        runs = np.diff(np.r_[0, m.astype(int), 0])
        lengths = np.nonzero(runs == -1)[0] - np.nonzero(runs == 1)[0]
        if y == 0:
            assert not m.any()
        else:  # two non-overlapping runs of 10-19 steps (they may touch)
            assert 20 <= m.sum() <= 38 and all(1 <= n <= 38 for n in lengths)
    mv = seqcomb_mv(60, seed=1)
    for m, y in zip(mv.masks, mv.y, strict=True):
        channels = np.nonzero(m.any(axis=0))[0]
        assert len(channels) == (0 if y == 0 else 2)
        for ch in channels:
            assert 15 <= m[:, ch].sum() <= 29


def test_seqcomb_slopes_follow_the_class() -> None:
    uv = seqcomb_uv(80, seed=2)
    for x, m, y in zip(uv.X[:, :, 0], uv.masks[:, :, 0], uv.y, strict=True):
        if y == 0:
            continue
        runs = np.diff(np.r_[0, m.astype(int), 0])
        starts, ends = np.nonzero(runs == 1)[0], np.nonzero(runs == -1)[0]
        if len(starts) != 2:  # the two subsequences touch: one run
            continue
        slopes = [
            np.polyfit(np.arange(e - s), x[s:e], 1)[0] for s, e in zip(starts, ends, strict=True)
        ]
        expected = {1: (-1, -1), 2: (1, 1), 3: (1, -1)}[int(y)]
        assert tuple(np.sign(slopes)) == expected


def test_low_var_detect_has_one_low_variance_stretch_on_the_class_channel() -> None:
    s = low_var_detect(80, seed=0)
    for x, m, y in zip(s.X, s.masks, s.y, strict=True):
        ch = 0 if y < 2 else 1
        assert m[:, ch].sum() == m.sum() and 10 <= m.sum() <= 19
        assert x[m[:, ch], ch].std() < 0.3 and x[~m[:, ch], ch].std() > 0.7
        assert np.sign(x[m[:, ch], ch].mean()) == (-1 if y in (0, 2) else 1)


def test_narma2_is_timesynths_recurrence() -> None:
    y = narma2(np.random.default_rng(0), 4, 3000)
    assert abs(y[:, 100:].mean() - (0.1 + 1.5 * 0.25**2) / 0.7) < 0.01  # stationary mean
    assert y.min() > 0.1 and y.max() < 0.9


# --- the metrics ------------------------------------------------------------------------------
def test_average_precision_equals_sklearn_with_and_without_ties() -> None:
    rng = np.random.default_rng(0)
    for i in range(30):
        y = rng.random(60) < 0.2
        y[i % 60] = True
        s = rng.random(60) if i % 2 else np.round(rng.random(60), 1)  # ties on odd rounds
        assert average_precision(s, y) == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_aup_aur_equal_sklearn_curves_and_a_hand_case() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        y = rng.random(50) < 0.3
        y[0] = True
        s = normalize_map(rng.normal(size=50))
        prec, rec, thr = precision_recall_curve(y, s)
        aup, aur = aup_aur(s, y)
        assert aup == pytest.approx(auc(thr, prec[:-1])) and aur == pytest.approx(
            auc(thr, rec[:-1])
        )
    # scores 0, 0.5, 1 with truth on the 1: precision 1/3, 1/2, 1 and recall 1, 1, 1
    aup, aur = aup_aur([0.0, 0.5, 1.0], [False, False, True])
    assert aup == pytest.approx(0.5 * (1 / 3 + 1 / 2) / 2 + 0.5 * (1 / 2 + 1) / 2)
    assert aur == pytest.approx(1.0)
    assert aup_aur([1.0, 1.0], [True, False]) == (0.0, 0.0)  # a constant map


def test_iou_at_quantile_and_ground_truth_scores_by_hand() -> None:
    truth = np.zeros((10, 1), dtype=bool)
    truth[:2] = True
    perfect = truth.astype(float)
    assert iou_at_quantile(perfect, truth, 0.8) == 1.0
    half = np.zeros((10, 1))
    half[1:3] = 1.0  # one hit, one miss
    assert iou_at_quantile(half, truth, 0.8) == pytest.approx(1 / 3)
    maps = np.stack([-3 * perfect, half, np.ones((10, 1))])  # |.|: a negative map is perfect
    masks = np.stack([truth, truth, np.zeros_like(truth)])  # the last has no positive: excluded
    g = ground_truth_scores(maps, masks)
    assert g.n_evaluated == 2 and g.n_excluded == 1 and np.isnan(g.per_sample["auprc"][2])
    assert g.per_sample["auprc"][0] == pytest.approx(1.0)
    assert g.per_sample["auprc"][1] == pytest.approx(average_precision_score(truth, half))
    assert g.auprc == pytest.approx((1.0 + average_precision_score(truth, half)) / 2)
    rand = ground_truth_scores(random_maps((200, 10, 1)), np.repeat(truth[None], 200, 0))
    assert abs(rand.auprc - 0.33) < 0.1  # random AUPRC is near the positive rate (plus a bit)


# --- units --------------------------------------------------------------------------------------
def test_cells_timesteps_and_windows_partition_the_series() -> None:
    task, _ = linear_task(10, 2)
    assert len(task.units) == 20 and task.units.labels[:3] == ["c0[0]", "c1[0]", "c0[1]"]
    steps = task.make_units("timesteps")
    assert len(steps) == 10 and steps.labels[0] == "t[0]"
    win = task.make_units("windows", width=4)
    assert isinstance(win, SeriesUnits) and win.labels == ["t[0:4]", "t[4:8]", "t[8:10]"]
    per = task.make_units("windows", width=4, by_channel=True)
    assert len(per) == 6 and per.labels[1] == "c1[0:4]"
    kept = win.compose(np.array([True, False, True]))
    np.testing.assert_array_equal(kept[4:8], 0.0)
    np.testing.assert_array_equal(kept[:4], task.x[:4])
    np.testing.assert_array_equal(
        win.heatmap(np.array([1.0, 2.0, 3.0]))[:, 1], [1] * 4 + [2] * 4 + [3] * 2
    )


def test_overlapping_windows_remove_an_element_when_any_covering_window_is_removed() -> None:
    task, _ = linear_task(10, 2, baseline="mean")
    u = task.make_units("windows", width=4, stride=2)
    assert isinstance(u, OverlappingWindowUnits)
    assert [un.meta["t"] for un in u] == [[0, 4], [2, 6], [4, 8], [6, 10]]
    for i in range(len(u)):  # removing one window removes exactly its steps
        mask = np.ones(len(u), dtype=bool)
        mask[i] = False
        out = u.compose(mask)
        lo, hi = u[i].meta["t"]
        np.testing.assert_allclose(out[lo:hi], task.baseline[lo:hi])
        np.testing.assert_array_equal(
            np.delete(out, range(lo, hi), 0), np.delete(task.x, range(lo, hi), 0)
        )
    only = u.compose(np.array([False, True, False, False]))  # window 2..6 minus its neighbours
    np.testing.assert_allclose(only, task.baseline)  # every step of it is covered by a removed one
    hm = u.heatmap(np.array([1.0, 2.0, 3.0, 4.0]))[:, 0]
    np.testing.assert_allclose(hm, [1, 1, 1.5, 1.5, 2.5, 2.5, 3.5, 3.5, 4, 4])
    np.testing.assert_allclose(
        u.reduce(np.arange(10.0)[:, None].repeat(2, 1)), [1.5, 3.5, 5.5, 7.5]
    )
    flush = task.make_units("windows", width=4, stride=3, by_channel=True)
    assert [un.meta["t"] for un in flush][::2] == [[0, 4], [3, 7], [6, 10]]  # flush last window
    a = ak.attribute(task, "loo", units="windows", width=4, stride=2)
    assert a.task == "timeseries" and series_map(a).shape == (10, 2)


# --- methods on the task -----------------------------------------------------------------------
def test_occlusion_is_exact_on_a_linear_model() -> None:
    task, w = linear_task(12, 2)
    a = run(OCCLUSION, task)  # width 1, per channel, zero baseline: w * x
    np.testing.assert_allclose(series_map(a), w * task.x, atol=1e-9)
    np.testing.assert_allclose(a.scores, (w * task.x).ravel(), atol=1e-9)
    assert a.cost.forward_passes == 24 + 1 and a.extras["n_windows"] == 24
    win = TimeSeriesTask(task.model, task.x, target=1, units="windows", width=4)
    b = run(OCCLUSION, win, by_channel=False)  # the task's windows: each window's change
    np.testing.assert_allclose(b.scores, (w * task.x).reshape(3, 4, 2).sum((1, 2)), atol=1e-9)
    slide = run(OCCLUSION, task, width=4, stride=2)  # sliding: overlaps averaged
    assert slide.params == {"width": 4, "stride": 2, "by_channel": True, "baseline": "task"}
    assert slide.cost.forward_passes == 5 * 2 + 1
    d = json.loads(json.dumps(slide.to_dict(), allow_nan=False))
    back = Attribution.from_dict(d)
    np.testing.assert_allclose(series_map(back), series_map(slide))
    assert back.input["series"] == task.x.tolist() and back.task == "timeseries"


def test_gradient_methods_run_through_the_task() -> None:
    task, w = linear_task(12, 2)
    ig = ak.attribute(task, "integrated_gradients")
    assert ig.task == "timeseries" and ig.cost.backward_passes > 0
    np.testing.assert_allclose(series_map(ig), w * task.x, atol=1e-6)
    ixg = ak.attribute(task, "input_x_gradient", units="windows", width=4)
    np.testing.assert_allclose(ixg.scores, (w * task.x).reshape(3, 4, 2).sum((1, 2)), atol=1e-9)
    with pytest.raises(InputError, match="overlap"):
        ak.attribute(task, "saliency", units="windows", width=4, stride=2)


def test_perturbation_methods_run_on_sklearn_and_callable_models() -> None:
    from sklearn.linear_model import LogisticRegression

    data = freq_shapes(120, seed=0)
    clf = LogisticRegression(max_iter=300).fit(data.X.reshape(120, -1), data.y)
    task = TimeSeriesTask(clf, data.X[0, :, 0], units="windows", width=10)
    assert task.classes == ["0", "1", "2", "3"] and not task.supports_gradients
    a = ak.attribute(task, "kernel_shap", n_samples=64)
    assert len(a.units) == 5 and series_map(a).shape == (50, 1)
    o = ak.attribute(task, "occlusion") if _registered("occlusion") else run(OCCLUSION, task)
    assert o.params["width"] == 10
    with pytest.raises(InputError, match="gradient"):
        ak.attribute(task, "integrated_gradients")
    with pytest.raises(InputError, match="torch"):
        run(TIMEX, task)
    calls: list[int] = []

    def scores(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        return np.stack([batch.sum((1, 2)), -batch.sum((1, 2))], axis=1)

    ctask = TimeSeriesTask(scores, np.arange(6.0), target=0)
    loo = ak.attribute(ctask, "loo")
    np.testing.assert_allclose(loo.scores, np.arange(6.0))
    assert loo.cost.forward_passes == sum(calls) - 1  # not the task's own prediction


def _registered(name: str) -> bool:
    return any(s.name == name and s.kind == "timeseries" for s in ak.list_methods())


# --- a small real case: a CNN trained on FreqShapes -----------------------------------------------
@pytest.fixture(scope="module")
def freqshapes_cnn() -> tuple[SeriesCNN, Any, Any]:
    train, test = synthetic_splits("freqshapes", 600, 60, seed=0)
    torch.manual_seed(0)
    net = SeriesCNN(1, 4, width=16)
    fit_series_classifier(net, train.X, train.y, epochs=8, seed=0)
    return net, train, test


def test_a_trained_cnn_is_explained_better_than_random(freqshapes_cnn) -> None:
    net, _, test = freqshapes_cnn
    acc = float((predict_series(net, test.X).argmax(1) == test.y).mean())
    assert acc >= 0.85  # chance: 0.25
    tasks = [TimeSeriesTask(net, x) for x in test.X[:30]]
    occ = [run(OCCLUSION, t, width=3, stride=1) for t in tasks]
    ig = [ak.attribute(t, "integrated_gradients", n_steps=16) for t in tasks]
    masks = test.masks[:30]
    random = ground_truth_scores(random_maps(masks.shape, seed=0), masks).auprc
    for maps in (occ, ig):
        assert ground_truth_scores(maps, masks).auprc > random + 0.2


def test_timex_learns_masks_that_beat_random_and_counts_every_model_pass(freqshapes_cnn) -> None:
    net, train, test = freqshapes_cnn
    rows = _count_rows(net)
    explainer = TimeX(net, epochs=4, seed=0).fit(train.X[:300])
    assert rows.rows == 300 + 4 * 300  # the model once, its surrogate copy each epoch
    assert explainer.meter.cost.forward_passes == rows.rows
    assert explainer.meter.cost.backward_passes == 4 * 300
    masks = explainer.masks(test.X)
    assert masks.shape == test.X.shape and (masks >= 0).all() and (masks <= 1).all()
    random = ground_truth_scores(random_maps(masks.shape, seed=0), test.masks).auprc
    assert ground_truth_scores(masks, test.masks).auprc > random + 0.1
    task = TimeSeriesTask(net, test.X[0])
    a = run(TIMEX, task, explainer=explainer)
    np.testing.assert_allclose(series_map(a), masks[0], rtol=1e-5)  # float32, other batch
    assert a.cost.forward_passes == 3 and a.params["explainer"] == "given"
    assert 0 <= a.extras["landmark"] < 16 and explainer.history[-1] < explainer.history[0]
    again = TimeX(net, epochs=4, seed=0).fit(train.X[:300]).masks(test.X[:5])
    np.testing.assert_array_equal(again, explainer.masks(test.X[:5]))  # seeded: identical


def test_integrated_gradients_completeness_on_the_trained_cnn(freqshapes_cnn) -> None:
    net, _, test = freqshapes_cnn
    task = TimeSeriesTask(net, test.X[0], baseline=np.zeros(50))
    a = ak.attribute(task, "integrated_gradients", n_steps=64)
    f = task.values(np.stack([task.x, task.baseline]))
    assert abs(f[0] - f[1]) > 1.0  # a real difference to share out
    assert a.extras["completeness_error"] < 5e-3
    assert a.scores.sum() == pytest.approx(f[0] - f[1], rel=5e-3)


def test_saved_cnn_loads_without_pickle(freqshapes_cnn, tmp_path) -> None:
    net, _, test = freqshapes_cnn
    path = save_series_cnn(net, tmp_path / "cnn.safetensors")
    back = load_series_cnn(path)
    np.testing.assert_allclose(predict_series(back, test.X[:4]), predict_series(net, test.X[:4]))


# --- the conformance suite, with the ToyKind proposed for attribkit.testing ----------------------
class _Rows:
    def __init__(self, module: torch.nn.Module) -> None:
        self.rows, self.grad_rows = 0, 0

        def hook(_m: Any, args: tuple) -> None:  # copied with the module (TimeX's surrogate)
            self.rows += int(args[0].shape[0])
            self.grad_rows += int(args[0].shape[0]) if torch.is_grad_enabled() else 0

        module.register_forward_pre_hook(hook)


def _count_rows(module: torch.nn.Module) -> _Rows:
    return _Rows(module)


def toy_timeseries_task(units: str = "cells", width: int | None = None) -> TimeSeriesTask:
    """A TimeSeriesTask on a tiny random CNN (2 channels, 3 classes), a 12-step series and 8
    background series (for TimeX)."""
    torch.manual_seed(0)
    net = SeriesCNN(2, 3, width=4, dilations=(1, 2))
    rng = np.random.default_rng(0)
    x, background = rng.normal(size=(12, 2)), rng.normal(size=(8, 12, 2))
    return TimeSeriesTask(net, x, units=units, width=width, background=background)


def _counted_timeseries_task() -> tuple[TimeSeriesTask, _Rows]:
    task = toy_timeseries_task()
    return task, _Rows(task.model)


def _nan_timeseries_task() -> TimeSeriesTask:
    task = toy_timeseries_task()
    with torch.no_grad():  # the model breaks after the task was built
        task.model.head.bias.fill_(float("nan"))
    return task


@pytest.mark.parametrize("spec, params", [(OCCLUSION, {}), (TIMEX, {"epochs": 2})])
def test_methods_pass_the_conformance_suite(monkeypatch, spec, params) -> None:
    from attribkit import testing

    @dataclass(frozen=True)
    class _Kind:
        make: Any
        one_unit: Any
        broken: Any

    kind = testing.TOY_KINDS.get("timeseries") or _Kind(
        _counted_timeseries_task,
        lambda p: (toy_timeseries_task(units="windows", width=12), p),  # one window: one unit
        _nan_timeseries_task,
    )
    monkeypatch.setitem(testing.TOY_KINDS, "timeseries", kind)
    testing.check_method(spec, **params)


# --- bad inputs ---------------------------------------------------------------------------------
def test_bad_inputs_get_clear_errors() -> None:
    from sklearn.dummy import DummyClassifier

    task, _ = linear_task(12, 2)
    x = task.x.copy()
    x[3, 1] = np.nan
    with pytest.raises(InputError, match="step 3, channel 1"):
        TimeSeriesTask(task.model, x)
    with pytest.raises(InputError, match="wider than the series"):
        TimeSeriesTask(task.model, task.x, units="windows", width=13)
    with pytest.raises(InputError, match="wider than the series"):
        run(OCCLUSION, task, width=20)
    with pytest.raises(InputError, match="stride"):
        task.make_units("windows", width=3, stride=4)
    with pytest.raises(InputError, match=r"\(T,\) or \(T, C\)"):
        TimeSeriesTask(task.model, np.zeros((2, 12, 2)))
    with pytest.raises(InputError, match="baseline"):
        TimeSeriesTask(task.model, task.x, baseline=np.zeros(5))
    with pytest.raises(InputError, match="background"):
        TimeSeriesTask(task.model, task.x, background=np.zeros((3, 11, 2)))
    with pytest.raises(InputError, match="target"):
        TimeSeriesTask(task.model, task.x, target=7)
    with pytest.raises(InputError, match="not a classifier"):
        TimeSeriesTask(object(), task.x)
    single = DummyClassifier().fit(np.zeros((4, 24)), np.zeros(4))
    with pytest.raises(InputError, match="single class"):
        TimeSeriesTask(single, task.x)
    with pytest.raises(InputError, match="single class"):
        TimeSeriesTask(lambda b: np.zeros((len(b), 1)), task.x)
    with pytest.raises(ScorerError, match="shape"):
        TimeSeriesTask(lambda b: np.zeros(len(b)), task.x)
    with pytest.raises(ScorerError, match="NaN"):
        TimeSeriesTask(lambda b: np.full((len(b), 2), np.nan), task.x)
    with pytest.raises(InputError, match="not trained"):
        TimeX(task.model).masks(task.x[None])
    other = TimeX(Linear(np.zeros((3, 12, 2))), epochs=1).fit(np.zeros((4, 12, 2)))
    with pytest.raises(InputError, match="this task's model"):
        run(TIMEX, task, explainer=other)


# --- the UCR archive ----------------------------------------------------------------------------
TS_FILE = b"""# a comment
@problemName Toy
@timeStamps false
@univariate false
@classLabel true up down
@data
1,2,3:4,5,6:up
3,2,1:6,5,4:down
"""


def test_read_ts_reads_multivariate_series_and_labels() -> None:
    X, y, labels = read_ts(TS_FILE)
    assert X.shape == (2, 3, 2) and labels == ["up", "down"] and y.tolist() == [0, 1]
    np.testing.assert_array_equal(X[0, :, 1], [4, 5, 6])
    with pytest.raises(InputError, match="missing"):
        read_ts(TS_FILE.replace(b"1,2,3:4", b"1,?,3:4"))
    with pytest.raises(InputError, match="not declared"):
        read_ts(TS_FILE.replace(b":down", b":left"))


def test_read_series_reads_npy_csv_and_ts_files(tmp_path) -> None:
    np.save(tmp_path / "x.npy", np.arange(5.0))
    assert read_series(tmp_path / "x.npy").shape == (5, 1)
    (tmp_path / "x.csv").write_text("a,b\n1,2\n3,4\n5,6\n", encoding="utf-8")
    np.testing.assert_array_equal(read_series(tmp_path / "x.csv"), [[1, 2], [3, 4], [5, 6]])
    (tmp_path / "x.ts").write_bytes(TS_FILE)
    np.testing.assert_array_equal(read_series(tmp_path / "x.ts", index=1)[:, 0], [3, 2, 1])
    (tmp_path / "bad.csv").write_text("1,2\nnan,4\n", encoding="utf-8")
    with pytest.raises(InputError, match="missing"):
        read_series(tmp_path / "bad.csv")
    (tmp_path / "x.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(InputError, match="format"):
        read_series(tmp_path / "x.json")


@pytest.mark.skipif(
    find_sktime_wheel() is None,
    reason="no sktime wheel: `pip download sktime --no-deps -d DIR`, then set "
    "ATTRIBKIT_SKTIME_WHEEL=DIR/sktime-*.whl (or put it under ~/.cache/attribkit/data)",
)
def test_gunpoint_and_basicmotions_come_from_the_sktime_wheel() -> None:
    gp = load_ucr("GunPoint", "train")
    assert gp.X.shape == (50, 150, 1) and gp.classes == ["1", "2"] and gp.masks is None
    assert load_ucr("GunPoint", "test").X.shape == (150, 150, 1)
    bm = load_ucr("BasicMotions", "test")
    assert bm.X.shape == (40, 100, 6) and len(bm.classes) == 4
    with pytest.raises(InputError, match="no sktime"):
        load_ucr("NoSuchSet")
