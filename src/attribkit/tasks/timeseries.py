"""Time-series attribution: which steps (and channels) of a series made a classifier predict a
class.

A :class:`TimeSeriesTask` (kind ``"timeseries"``) holds one series ``x`` of shape (T,) or (T, C),
a classifier and a target class. The classifier is

- a **torch module** taking a batch (B, T, C) (or (B, C, T) with ``channels_first=True``) and
  returning logits (B, K): every method runs on it, the generic gradient methods
  (``saliency``, ``input_x_gradient``, ``integrated_gradients``, ``smoothgrad``) included;
- a **scikit-learn estimator** (``predict_proba`` or ``decision_function``) on the flattened
  series (B, T · C), or **any callable** taking a (B, T, C) array and returning (B, K) scores:
  perturbation methods only.

**Units** (what is blamed) are

- ``"cells"``: one unit per (step, channel);
- ``"timesteps"``: one unit per step, all channels together;
- ``"windows"``: ``width`` consecutive steps, across all channels (``by_channel=True``: one unit
  per window and channel). With ``stride == width`` (the default) the windows partition the
  series (the last one may be shorter); with ``stride < width`` they overlap — windows start every
  ``stride`` steps, plus one flush with the end when the stride does not land there — and an
  element is removed when ANY window covering it is removed (so removing one window removes
  exactly its steps, as occlusion does); an element's map value is the mean of the scores of
  the windows covering it.

A removed element takes the ``baseline`` value (``"zero"``, ``"mean"``: each channel's mean over
time, or an array broadcastable to (T, C), e.g. the training set's mean series). Every result
carries the (T, C) map of its scores in ``extras["map"]`` (read it with :func:`series_map`).
Gradient methods need units that do not overlap (cells, steps or partitioning windows): their
unit scores are sums of element attributions.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from attribkit.core.attribution import Attribution
from attribkit.core.cost import Budget, Cost, CostMeter
from attribkit.core.errors import InputError, ScorerError
from attribkit.core.gradient import GradientScorer
from attribkit.core.registry import attribute
from attribkit.core.scorer import Scorer
from attribkit.core.task import Task
from attribkit.core.units import ArrayUnits, Unit, Units

__all__ = [
    "UNIT_KINDS",
    "OverlappingWindowUnits",
    "SeriesUnits",
    "TimeSeriesTask",
    "attribute_timeseries",
    "series_map",
    "series_units",
]

#: the unit splits a time-series task knows
UNIT_KINDS = ("cells", "timesteps", "windows")
#: the targets a time-series task can explain
OUTPUTS = ("score", "prob", "log_prob")
#: keyword arguments that configure the units (taken by the unit and gradient scorers)
UNIT_OPTIONS = ("units", "width", "stride", "by_channel", "baseline")
DEFAULT_METHOD = "occlusion"


# --- units ---------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=32)
def _layout(
    t: int, c: int, kind: str, width: int, by_channel: bool, names: tuple[str, ...]
) -> tuple[np.ndarray, tuple[Unit, ...]]:
    """The (T, C) segment map and the units of a partition of a (T, C) series (cached: a series
    of 200 steps × 4 channels has 800 cells)."""
    steps = np.arange(t) // width if kind == "windows" else np.arange(t)
    n_steps = int(steps[-1]) + 1
    units = []
    if by_channel:
        seg = steps[:, None] * c + np.arange(c)[None, :]
    else:
        seg = np.repeat(steps[:, None], c, axis=1)
    for k in range(n_steps):
        lo = k * width if kind == "windows" else k
        hi = min(lo + width, t) if kind == "windows" else k + 1
        span = f"[{lo}]" if hi == lo + 1 and kind != "windows" else f"[{lo}:{hi}]"
        for ch in range(c) if by_channel else [None]:
            label = (names[ch] if ch is not None else "t") + span
            meta = {"t": [lo, hi], "channel": ch}
            units.append(Unit(len(units), label, meta=meta))
    seg.setflags(write=False)
    return seg, tuple(units)


class SeriesUnits(ArrayUnits):
    """A partition of a (T, C) series into units (cells, steps or windows); a removed unit's
    elements take the baseline. ``segments`` is the (T, C) map of unit indices."""

    kind = "timeseries"

    def __init__(
        self,
        x: np.ndarray,
        baseline: np.ndarray,
        split: str = "cells",
        width: int = 1,
        by_channel: bool = True,
        names: Sequence[str] | None = None,
    ) -> None:
        t, c = x.shape
        names = tuple(names) if names is not None else tuple(f"c{i}" for i in range(c))
        seg, units = _layout(t, c, split, int(width), bool(by_channel), names)
        super().__init__(x, seg, baseline, _units=units)
        self.split, self.width, self.stride = split, int(width), int(width)
        self.by_channel = by_channel
        self._sizes = np.bincount(seg.ravel(), minlength=len(units)).astype(float)

    def heatmap(self, scores: np.ndarray) -> np.ndarray:
        """Each unit's score on each of its elements: a (T, C) map."""
        return np.asarray(scores, dtype=float)[self.segments]

    def reduce(self, element_map: np.ndarray) -> np.ndarray:
        """The mean of a (T, C) map over each unit's elements: one score per unit."""
        flat = np.asarray(element_map, dtype=float).ravel()
        return np.bincount(self.segments.ravel(), weights=flat, minlength=len(self)) / self._sizes

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "removal": self.removal,
            "shape": list(self.x.shape),
            "units": self.split,
            "width": self.width,
            "stride": self.stride,
            "by_channel": bool(self.by_channel),
        }


