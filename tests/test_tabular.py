"""TabularTask: any scikit-learn estimator or torch module, features as named units, baselines
from data (mean, median, interventional background sample), every model row counted; generic
perturbation methods exact where the theory says so, gradient methods on a torch model, and
clear errors for bad models and rows."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import attribkit as ak
from attribkit.core.errors import InputError, ScorerError
from attribkit.models.tabular import TabularModel
from attribkit.tasks.tabular import TabularTask, attribute_tabular


@pytest.fixture(scope="module")
def cancer() -> tuple[np.ndarray, np.ndarray, list[str], Any]:
    d = load_breast_cancer()
    X, y = d.data[:, :10], d.target  # 10 features: exact Shapley values stay cheap
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, y)
    return X, y, list(d.feature_names[:10]), model


@pytest.fixture(scope="module")
def diabetes() -> tuple[np.ndarray, Any]:
    d = load_diabetes()
    return d.data, LinearRegression().fit(d.data, d.target)


class Counting:
    """A scikit-learn-like classifier that counts the rows it is asked about."""

    def __init__(self, model: Any) -> None:
        self.model, self.rows = model, 0
        self.classes_ = model.classes_
        self.n_features_in_ = model.n_features_in_

    def predict(self, X: np.ndarray) -> np.ndarray:
        self.rows += len(X)
        return self.model.predict(X)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        self.rows += len(X)
        return self.model.predict_proba(X)


def test_a_task_names_its_features_and_its_decision(cancer) -> None:
    X, _, names, model = cancer
    task = TabularTask(model, X[0], feature_names=names, background=X, target=1)
    assert task.kind == "tabular" and task.n_units == 10
    assert [u.label for u in task.units] == names
    assert task.output == "proba" and task.target_class == 1
    info = task.target_info
    assert info["class"] == 1 and 0.0 <= info["value"] <= 1.0
    assert info["value"] == pytest.approx(model.predict_proba(X[:1])[0, 1])
    np.testing.assert_allclose(task.units.baseline, X.mean(axis=0))
    median = TabularTask(model, X[0], background=X, baseline="median")
    np.testing.assert_allclose(median.units.baseline, np.median(X, axis=0))
    assert median.names[0] == "x0"  # no names given
    assert median.target_class == model.predict(X[:1])[0]  # default: the predicted class


def test_every_model_row_is_counted_on_the_task_meter(cancer) -> None:
    X, _, names, model = cancer
    counting = Counting(model)
    task = TabularTask(counting, X[3], feature_names=names, background=X, target=1)
    assert counting.rows == 2  # the prediction on x and the target's value
    a = ak.attribute(task, "kernel_shap", n_samples=200)
    assert a.task == "tabular" and a.scores.shape == (10,)
    assert a.cost.forward_passes == counting.rows - 2 > 0
    sample = TabularTask(counting, X[3], background=X[:20], baseline="sample", target=1)
    before = counting.rows
    b = ak.attribute(sample, "loo")
    assert counting.rows - before == b.cost.forward_passes == 20 * 11  # 20 rows per coalition


def test_perturbation_methods_are_exact_on_a_linear_model(diabetes) -> None:
    X, model = diabetes
    task = TabularTask(model, X[7], background=X)  # a regressor: output "predict"
    assert task.output == "predict" and task.target_class is None
    exact = model.coef_ * (X[7] - X.mean(axis=0))  # Shapley values of a linear model
    for method in ("loo", "shapley", "kernel_shap"):
        a = ak.attribute(task, method)
        np.testing.assert_allclose(a.scores, exact, atol=1e-8, err_msg=method)


def test_shapley_is_efficient_on_a_classifier(cancer) -> None:
    X, _, names, model = cancer
    task = TabularTask(model, X[20], feature_names=names, background=X, target=1)
    a = ak.attribute(task, "shapley")
    f = task.values(np.stack([X[20], X.mean(axis=0)]))
    assert a.scores.sum() == pytest.approx(f[0] - f[1], abs=1e-9)
    k = ak.attribute(task, "kernel_shap")  # 2^10 - 2 coalitions: every one enumerated
    np.testing.assert_allclose(k.scores, a.scores, atol=1e-8)


def test_a_background_sample_averages_the_model_over_its_rows(cancer) -> None:
    X, _, _, model = cancer
    bg = X[:30]
    task = TabularTask(model, X[100], background=bg, baseline="sample", target=1)
    scorer = task.scorer()
    empty = scorer.empty()
    assert empty == pytest.approx(model.predict_proba(bg)[:, 1].mean())
    a = ak.attribute(task, "shapley")  # efficiency against the background mean
    assert a.scores.sum() == pytest.approx(task.value - empty, abs=1e-9)
    few = TabularTask(model, X[100], background=X, baseline="sample", n_background=7)
    assert len(few.units.background) == 7
    assert a.input["background_rows"] == 30


def test_decision_output_and_a_string_target() -> None:
    X, y = load_breast_cancer(return_X_y=True)
    labels = np.where(y == 1, "benign", "malignant")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, labels)
    task = TabularTask(model, X[0], background=X, target="benign", output="decision")
    # decision_function is the score of classes_[1] = "malignant": the benign score is its negative
    assert task.value == pytest.approx(-model.decision_function(X[:1])[0])
    a = ak.attribute(task, "loo")
    assert a.target["class"] == "benign"


def test_integrated_gradients_run_on_a_torch_model() -> None:
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 2).double()
    X = np.random.default_rng(0).normal(size=(50, 4))
    task = TabularTask(lin, X[0], background=X, output="decision", target=1)
    assert task.supports_gradients
    a = ak.attribute(task, "integrated_gradients")
    assert a.task == "tabular" and a.cost.backward_passes > 0
    w = (lin.weight[1]).detach().numpy()
    np.testing.assert_allclose(a.scores, w * (X[0] - X.mean(axis=0)), atol=1e-5)
    k = ak.attribute(task, "kernel_shap")  # the same logit, exact for a linear model
    np.testing.assert_allclose(k.scores, a.scores, atol=1e-5)
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    t2 = TabularTask(mlp, X[1], background=X)  # probability of the predicted class
    ig = ak.attribute(t2, "integrated_gradients", n_steps=64)
    f = t2.values(np.stack([X[1], X.mean(axis=0)]))
    assert ig.scores.sum() == pytest.approx(f[0] - f[1], abs=1e-3)  # completeness


def test_a_broken_torch_model_is_a_scorer_error() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(3, 2))
    X = np.random.default_rng(1).normal(size=(10, 3))
    task = TabularTask(net, X[0], background=X)
    with torch.no_grad():
        net[0].bias.fill_(float("nan"))
    with pytest.raises(ScorerError, match="NaN"):
        ak.attribute(task, "loo")


def test_a_dataframe_row_keeps_its_names() -> None:
    pd = pytest.importorskip("pandas")
    d = load_breast_cancer(as_frame=True)
    frame = d.data.iloc[:, :5]
    model = LogisticRegression(max_iter=2000).fit(frame, d.target)
    a = attribute_tabular(model, frame.iloc[[0]], "loo", background=frame)
    assert [u.label for u in a.units] == list(frame.columns)
    row = attribute_tabular(model, frame.iloc[0], "loo", background=frame.to_numpy())
    np.testing.assert_allclose(row.scores, a.scores)
    assert isinstance(frame, pd.DataFrame)


def test_bad_models_and_rows_get_clear_errors(cancer) -> None:
    X, y, names, model = cancer
    with pytest.raises(InputError, match="no predict"):
        TabularTask(object(), X[0], background=X)
    one = DummyClassifier().fit(X, np.zeros(len(X), dtype=int))
    with pytest.raises(InputError, match="single class"):
        TabularTask(one, X[0], background=X)
    with pytest.raises(InputError, match="not fitted"):
        TabularTask(LogisticRegression(), X[0], background=X)
    bad = X[0].copy()
    bad[2] = np.nan
    with pytest.raises(InputError, match=f"feature '{names[2]}'"):
        TabularTask(model, bad, feature_names=names, background=X)
    with pytest.raises(InputError, match="11 features but the model was fitted on 10"):
        TabularTask(model, np.append(X[0], 1.0), background=X)
    with pytest.raises(InputError, match="background"):
        TabularTask(model, X[0])  # the mean baseline needs data
    with pytest.raises(InputError, match="one row"):
        TabularTask(model, X[:3], background=X)
    with pytest.raises(InputError, match="not one of the model's classes"):
        TabularTask(model, X[0], background=X, target=7)
    with pytest.raises(InputError, match="regressor"):
        TabularTask(LinearRegression().fit(X, y), X[0], background=X, output="proba")
    with pytest.raises(InputError, match="10 finite values"):
        TabularTask(model, X[0], baseline=np.zeros(3))
    task = TabularTask(model, X[0], background=X)
    with pytest.raises(InputError, match="torch model"):
        ak.attribute(task, "integrated_gradients")  # not a torch model
    with pytest.raises(InputError, match="already a TabularModel"):
        TabularModel(TabularModel(model))
