"""Time-series attributions against a ground truth: AUPRC, AUP, AUR and IoU, as TimeX defines
them (Queen et al., 'Encoding Time-Series Explanations through Self-Supervised Model Behavior
Consistency', NeurIPS 2023; their ``txai/utils/evaluation.py``).

For each sample, the attribution map is taken in absolute value and min-max normalised to
[0, 1] (``(a − min) / (max − min + 1e-9)``), then compared with its (T, C) truth mask:

- **AUPRC**: average precision, Σ_k (R_k − R_{k−1}) P_k over the distinct map values taken as
  thresholds from the highest (equal to scikit-learn's ``average_precision_score``);
- **AUP** / **AUR**: the area under precision / recall plotted against the threshold (the
  distinct normalised values, ascending; trapezoid rule) — scikit-learn ≥ 1.3's
  ``auc(thresholds, precision[:-1])`` on ``precision_recall_curve`` (older versions dropped the
  thresholds below the first that reaches full recall, so older numbers can differ); 0 for a
  constant map;
- **IoU**: the cells at or above the map's ``quantile`` (TimeX: 0.9) against the truth,
  |pred ∧ truth| / |pred ∨ truth|.

Samples without any positive cell are excluded (TimeX evaluates the SeqComb sets on the classes
that have a truth); each metric is the mean over the remaining samples. No model calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.errors import InputError
from attribkit.tasks.timeseries import series_map

__all__ = [
    "GroundTruthScores",
    "aup_aur",
    "average_precision",
    "ground_truth_scores",
    "iou_at_quantile",
    "normalize_map",
    "random_maps",
]


def normalize_map(attribution: Any, absolute: bool = True) -> np.ndarray:
    """``|a|`` (or ``a``) min-max normalised to [0, 1] over the whole map:
    ``(a − min) / (max − min + 1e-9)`` (TimeX's per-sample normalisation)."""
    a = np.asarray(attribution, dtype=float)
    if absolute:
        a = np.abs(a)
    return (a - a.min()) / (a.max() - a.min() + 1e-9)  # type: ignore[no-any-return]


def _curve(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds descending, precision, recall) at each distinct score (predicted positive:
    score ≥ threshold)."""
    s = np.asarray(scores, dtype=float).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    if s.shape != y.shape:
        raise InputError(f"{s.size} scores for {y.size} labels; give one score per cell")
    if not np.isfinite(s).all():
        raise InputError("the attribution has NaN or infinite values")
    if not y.any():
        raise InputError("the truth has no positive cell; the metric is undefined")
    order = np.argsort(s, kind="mergesort")[::-1]
    s, y = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tps = np.cumsum(y)[last].astype(float)
    fps = (last + 1) - tps
    return s[last], tps / (tps + fps), tps / tps[-1]


def average_precision(scores: Any, labels: Any) -> float:
    """Average precision of ``scores`` for binary ``labels`` (any shape, flattened): equals
    scikit-learn's ``average_precision_score``."""
    _, precision, recall = _curve(scores, labels)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def aup_aur(scores: Any, labels: Any) -> tuple[float, float]:
    """(AUP, AUR): the trapezoid areas under precision and recall against the threshold, over
    the distinct values of ``scores`` (0, 0 for a constant map)."""
    thresholds, precision, recall = _curve(scores, labels)
    if thresholds.size < 2:
        return 0.0, 0.0
    x = thresholds[::-1]
    return float(np.trapezoid(precision[::-1], x)), float(np.trapezoid(recall[::-1], x))


def iou_at_quantile(scores: Any, labels: Any, quantile: float = 0.9) -> float:
    """IoU between the cells with score ≥ the ``quantile`` of the scores and the truth."""
    if not 0.0 <= quantile <= 1.0:
        raise InputError(f"quantile must be in [0, 1], got {quantile}")
    s = np.asarray(scores, dtype=float).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    if s.shape != y.shape:
        raise InputError(f"{s.size} scores for {y.size} labels; give one score per cell")
    pred = s >= np.quantile(s, quantile)
    union = np.logical_or(pred, y).sum()
    return float(np.logical_and(pred, y).sum() / union) if union else 0.0


@dataclass
class GroundTruthScores:
    """Mean AUPRC, AUP, AUR and IoU over the evaluated samples, and the per-sample values
    (``per_sample[metric]``, NaN for excluded samples)."""

    auprc: float
    aup: float
    aur: float
    iou: float
    n_evaluated: int
    n_excluded: int
    quantile: float
    per_sample: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "auprc": self.auprc,
            "aup": self.aup,
            "aur": self.aur,
            "iou": self.iou,
            "n_evaluated": self.n_evaluated,
            "n_excluded": self.n_excluded,
            "quantile": self.quantile,
        }


def _maps(attributions: Any) -> list[np.ndarray]:
    if isinstance(attributions, Attribution):
        return [series_map(attributions)]
    if isinstance(attributions, np.ndarray):
        return list(attributions) if attributions.ndim >= 2 else [attributions]
    return [series_map(a) if isinstance(a, Attribution) else np.asarray(a) for a in attributions]


def ground_truth_scores(
    attributions: Sequence[Attribution] | Sequence[Any] | np.ndarray,
    masks: Any,
    *,
    absolute: bool = True,
    quantile: float = 0.9,
) -> GroundTruthScores:
    """TimeX's ground-truth metrics of attribution maps against truth ``masks`` (N, T, C) or
    (N, T): ``attributions`` are Attributions of a TimeSeriesTask (their ``extras["map"]``) or
    arrays of the masks' shape. Per sample: |map| (``absolute``) min-max normalised, then AUPRC,
    AUP, AUR and IoU at ``quantile``; samples without a positive cell are excluded; means over
    the rest. No model calls."""
    maps = _maps(attributions)
    truth = np.asarray(masks).astype(bool)
    if truth.ndim == 2 and len(maps) == 1 and np.asarray(maps[0]).ndim == 2:
        truth = truth[None]
    if len(maps) != len(truth):
        raise InputError(f"{len(maps)} attributions for {len(truth)} truth masks")
    names = ("auprc", "aup", "aur", "iou")
    per = {k: np.full(len(maps), np.nan) for k in names}
    for i, (m, t) in enumerate(zip(maps, truth, strict=True)):
        m = np.asarray(m, dtype=float)
        if m.size != t.size:
            raise InputError(f"sample {i}: a map of shape {m.shape} for a truth of {t.shape}")
        if not t.any():
            continue
        norm = normalize_map(m.reshape(t.shape), absolute=absolute)
        per["auprc"][i] = average_precision(norm, t)
        per["aup"][i], per["aur"][i] = aup_aur(norm, t)
        per["iou"][i] = iou_at_quantile(norm, t, quantile)
    evaluated = ~np.isnan(per["auprc"])
    if not evaluated.any():
        raise InputError("no sample has a positive cell in its truth mask: nothing to evaluate")
    means = {k: float(np.mean(v[evaluated])) for k, v in per.items()}
    return GroundTruthScores(
        **means,
        n_evaluated=int(evaluated.sum()),
        n_excluded=int((~evaluated).sum()),
        quantile=quantile,
        per_sample=per,
    )


def random_maps(shape: Sequence[int], seed: int = 0) -> np.ndarray:
    """Uniform random maps of ``shape`` (the random explainer of TimeX's tables), seeded."""
    return np.random.default_rng(seed).random(tuple(shape))