class OverlappingWindowUnits(Units):
    """Overlapping windows of a (T, C) series: ``width`` steps starting every ``stride`` steps
    (plus one window flush with the end when the stride misses it), across all channels or one
    unit per window and channel (``by_channel``).

    Removal rule: an element is removed when ANY window covering it is removed (it takes the
    baseline), so removing a single window removes exactly its elements. An element's map value
    (:meth:`heatmap`) is the mean of the scores of the windows covering it.
    """

    kind = "timeseries"

    def __init__(
        self,
        x: np.ndarray,
        baseline: np.ndarray,
        width: int,
        stride: int,
        by_channel: bool = False,
        names: Sequence[str] | None = None,
    ) -> None:
        x = np.asarray(x, dtype=float)
        t, c = x.shape
        names = list(names) if names is not None else [f"c{i}" for i in range(c)]
        starts = list(range(0, t - width + 1, stride))
        if starts[-1] != t - width:
            starts.append(t - width)
        units, cover = [], []
        for s in starts:
            for ch in range(c) if by_channel else [None]:
                m = np.zeros((t, c), dtype=bool)
                if ch is None:
                    m[s : s + width] = True
                else:
                    m[s : s + width, ch] = True
                label = (names[ch] if ch is not None else "t") + f"[{s}:{s + width}]"
                units.append(Unit(len(units), label, meta={"t": [s, s + width], "channel": ch}))
                cover.append(m)
        super().__init__(units)
        self.x, self.baseline = x, np.broadcast_to(baseline, x.shape).astype(float)
        self.cover = np.stack(cover)  # (n, T, C)
        self._flat = self.cover.reshape(len(units), -1).astype(float)
        self._count = self._flat.sum(0)
        self.split, self.width, self.stride, self.by_channel = "windows", width, stride, by_channel
        self.removal = "baseline value (an element is removed when any window covering it is)"

    def element_masks(self, masks: np.ndarray) -> np.ndarray:
        """(B, T, C) booleans: True where an element is kept (no covering window removed)."""
        m = self.check_masks(masks)
        removed = (~m).astype(float) @ self._flat > 0
        return (~removed).reshape((len(m), *self.x.shape))

    def compose(self, mask: np.ndarray) -> np.ndarray:
        return self.compose_batch(mask)[0]

    def compose_batch(self, masks: np.ndarray) -> np.ndarray:  # type: ignore[override]
        keep = self.element_masks(masks)
        return np.where(keep, self.x[None], self.baseline[None])

    def heatmap(self, scores: np.ndarray) -> np.ndarray:
        """The mean score of the windows covering each element: a (T, C) map."""
        s = np.asarray(scores, dtype=float)
        return (s @ self._flat / self._count).reshape(self.x.shape)

    def reduce(self, element_map: np.ndarray) -> np.ndarray:
        """The mean of a (T, C) map over each window's elements: one score per unit."""
        flat = np.asarray(element_map, dtype=float).ravel()
        return self._flat @ flat / self._flat.sum(1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "removal": self.removal,
            "shape": list(self.x.shape),
            "units": "windows",
            "width": self.width,
            "stride": self.stride,
            "by_channel": bool(self.by_channel),
        }


