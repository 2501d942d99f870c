"""Tabular attribution: one row of features before any scikit-learn estimator or torch module.

A :class:`TabularTask` (kind ``"tabular"``) puts one row ``x`` in front of a fitted model
(through :class:`~attribkit.models.tabular.TabularModel`: batched, every row counted on the
task's meter). Its units are the row's features, named; its target is one number per input: the
probability (``output="proba"``) or decision score (``"decision"``, a torch module's logit) of
one class — the class given, or the one the model predicts for ``x`` — or the prediction itself
(``"predict"``: a regressor's value). Every generic perturbation method (``loo``, ``shapley``,
``kernel_shap``, ``lime``...) runs on its mask scorer; over a torch module every gradient method
(``integrated_gradients``, ``saliency``...) runs too; the tabular methods (``responsiveness``)
take the task itself.

What "removing" a feature means (``baseline``):

- ``"mean"`` / ``"median"``: the feature takes its mean / median over the ``background`` rows
  (the training data, say): one model row per coalition;
- ``"sample"``: the *interventional* form of KernelSHAP (Lundberg & Lee, 2017; ``shap``'s
  ``KernelExplainer`` with a background data set): the value of a coalition is the mean of the
  model's output over the background rows, each with the kept features set to ``x``'s values.
  Up to ``n_background`` rows (drawn with ``seed`` when there are more), so every coalition
  costs that many model rows;
- an array (one value per feature) or a number: that value.

A gradient method uses one baseline point: the given array, the mean or median, or the
background mean for ``"sample"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.cost import Budget, CostMeter
from attribkit.core.errors import InputError
from attribkit.core.gradient import GradientScorer
from attribkit.core.registry import attribute
from attribkit.core.scorer import Scorer
from attribkit.core.task import Task
from attribkit.core.units import FeatureUnits
from attribkit.models.actions import ActionSet
from attribkit.models.tabular import DEFAULT_BATCH, TabularModel, as_rows

__all__ = ["OUTPUTS", "TabularTask", "TabularUnits", "attribute_tabular"]

OUTPUTS = ("proba", "decision", "predict")
BASELINES = ("mean", "median", "sample", "zero")
DEFAULT_METHOD = "kernel_shap"


class TabularUnits(FeatureUnits):
    """The features of one row. A removed feature takes its baseline value; with a
    ``background`` sample (``"sample"`` baseline) ``compose_batch`` returns (B, R, features): for
    each mask, every background row with the kept features set to ``x``."""

    def __init__(
        self,
        x: np.ndarray,
        names: Sequence[str],
        baseline: np.ndarray,
        background: np.ndarray | None = None,
        how: str = "given",
    ) -> None:
        super().__init__(x, names, baseline)
        self.background = background
        self.removal = (
            f"each of {len(background)} background rows (interventional mean)"
            if background is not None
            else f"{how} baseline"
        )

    def compose_batch(self, masks: np.ndarray) -> np.ndarray:  # type: ignore[override]
        if self.background is None:
            return super().compose_batch(masks)
        keep = self.check_masks(masks)
        return np.where(keep[:, None, :], self.x[None, None, :], self.background[None])

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["names"] = self.labels
        if self.background is not None:
            d["background_rows"] = len(self.background)
        return d


class TabularTask(Task):
    """One row of features and a fitted model, ready to be explained (module docstring).

    Args:
        model: a fitted scikit-learn estimator, a torch module returning logits, any object with
            ``predict(X)``, or a :class:`TabularModel` (shared counting across tasks).
        x: the row: a 1-D array, a one-row 2-D array, or a pandas Series / one-row DataFrame
            (its names are used).
        feature_names: the column names (default: the DataFrame's, else ``x0, x1...``).
        background: reference rows (e.g. the training data) for the ``"mean"``, ``"median"``
            and ``"sample"`` baselines.
        baseline: ``"mean"``, ``"median"``, ``"sample"``, ``"zero"``, a number or an array.
        target: the class explained (a label of the model's classes, else an index); None: the
            class the model predicts for ``x``.
        output: ``"proba"``, ``"decision"`` or ``"predict"``; None picks ``"proba"`` for a
            classifier with probabilities (torch modules included), ``"decision"`` for one
            with a decision function only, ``"predict"`` for a regressor.
        batch_size: most model rows per call.
        n_background: most background rows kept for ``"sample"``.
        seed: draws the ``"sample"`` background rows when there are more than ``n_background``.
        actions: an :class:`~attribkit.models.actions.ActionSet` (or an ACTIONS.json path,
            string or dict) for the recourse methods.

    Building the task costs one model row for a torch module or a regressor (the decision on
    ``x``), two for a scikit-learn classifier (its prediction and the target's value).
    """

    kind = "tabular"

    def __init__(
        self,
        model: Any,
        x: Any,
        *,
        feature_names: Sequence[str] | None = None,
        background: Any = None,
        baseline: str | float | Sequence[float] | np.ndarray = "mean",
        target: Any = None,
        output: str | None = None,
        batch_size: int = DEFAULT_BATCH,
        n_background: int = 100,
        seed: int = 0,
        actions: ActionSet | str | dict[str, Any] | None = None,
    ) -> None:
        self.model = (
            model if isinstance(model, TabularModel) else TabularModel(model, batch_size=batch_size)
        )
        rows, names = as_rows(x, feature_names, "x")
        if rows.shape[0] != 1:
            raise InputError(
                f"x holds {rows.shape[0]} rows; a TabularTask explains one row (build one task "
                "per row, or use attribkit.methods.tabular.responsiveness(model, X, ...))"
            )
        self.model.check_rows(rows, "x")
        self.x = rows[0]
        self.names = names if names is not None else [f"x{i}" for i in range(self.x.size)]
        bg = None
        if background is not None:
            bg, _ = as_rows(background, self.names, "background")
            if bg.shape[1] != self.x.size:
                raise InputError(
                    f"background rows have {bg.shape[1]} features, x has {self.x.size}"
                )
        self.background = bg
        self.baseline_kind = baseline if isinstance(baseline, str) else "given"
        base, sample = self._baseline(baseline, bg, n_background, seed)
        self.units = TabularUnits(self.x, self.names, base, sample, self.baseline_kind)
        self.batch_size = int(batch_size)
        self.supports_gradients = self.model.kind == "torch"
        self.output = self._output(output)
        self._resolve_target(target)
        self.actions = None if actions is None else self._actions(actions)

    # --- construction helpers -----------------------------------------------------------------
    def _baseline(
        self, baseline: Any, bg: np.ndarray | None, n_background: int, seed: int
    ) -> tuple[np.ndarray, np.ndarray | None]:
        d = self.x.size
        if isinstance(baseline, str):
            if baseline not in BASELINES:
                raise InputError(f"baseline {baseline!r} is not one of {BASELINES} or an array")
            if baseline == "zero":
                return np.zeros(d), None
            if bg is None:
                raise InputError(
                    f"baseline={baseline!r} is computed from data: pass background=<rows> (e.g. "
                    "the training data), or give the baseline as an array"
                )
            if baseline == "mean":
                return bg.mean(axis=0), None
            if baseline == "median":
                return np.median(bg, axis=0), None
            if n_background < 1:
                raise InputError("n_background must be >= 1")
            if len(bg) > n_background:
                idx = np.sort(np.random.default_rng(seed).choice(len(bg), n_background, False))
                bg = bg[idx]
            return bg.mean(axis=0), bg
        arr = np.asarray(baseline, dtype=float)
        if arr.ndim == 0:
            return np.full(d, float(arr)), None
        if arr.shape != (d,) or not np.isfinite(arr).all():
            raise InputError(
                f"a baseline array must hold {d} finite values (one per feature), got shape "
                f"{arr.shape}"
            )
        return arr, None

    def _output(self, output: str | None) -> str:
        m = self.model
        if output is None:
            if m.kind == "regressor":
                return "predict"
            if m.kind == "torch" or hasattr(m.model, "predict_proba"):
                return "proba"
            return "decision" if hasattr(m.model, "decision_function") else "predict"
        if output not in OUTPUTS:
            raise InputError(f"output {output!r} is not one of {OUTPUTS}")
        if m.kind == "regressor" and output != "predict":
            raise InputError(
                f"the {m.name} is a regressor: it has no classes, so output must be 'predict'"
            )
        return output

    def _resolve_target(self, target: Any) -> None:
        m = self.model
        row = self.x[None, :]
        if m.kind == "regressor":
            if target is not None:
                raise InputError("a regressor has no classes to target; leave target=None")
            self.prediction = _plain(m.predict(row)[0])
            self.class_index, self.target_class = None, None
            self.value = float(self.prediction)
            return
        if m.kind == "torch":
            logits = m.decision(row)[0]  # also learns the classes
            self.prediction = m.classes[int(np.argmax(logits))]  # type: ignore[index]
        else:
            self.prediction = _plain(m.predict(row)[0])
        self.class_index = m.class_index(self.prediction if target is None else target)
        self.target_class = m.classes[self.class_index]  # type: ignore[index]
        if m.kind == "torch":
            # one call gives the prediction; the target value needs no second one
            z = logits - logits.max()
            p = np.exp(z) / np.exp(z).sum()
            self.value = float(
                p[self.class_index] if self.output == "proba" else logits[self.class_index]
            )
            if self.output == "predict":
                self.value = float(self.prediction == self.target_class)
        else:
            self.value = float(self.values(row)[0])

    def _actions(self, actions: Any) -> ActionSet:
        if isinstance(actions, ActionSet):
            if actions.names != self.names:
                raise InputError(
                    "the action set was built for other columns than the task's features; build "
                    "it with the same names, in the same order"
                )
            out = actions
        else:
            out = ActionSet.from_json(actions, self.names)
        out.check(self.x[None, :])
        return out

    # --- the Task contract ------------------------------------------------------------------
    @property
    def meter(self) -> CostMeter:
        """The model adapter: one forward pass per model row."""
        return self.model

    @property
    def target_info(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "kind": f"tabular_{self.output}",
            "output": self.output,
            "model": self.model.name,
            "prediction": self.prediction,
            "value": self.value,
        }
        if self.target_class is None:
            d["description"] = f"the {self.model.name}'s prediction"
        else:
            what = {"proba": "probability", "decision": "decision score", "predict": "prediction"}
            d["description"] = f"{what[self.output]} of class {self.target_class!r}"
            d.update({"class": self.target_class, "class_index": self.class_index})
            d["predicted"] = self.prediction == self.target_class
        return d

    def values(self, rows: np.ndarray) -> np.ndarray:
        """The target value of each composed input: (B, features) rows, or (B, R, features) with
        a background sample (averaged over R). One forward pass per model row."""
        rows = np.asarray(rows, dtype=float)
        if rows.ndim == 3:
            b, r, d = rows.shape
            return (
                self.model.values(rows.reshape(b * r, d), self.output, self.class_index)
                .reshape(b, r)
                .mean(axis=1)
            )
        return self.model.values(rows, self.output, self.class_index)

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """The model's predicted labels (or values) of ``rows``. One forward pass per row."""
        return self.model.predict(np.asarray(rows, dtype=float))

    def scorer(self, budget: Budget | None = None) -> Scorer:
        """A mask :class:`Scorer` over the features (removed = baseline / background rows)."""
        rows = 1 if self.units.background is None else len(self.units.background)
        return Scorer(
            self.units,
            self.values,
            target=self.target_info,
            batch_size=max(1, self.batch_size // rows),
            budget=budget,
            meter=self.model,
            task_kind=self.kind,
        )

    def unit_scorer(self, params: dict[str, Any]) -> Scorer:
        """:meth:`scorer`; takes ``budget`` from ``params``."""
        return self.scorer(budget=params.pop("budget", None))

    def unit_gradient_scorer(self, params: dict[str, Any]) -> GradientScorer:
        """A :class:`GradientScorer` over the features of a torch model (baseline: the task's
        baseline point); the probability (``"proba"``) or logit (``"decision"``) of the target
        class. Costs one forward pass to build."""
        if self.model.kind != "torch":
            return super().unit_gradient_scorer(params)
        if self.output == "predict":
            raise InputError("a hard prediction has no gradient: use output='proba' or 'decision'")
        import torch

        gs = self.model.torch.gradient_scorer(
            torch.tensor(self.x, dtype=torch.float32),
            target=self.class_index,
            output="prob" if self.output == "proba" else "logit",
            baseline=torch.tensor(self.units.baseline, dtype=torch.float32),
            units=self.units,
        )
        gs.target, gs.task_kind = self.target_info, self.kind  # type: ignore[attr-defined]
        return gs

    def attribute(self, method: str = DEFAULT_METHOD, **params: Any) -> Attribution:
        """Run ``method`` (default ``kernel_shap``) on this task (:func:`attribkit.attribute`)."""
        return attribute(self, method, **params)

    def __repr__(self) -> str:
        return (
            f"TabularTask({self.x.size} features, {self.model.name}, output={self.output!r}, "
            f"prediction={self.prediction!r})"
        )


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def attribute_tabular(
    model: Any,
    x: Any,
    method: str = DEFAULT_METHOD,
    *,
    feature_names: Sequence[str] | None = None,
    background: Any = None,
    baseline: str | float | Sequence[float] | np.ndarray = "mean",
    target: Any = None,
    output: str | None = None,
    actions: ActionSet | str | dict[str, Any] | None = None,
    **params: Any,
) -> Attribution:
    """Explain ``model``'s decision on the row ``x`` with ``method`` (default ``kernel_shap``).

    Returns an Attribution over the named features. Costs one model row for the decision plus
    the method's cost, times the background rows with ``baseline="sample"``.
    """
    task = TabularTask(
        model,
        x,
        feature_names=feature_names,
        background=background,
        baseline=baseline,
        target=target,
        output=output,
        actions=actions,
    )
    return task.attribute(method, **params)
