"""Any tabular model behind one counted, batched interface: a scikit-learn estimator, a torch
module, or any object with ``predict(X)``.

:class:`TabularModel` answers ``predict`` (labels), ``proba`` (class probabilities) and
``decision`` (decision scores or logits) for a (rows, features) array, in batches of
``batch_size`` rows, and counts every row it sends to the model on its own ``cost`` (it is a
:class:`~attribkit.core.cost.CostMeter`). A torch module goes through
:class:`~attribkit.models.classifier.TorchClassifier`, which also gives gradient scorers. The
checks a person needs are made once, with messages that say what to fix: a model without
``predict``, an unfitted estimator, a classifier that knows one class, rows of the wrong width,
NaN inputs or outputs.

A model fitted on a pandas DataFrame (it has ``feature_names_in_``) receives DataFrames with
those columns; pandas is imported only then.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from attribkit.core.cost import CostMeter
from attribkit.core.errors import InputError, ScorerError

__all__ = ["TabularModel", "as_rows", "is_frame"]

DEFAULT_BATCH = 8192


def is_frame(x: Any) -> bool:
    """Whether ``x`` is a pandas DataFrame or Series (checked without importing pandas)."""
    return type(x).__module__.startswith("pandas") and hasattr(x, "to_numpy")


def as_rows(
    X: Any, names: Sequence[str] | None = None, what: str = "X"
) -> tuple[np.ndarray, list[str] | None]:
    """``X`` as a float (rows, features) array and the column names it carries (a DataFrame's
    columns, a Series' index), else ``names``. A 1-D input is one row. InputError for non-numeric
    columns, NaN or infinite values (naming the row and feature), or an empty input."""
    found: list[str] | None = None
    if is_frame(X):
        # a DataFrame is named by its columns, a Series (one row) by its index
        found = [str(c) for c in (X.columns if hasattr(X, "columns") else X.index)]
        X = X.to_numpy()
    try:
        arr = np.asarray(X, dtype=float)
    except (TypeError, ValueError) as e:
        raise InputError(
            f"{what} must be numeric (encode categorical columns first, e.g. one-hot): {e}"
        ) from e
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(
            f"{what} must be a non-empty (rows, features) array, got shape {arr.shape}"
        )
    cols = found if found is not None else ([str(n) for n in names] if names is not None else None)
    if cols is not None and len(cols) != arr.shape[1]:
        raise InputError(
            f"{len(cols)} feature names were given for {arr.shape[1]} columns of {what}"
        )
    bad = ~np.isfinite(arr)
    if bad.any():
        r, c = (int(i[0]) for i in np.nonzero(bad))
        name = cols[c] if cols is not None else f"column {c}"
        raise InputError(
            f"{what} has a missing or infinite value at row {r}, feature {name!r} "
            f"({arr[r, c]}); impute or drop it before attributing"
        )
    return arr, cols


class TabularModel(CostMeter):
    """A fitted tabular model: ``predict`` / ``proba`` / ``decision`` on (rows, features) arrays.

    Args:
        model: a fitted scikit-learn estimator (classifier or regressor, a Pipeline included), a
            ``torch.nn.Module`` returning class logits (one output = a binary logit), or any
            object with ``predict(X)``.
        n_features: the width rows must have (default: the estimator's ``n_features_in_`` or
            the torch module's first ``Linear``; unchecked when unknown).
        batch_size: most rows per model call.
        labels: class names of a torch module (default ``0..C-1``).

    ``cost.forward_passes`` counts rows the model evaluated, ``cost.batches`` calls into it.
    """

    def __init__(
        self,
        model: Any,
        n_features: int | None = None,
        batch_size: int = DEFAULT_BATCH,
        labels: Sequence[Any] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(model, TabularModel):
            raise InputError("the model is already a TabularModel; pass it as is")
        if batch_size < 1:
            raise InputError("batch_size must be >= 1")
        self.model, self.batch_size = model, int(batch_size)
        self.torch: Any = None
        if _is_torch_module(model):
            from attribkit.models.classifier import TorchClassifier

            self.torch = TorchClassifier(model, batch_size=self.batch_size)
            self.kind = "torch"
            self.classes: list[Any] | None = None  # known after the first call
            self._labels = list(labels) if labels is not None else None
            width = n_features or _torch_width(model)
        else:
            if not (hasattr(model, "predict") or hasattr(model, "predict_proba")):
                raise InputError(
                    f"a {type(model).__name__} has no predict method: give a fitted scikit-learn "
                    "estimator, a torch.nn.Module or any object with predict(X)"
                )
            classes = getattr(model, "classes_", None)
            if classes is None and _is_unfitted_classifier(model):
                raise InputError(
                    f"the {type(model).__name__} is not fitted (it has no classes_): call "
                    ".fit(X, y) first"
                )
            self.kind = "classifier" if classes is not None else "regressor"
            self.classes = [_plain(c) for c in classes] if classes is not None else None
            width = n_features or getattr(model, "n_features_in_", None)
        if self.classes is not None and len(self.classes) < 2:
            raise InputError(
                f"the classifier knows a single class ({self.classes}): there is no decision to "
                "explain; fit it on data with at least two classes"
            )
        self.n_features = int(width) if width is not None else None
        self._columns = getattr(model, "feature_names_in_", None)
        self.name = type(model).__name__

    def __repr__(self) -> str:
        return f"TabularModel({self.name}, kind={self.kind}, cost={self.cost})"

    @property
    def module(self) -> Any:
        """The torch module (in eval mode) of a torch model; None otherwise."""
        return None if self.torch is None else self.torch.module

    # --- checks ---------------------------------------------------------------------------------
    def check_rows(self, X: np.ndarray, what: str = "x") -> None:
        """InputError when the rows do not have the model's width."""
        if self.n_features is not None and X.shape[-1] != self.n_features:
            raise InputError(
                f"{what} has {X.shape[-1]} features but the model was fitted on "
                f"{self.n_features}; give rows with the training columns, in the training order"
            )

    def _frame(self, X: np.ndarray) -> Any:
        if self._columns is None:
            return X
        import pandas as pd  # the model was fitted on a DataFrame, so pandas is installed

        return pd.DataFrame(X, columns=self._columns)

    def _batched(self, X: np.ndarray, fn: Callable[[Any], Any]) -> np.ndarray:
        X = np.asarray(X, dtype=float)
        if X.ndim != 2 or len(X) == 0:
            raise InputError(f"the model takes a non-empty (rows, features) array, got {X.shape}")
        self.check_rows(X, "a batch")
        outs = []
        with self.timed():
            for s in range(0, len(X), self.batch_size):
                chunk = X[s : s + self.batch_size]
                try:
                    out = fn(chunk)
                except (ValueError, RuntimeError) as e:
                    if type(e).__name__ == "NotFittedError":
                        raise InputError(
                            f"the {self.name} is not fitted: call .fit(X, y) first"
                        ) from e
                    raise InputError(
                        f"the model could not run on rows of {X.shape[1]} features: "
                        f"{str(e).splitlines()[0]}"
                    ) from e
                out = np.asarray(out)
                if out.shape[0] != len(chunk):
                    raise ScorerError(
                        f"the model returned {out.shape[0]} outputs for {len(chunk)} rows; it "
                        "must return one per row"
                    )
                outs.append(out)
                self.cost.forward_passes += len(chunk)
                self.cost.batches += 1
        return np.concatenate(outs)

    @staticmethod
    def _finite(out: np.ndarray, what: str) -> np.ndarray:
        if out.dtype.kind in "fc" and not np.isfinite(out).all():
            raise ScorerError(
                f"the model returned NaN or infinite {what}; check the model (its weights, its "
                "preprocessing) before attributing"
            )
        return out

    # --- outputs --------------------------------------------------------------------------------
    def _torch_logits(self, X: np.ndarray) -> np.ndarray:
        logits = self._batched(X, lambda c: self.torch.predict(c, output="logit"))
        logits = self._finite(logits.astype(float), "logits")
        if self.classes is None:
            n = logits.shape[1]
            self.classes = self._labels if self._labels is not None else list(range(n))
        return logits

    def predict(self, X: Any) -> np.ndarray:
        """The predicted label (classifiers) or value (regressors) of every row. One forward pass
        per row."""
        X = np.asarray(X, dtype=float)
        if self.kind == "torch":
            logits = self._torch_logits(X)
            return np.asarray(self.classes)[logits.argmax(1)]
        if hasattr(self.model, "predict"):
            out = self._batched(X, lambda c: self.model.predict(self._frame(c)))
            return self._finite(out.reshape(len(X), *out.shape[1:]), "predictions")
        proba = self.proba(X)
        return np.asarray(self.classes)[proba.argmax(1)]

    def proba(self, X: Any) -> np.ndarray:
        """(rows, classes) probabilities. One forward pass per row. InputError for a model
        without probabilities."""
        X = np.asarray(X, dtype=float)
        if self.kind == "torch":
            z = self._torch_logits(X)
            z = np.exp(z - z.max(1, keepdims=True))
            return z / z.sum(1, keepdims=True)
        if not hasattr(self.model, "predict_proba"):
            raise InputError(
                f"the {self.name} has no predict_proba: use output='decision' (decision_function) "
                "or output='predict'"
            )
        out = self._batched(X, lambda c: self.model.predict_proba(self._frame(c)))
        return self._finite(out.astype(float), "probabilities")

    def decision(self, X: Any) -> np.ndarray:
        """Decision scores: (rows,) for a binary scikit-learn classifier (toward ``classes[1]``),
        (rows, classes) otherwise; logits of a torch module. One forward pass per row."""
        X = np.asarray(X, dtype=float)
        if self.kind == "torch":
            return self._torch_logits(X)
        if not hasattr(self.model, "decision_function"):
            raise InputError(
                f"the {self.name} has no decision_function: use output='proba' or 'predict'"
            )
        out = self._batched(X, lambda c: self.model.decision_function(self._frame(c)))
        return self._finite(out.astype(float), "decision scores")

    def class_index(self, target: Any) -> int:
        """The index of class ``target`` (a label of ``classes``, else an integer index)."""
        assert self.classes is not None
        for i, c in enumerate(self.classes):
            if c == _plain(target):
                return i
        if (
            isinstance(target, (int, np.integer))
            and not isinstance(target, bool)
            and 0 <= int(target) < len(self.classes)
        ):
            return int(target)
        raise InputError(
            f"target class {target!r} is not one of the model's classes {self.classes}"
        )

    def values(self, X: Any, output: str, index: int | None) -> np.ndarray:
        """One number per row: the probability (``"proba"``) or decision score (``"decision"``)
        of class ``index``, or the prediction (``"predict"``: a regressor's value, or 1.0 where a
        classifier predicts class ``index``). One forward pass per row."""
        if output == "proba":
            return self.proba(X)[:, index]
        if output == "decision":
            d = self.decision(X)
            if d.ndim == 1:  # binary scikit-learn: the score of classes[1]
                return d if index == 1 else -d
            return d[:, index]
        if output == "predict":
            p = self.predict(X)
            if self.classes is None:
                return p.astype(float)
            assert index is not None
            return (p == self.classes[index]).astype(float)
        raise InputError(f"unknown output {output!r}: use 'proba', 'decision' or 'predict'")


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _is_torch_module(model: Any) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return isinstance(model, torch.nn.Module)


def _torch_width(module: Any) -> int | None:
    import torch

    for m in module.modules():
        if isinstance(m, torch.nn.Linear):
            return int(m.in_features)
    return None


def _is_unfitted_classifier(model: Any) -> bool:
    """A scikit-learn classifier that has not been fitted (it would have ``classes_``)."""
    if getattr(model, "_estimator_type", None) == "classifier":
        return True
    tags = getattr(model, "__sklearn_tags__", None)
    if tags is None:
        return False
    try:
        return tags().estimator_type == "classifier"
    except Exception:  # a foreign object that borrowed the name
        return False