def _int_option(name: str, value: Any, low: int, high: int, what: str) -> int:
    if isinstance(value, bool) or int(value) != value:
        raise InputError(f"{name} must be an integer, got {value!r}")
    v = int(value)
    if v < low:
        raise InputError(f"{name} must be >= {low}, got {v}")
    if v > high:
        raise InputError(what.format(v=v, high=high))
    return v


def series_units(
    x: np.ndarray,
    units: str = "cells",
    *,
    width: int | None = None,
    stride: int | None = None,
    by_channel: bool | None = None,
    baseline: np.ndarray | float = 0.0,
    names: Sequence[str] | None = None,
) -> SeriesUnits | OverlappingWindowUnits:
    """Split a (T, C) series into units: ``"cells"``, ``"timesteps"`` or ``"windows"`` of
    ``width`` steps every ``stride`` steps (default ``stride = width``: a partition; smaller:
    overlapping windows), across channels unless ``by_channel``. No model call."""
    x = np.asarray(x, dtype=float)
    t = x.shape[0]
    base = np.broadcast_to(np.asarray(baseline, dtype=float), x.shape)
    if units not in UNIT_KINDS:
        raise InputError(f"units must be one of {UNIT_KINDS} or ready Units, got {units!r}")
    if units != "windows":
        if (width is not None and width != 1) or (stride is not None and stride != 1):
            raise InputError(f"width and stride apply to units='windows', not {units!r}")
        split_by_channel = True if units == "cells" else bool(by_channel)
        split = "cells" if split_by_channel else "timesteps"
        return SeriesUnits(x, base, split, 1, split_by_channel, names)
    if width is None:
        raise InputError("units='windows' needs a width (steps per window)")
    too_wide = "a window of {v} steps is wider than the series ({high} steps); use width <= {high}"
    w = _int_option("width", width, 1, t, too_wide)
    gaps = "stride {v} is larger than the width ({high}): steps between windows would be in no unit"
    s = w if stride is None else _int_option("stride", stride, 1, w, gaps)
    if s == w:
        return SeriesUnits(x, base, "windows", w, bool(by_channel), names)
    return OverlappingWindowUnits(x, base, w, s, bool(by_channel), names)


def series_map(attribution: Attribution) -> np.ndarray:
    """The (T, C) map of a time-series Attribution (``extras["map"]``). No model call."""
    m = attribution.extras.get("map")
    if m is None:
        raise InputError(
            "this attribution has no time-series map; make it with a TimeSeriesTask "
            "(attribkit.attribute_timeseries)"
        )
    return np.asarray(m, dtype=float)


# --- the model ----------------------------------------------------------------------------------
def _model_kind(model: Any) -> str:
    if isinstance(model, torch.nn.Module):
        return "torch"
    if hasattr(model, "predict_proba") or hasattr(model, "decision_function"):
        return "sklearn"
    if callable(model):
        return "callable"
    raise InputError(
        f"a {type(model).__name__} is not a classifier: give a torch module, a fitted "
        "scikit-learn estimator with predict_proba or decision_function, or a callable "
        "(B, T, C) array -> (B, K) scores"
    )


class TimeSeriesTask(Task):
    """One series, a classifier and a target class, ready to be attributed.

    Args:
        model: a torch module ((B, T, C) → (B, K) logits), a fitted scikit-learn classifier on
            flattened series, or a callable (B, T, C) array → (B, K) scores.
        x: the series, (T,) or (T, C); finite values.
        units: ``"cells"`` (default), ``"timesteps"`` or ``"windows"`` (see the module doc).
        width, stride, by_channel: the windows' size, step and split by channel.
        baseline: what a removed element takes: ``"zero"``, ``"mean"`` (each channel's mean over
            time) or an array: (T, C), (C,) (one value per channel), (T,) (one per step) or a
            number.
        target: the class explained (index, or name for a scikit-learn model); default the
            predicted one.
        output: ``"score"`` (the model's own output for the class: a torch module's logit, a
            scikit-learn ``predict_proba`` probability or decision value), ``"prob"`` (softmax
            of a torch/callable model's scores) or ``"log_prob"``.
        channels_first: the torch module takes (B, C, T) instead of (B, T, C).
        background: optional training series (N, T, C) for methods that learn (TimeX).
        channel_names: names of the channels (unit labels); default c0, c1...
        batch_size: series per model call.

    Building the task costs one forward pass (the prediction on ``x``).
    """

    kind = "timeseries"

    def __init__(
        self,
        model: Any,
        x: Any,
        *,
        units: str | Units = "cells",
        width: int | None = None,
        stride: int | None = None,
        by_channel: bool | None = None,
        baseline: str | float | np.ndarray = "zero",
        target: int | str | None = None,
        output: str = "score",
        channels_first: bool = False,
        background: Any = None,
        channel_names: Sequence[str] | None = None,
        batch_size: int = 64,
    ) -> None:
        self.x, self.univariate = self._check_series(x)
        c = self.x.shape[1]
        self.model, self.model_kind = model, _model_kind(model)
        self.supports_gradients = self.model_kind == "torch"
        if output not in OUTPUTS:
            raise InputError(f"output must be one of {OUTPUTS}, got {output!r}")
        if output == "prob" and self.model_kind == "sklearn":
            output = "score" if hasattr(model, "predict_proba") else output
        self.output = output
        self.channels_first = bool(channels_first)
        if int(batch_size) < 1:
            raise InputError("batch_size must be >= 1")
        self.batch_size = int(batch_size)
        self.channel_names = (
            [str(n) for n in channel_names]
            if channel_names is not None
            else [f"c{i}" for i in range(c)]
        )
        if len(self.channel_names) != c:
            raise InputError(f"{len(self.channel_names)} channel names for {c} channels")
        self.baseline = self._baseline(baseline)
        self.background = None if background is None else self._check_background(background)
        self._meter = CostMeter()
        self.classes = self._classes()
        with self._meter.timed():
            raw = self._raw(self.x[None])
        self._meter.cost.forward_passes += 1
        self._meter.cost.batches += 1
        self.scores = raw[0]
        self.prediction = int(np.argmax(self.scores))
        self.target = self._target(target)
        self._unit_spec = {
            "units": units,
            "width": width,
            "stride": stride,
            "by_channel": by_channel,
        }
        self.units: Units = self.make_units()

    # -- input checks ----------------------------------------------------------------------------
    @staticmethod
    def _check_series(x: Any) -> tuple[np.ndarray, bool]:
        try:
            arr = np.asarray(x, dtype=float)
        except (TypeError, ValueError) as e:
            raise InputError(f"the series must be numbers, (T,) or (T, C): {e}") from e
        univariate = arr.ndim == 1
        if univariate:
            arr = arr[:, None]
        if arr.ndim != 2 or arr.size == 0:
            raise InputError(
                f"a series must be a non-empty (T,) or (T, C) array, got shape {np.shape(x)}"
            )
        bad = ~np.isfinite(arr)
        if bad.any():
            t, ch = np.argwhere(bad)[0]
            raise InputError(
                f"the series has {int(bad.sum())} missing or infinite value(s) (first at step "
                f"{t}, channel {ch}); fill or drop them before attributing"
            )
        return arr, univariate

    def _check_background(self, background: Any) -> np.ndarray:
        b = np.asarray(background, dtype=float)
        if b.ndim == 2 and self.x.shape[1] == 1:
            b = b[..., None]
        if b.ndim != 3 or b.shape[1:] != self.x.shape or len(b) == 0:
            raise InputError(
                f"background must be (N, {self.x.shape[0]}, {self.x.shape[1]}) series like x, "
                f"got shape {np.shape(background)}"
            )
        if not np.isfinite(b).all():
            raise InputError("the background series have missing or infinite values")
        return b

    def _baseline(self, baseline: Any) -> np.ndarray:
        if isinstance(baseline, str):
            if baseline == "zero":
                return np.zeros_like(self.x)
            if baseline == "mean":
                return np.broadcast_to(self.x.mean(axis=0, keepdims=True), self.x.shape).copy()
            raise InputError(f"unknown baseline {baseline!r}: use 'zero', 'mean' or an array")
        b = np.asarray(baseline, dtype=float)
        t, c = self.x.shape
        if b.ndim == 1 and b.shape[0] == t and t != c:
            b = b[:, None]  # one value per step (a length-C vector is one value per channel)
        try:
            b = np.broadcast_to(b, self.x.shape).copy()
        except ValueError as e:
            raise InputError(
                f"baseline of shape {np.shape(baseline)} does not fit the series {self.x.shape}"
            ) from e
        if not np.isfinite(b).all():
            raise InputError("the baseline has missing or infinite values")
        return b

    def _classes(self) -> list[str] | None:
        classes = getattr(self.model, "classes_", None)
        if classes is None:
            return None
        names = [str(c) for c in np.asarray(classes).ravel()]
        if len(names) < 2:
            raise InputError(
                f"the model knows a single class ({names}); a classifier with at least two "
                "classes is needed to explain a decision"
            )
        return names

    def _target(self, target: int | str | None) -> int:
        k = len(self.scores)
        if target is None:
            return self.prediction
        if isinstance(target, str):
            if self.classes is None or target not in self.classes:
                raise InputError(f"unknown class {target!r}; the model's classes: {self.classes}")
            return self.classes.index(target)
        if isinstance(target, bool) or int(target) != target or not 0 <= int(target) < k:
            raise InputError(f"target must be a class index in [0, {k}), got {target!r}")
        return int(target)

    # -- the model -------------------------------------------------------------------------------
    def _torch_scores(self, xb: torch.Tensor) -> torch.Tensor:
        """The module's (B, K) scores of a (B, T, C) tensor (transposed when channels-first)."""
        return self.model(xb.transpose(1, 2) if self.channels_first else xb)  # type: ignore[no-any-return]

    def _raw(self, batch: np.ndarray) -> np.ndarray:
        """The model's (B, K) scores of a (B, T, C) batch, checked. Counts nothing."""
        b = len(batch)
        if self.model_kind == "torch":
            param = next(iter(self.model.parameters()), None)
            dtype = param.dtype if param is not None else torch.float32
            device = param.device if param is not None else "cpu"
            with torch.no_grad():
                out = self._torch_scores(torch.as_tensor(batch, dtype=dtype, device=device))
            raw = out.detach().cpu().double().numpy()
        elif self.model_kind == "sklearn":
            flat = batch.reshape(b, -1)
            if hasattr(self.model, "predict_proba"):
                raw = np.asarray(self.model.predict_proba(flat), dtype=float)
            else:
                raw = np.asarray(self.model.decision_function(flat), dtype=float)
                if raw.ndim == 1:  # binary: the score of class 1, minus it for class 0
                    raw = np.stack([-raw, raw], axis=1)
        else:
            raw = np.asarray(self.model(batch), dtype=float)
        if raw.ndim != 2 or raw.shape[0] != b:
            raise ScorerError(
                f"the model returned shape {raw.shape} for {b} series; it must return (B, K) "
                "class scores"
            )
        if raw.shape[1] < 2:
            raise InputError(
                f"the model returns {raw.shape[1]} score per series: a single class; a "
                "classifier must return one score per class (at least two)"
            )
        if not np.isfinite(raw).all():
            raise ScorerError(
                "the model returned NaN or infinite scores; check the model and the series"
            )
        return raw

    def _transform(self, raw: np.ndarray) -> np.ndarray:
        """The explained output of (B, K) raw scores: the target column of score/prob/log_prob."""
        if self.output == "score":
            return raw[:, self.target]
        if self.model_kind == "sklearn":  # decision values: softmax like any scores
            p = raw if hasattr(self.model, "predict_proba") else _softmax(raw)
        else:
            p = _softmax(raw)
        col = p[:, self.target]
        return col if self.output == "prob" else np.log(np.clip(col, 1e-300, None))

    def _torch_target(self, xb: torch.Tensor) -> torch.Tensor:
        out = self._torch_scores(xb)
        if self.output == "score":
            return out[:, self.target]
        logp = torch.log_softmax(out, dim=1)[:, self.target]
        return logp.exp() if self.output == "prob" else logp

    def values(self, batch: Any) -> np.ndarray:
        """The explained output for each series of a (B, T, C) batch: one forward pass per
        series, counted on :attr:`meter`, in batches of ``batch_size``."""
        arr = np.asarray(batch, dtype=float)
        if arr.ndim == 2:
            arr = arr[None]
        out = np.empty(len(arr))
        with self._meter.timed():
            for s in range(0, len(arr), self.batch_size):
                chunk = arr[s : s + self.batch_size]
                out[s : s + len(chunk)] = self._transform(self._raw(chunk))
                self._meter.cost.forward_passes += len(chunk)
                self._meter.cost.batches += 1
        return out

    # -- units -----------------------------------------------------------------------------------
    def make_units(
        self,
        units: str | Units | None = None,
        *,
        width: int | None = None,
        stride: int | None = None,
        by_channel: bool | None = None,
        baseline: Any = None,
    ) -> Units:
        """Units of this series: ``units`` (default the task's), with the task's width, stride,
        split by channel and baseline unless given. Ready Units are checked and returned. No
        model call."""
        if isinstance(units, Units):
            x = getattr(units, "x", None)
            if x is None or np.shape(x) != self.x.shape:
                raise InputError(f"the given units were not built on this series {self.x.shape}")
            return units
        spec = dict(self._unit_spec)
        if units is None and width is not None and spec["units"] != "windows":
            units = "windows"  # a width asks for windows
        if units is not None:
            spec = {"units": units, "width": None, "stride": None, "by_channel": None}
            if isinstance(self._unit_spec["units"], str) and units == self._unit_spec["units"]:
                spec = dict(self._unit_spec)
        if isinstance(spec["units"], Units):
            if width is None and stride is None and by_channel is None and baseline is None:
                return spec["units"]
            raise InputError("unit options cannot change ready Units; pass units='windows'...")
        for key, value in (("width", width), ("stride", stride), ("by_channel", by_channel)):
            if value is not None:
                spec[key] = value
        base = self.baseline if baseline is None else self._baseline(baseline)
        return series_units(
            self.x,
            spec["units"],
            width=spec["width"],
            stride=spec["stride"],
            by_channel=spec["by_channel"],
            baseline=base,
            names=self.channel_names,
        )

    # -- the task contract -----------------------------------------------------------------------
    @property
    def meter(self) -> CostMeter:
        """Counts one forward pass per series sent to the model (backward passes for gradients)."""
        return self._meter

    @property
    def class_names(self) -> list[str]:
        return (
            self.classes if self.classes is not None else [str(i) for i in range(len(self.scores))]
        )

    @property
    def target_info(self) -> dict[str, Any]:
        names = self.class_names
        what = {"score": "score", "prob": "probability", "log_prob": "log-probability"}[self.output]
        return {
            "kind": "class_" + self.output,
            "description": f"{what} of class {names[self.target]} under "
            f"{getattr(self.model, 'name', None) or type(self.model).__name__}",
            "class": self.target,
            "class_name": names[self.target],
            "prediction": self.prediction,
            "prediction_name": names[self.prediction],
            "scores": [float(s) for s in self.scores],
            "output": self.output,
        }

    @property
    def input_info(self) -> dict[str, Any]:
        """The series, its shape, channels and default units, as stored with every result."""
        return self._input(self.units)

    def _input(self, units: Units) -> dict[str, Any]:
        d = dict(units.to_dict())
        d.update(
            kind="timeseries",
            series=self.x.tolist(),
            channels=list(self.channel_names),
            univariate=self.univariate,
        )
        return d

    def result(
        self,
        scores: np.ndarray,
        method: str,
        params: dict[str, Any],
        cost: Cost,
        *,
        units: Units | None = None,
        **extras: Any,
    ) -> Attribution:
        """The Attribution of one score per unit of ``units`` (default the task's); its (T, C)
        map (each unit's score on its elements; overlapping windows: the mean over the windows
        covering an element) is ``extras["map"]``. No model call."""
        u = self.units if units is None else units
        scores = np.asarray(scores, dtype=float)
        vector = scores if scores.ndim == 1 else np.nansum(scores, axis=0)
        extras["map"] = u.heatmap(np.nan_to_num(vector))  # type: ignore[attr-defined]
        return Attribution(
            units=list(u.units),
            scores=scores,
            method=method,
            target=self.target_info,
            params=params,
            cost=cost,
            input=self._input(u),
            extras=extras,
            task=self.kind,
        )

    def map_result(
        self,
        element_map: np.ndarray,
        method: str,
        params: dict[str, Any],
        cost: Cost,
        *,
        units: str | Units | None = None,
        **extras: Any,
    ) -> Attribution:
        """The Attribution of a (T, C) map (a method that scores elements): unit scores are the
        map's mean over each unit's elements, and the map itself is ``extras["map"]``. No model
        call."""
        m = np.asarray(element_map, dtype=float).reshape(self.x.shape)
        u = self.make_units(units)
        if len(u) < 2:
            raise InputError(
                f"only {len(u)} unit: attribution ranks units against each other; use cells, "
                "steps or narrower windows"
            )
        a = self.result(u.reduce(m), method, params, cost, units=u, **extras)  # type: ignore[attr-defined]
        a.extras["map"] = m
        return a

    def _pop_units(self, params: dict[str, Any]) -> Units:
        opts = {k: params.pop(k) for k in UNIT_OPTIONS if k in params}
        units = opts.pop("units", None)
        return self.make_units(units, **opts)

    def scorer(self, units: Units | None = None, budget: Budget | None = None) -> Scorer:
        """A mask :class:`Scorer` over ``units`` (default the task's): the explained output when
        only the kept units keep their values (the others take the baseline)."""
        return Scorer(
            self.units if units is None else units,
            self.values,
            target=self.target_info,
            batch_size=self.batch_size,
            budget=budget,
            meter=self._meter,
            task_kind=self.kind,
        )

    def unit_scorer(self, params: dict[str, Any]) -> Scorer:
        """:meth:`scorer` over the units the unit options in ``params`` describe (``units``,
        ``width``, ``stride``, ``by_channel``, ``baseline``); takes ``budget`` too."""
        units = self._pop_units(params)
        return self.scorer(units, budget=params.pop("budget", None))

    def unit_gradient_scorer(self, params: dict[str, Any]) -> GradientScorer:
        """A :class:`GradientScorer` on the series (a torch model): element attributions summed
        into the units of the unit options in ``params`` (cells by default; overlapping windows
        are refused: an element must belong to one unit); ``baseline`` is x' (default the
        task's)."""
        if not self.supports_gradients:
            return super().unit_gradient_scorer(params)
        units = self._pop_units(params)
        if not isinstance(units, SeriesUnits):
            raise InputError(
                "gradient methods need units that do not overlap (an element's attribution goes "
                "to one unit): use cells, timesteps or windows with stride == width"
            )
        param = next(iter(self.model.parameters()), None)
        dtype = param.dtype if param is not None else torch.float32
        device = param.device if param is not None else torch.device("cpu")
        x = torch.as_tensor(self.x, dtype=dtype, device=device)
        base = torch.as_tensor(units.baseline, dtype=dtype, device=device)
        gs = GradientScorer(
            self._torch_target,
            x,
            baseline=base,
            unit_index=torch.as_tensor(np.array(units.segments), dtype=torch.long, device=device),
            units=units,
            target=self.target_info,
            batch_size=self.batch_size,
        )
        gs.cost = self._meter.cost  # one meter: the task counts what its scorers spend
        return gs

    def unit_result(self, attribution: Attribution, scorer: Scorer | GradientScorer) -> Attribution:
        """A unit method's scores as a time-series Attribution with its (T, C) map. No model
        call."""
        a = attribution
        return self.result(a.scores, a.method, a.params, a.cost, units=scorer.units, **a.extras)

    def attribute(self, method: str = DEFAULT_METHOD, **params: Any) -> Attribution:
        """Run ``method`` (default ``occlusion``) on this task (:func:`attribkit.attribute`)."""
        return attribute(self, method, **params)

    def __repr__(self) -> str:
        t, c = self.x.shape
        return (
            f"TimeSeriesTask({t} steps x {c} channels, {len(self.units)} units, "
            f"{self.model_kind} model, class {self.class_names[self.target]!r})"
        )


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]


def attribute_timeseries(
    model: Any,
    x: Any,
    method: str = DEFAULT_METHOD,
    *,
    units: str | Units = "cells",
    width: int | None = None,
    stride: int | None = None,
    by_channel: bool | None = None,
    baseline: str | float | np.ndarray = "zero",
    target: int | str | None = None,
    output: str = "score",
    channels_first: bool = False,
    background: Any = None,
    progress: bool = False,
    **params: Any,
) -> Attribution:
    """Which steps and channels of series ``x`` made ``model`` predict ``target`` (default: its
    prediction), by ``method`` (default ``occlusion``; any time-series, perturbation or — for a
    torch model — gradient method). Returns an Attribution over the units with the (T, C) map in
    ``extras["map"]``. Costs 1 forward pass plus the method's."""
    task = TimeSeriesTask(
        model,
        x,
        units=units,
        width=width,
        stride=stride,
        by_channel=by_channel,
        baseline=baseline,
        target=target,
        output=output,
        channels_first=channels_first,
        background=background,
    )
    return attribute(task, method, progress=progress, **params)
