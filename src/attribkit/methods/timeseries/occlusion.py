"""Sliding-window occlusion of a time series (Zeiler & Fergus, 'Visualizing and Understanding
Convolutional Networks', 2014), per channel or across channels, overlapping windows averaged."""

from __future__ import annotations

from typing import Any

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.cost import measure
from attribkit.core.errors import InputError
from attribkit.core.units import Units
from attribkit.tasks.timeseries import TimeSeriesTask

__all__ = ["occlusion", "occlusion_windows"]


def occlusion_windows(length: int, width: int, stride: int) -> list[int]:
    """The start steps of sliding windows of ``width`` steps every ``stride`` steps over a
    series of ``length`` steps, plus one flush with the end when the stride does not land
    there, so every step is covered. No model call."""
    if width > length:
        raise InputError(
            f"a window of {width} steps is wider than the series ({length} steps); use "
            f"width <= {length}"
        )
    starts = list(range(0, length - width + 1, stride))
    if starts[-1] != length - width:
        starts.append(length - width)
    return starts


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def occlusion(
    task: TimeSeriesTask,
    *,
    width: int | None = None,
    stride: int | None = None,
    by_channel: bool = True,
    baseline: Any = None,
    units: str | Units | None = None,
) -> Attribution:
    """Sliding-window occlusion: each window W (``width`` steps, on one channel when
    ``by_channel``, else on all) is set to the baseline and a_e = mean over the windows W
    covering element e of f(x) − f(x with W occluded) (Captum's ``Occlusion`` convention: a
    window's change is given to each of its elements, overlaps averaged).

    ``width`` defaults to the task's window width (1 for cells or steps), ``stride`` to
    ``width``; windows start every ``stride`` steps plus one flush with the end. ``baseline``
    defaults to the task's. Unit scores (of ``units``, default the task's) are the map's mean over
    each unit's elements — with the task's windows and stride == width, exactly each window's
    change; on a linear model with width 1, exactly w · (x − x'). Returns the map in
    ``extras["map"]``, ``extras["n_windows"]`` and ``extras["value"]`` (f(x)). Cost:
    n_windows × (C if by_channel else 1) + 1 forward passes, batched.
    """
    u = task.make_units(units)
    if len(u) < 2:
        raise InputError(
            f"only {len(u)} unit: attribution ranks units against each other; use cells, steps "
            "or narrower windows"
        )
    t, c = task.x.shape
    width = _positive_int("width", getattr(task.units, "width", 1) if width is None else width)
    stride = width if stride is None else _positive_int("stride", stride)
    starts = occlusion_windows(t, width, stride)
    channels: list[int | None] = list(range(c)) if by_channel and c > 1 else [None]
    windows = [(s, ch) for s in starts for ch in channels]
    base = task.baseline if baseline is None else task._baseline(baseline)
    with measure(task.meter) as cost:
        value = float(task.values(task.x[None])[0])
        deltas = np.empty(len(windows))
        for lo in range(0, len(windows), task.batch_size):
            part = windows[lo : lo + task.batch_size]
            batch = np.repeat(task.x[None], len(part), axis=0)
            for i, (s, ch) in enumerate(part):
                cols = slice(None) if ch is None else ch
                batch[i, s : s + width, cols] = base[s : s + width, cols]
            deltas[lo : lo + len(part)] = value - task.values(batch)
    total = np.zeros((t, c))
    count = np.zeros((t, c))
    for d, (s, ch) in zip(deltas, windows, strict=True):
        cols = slice(None) if ch is None else ch
        total[s : s + width, cols] += d
        count[s : s + width, cols] += 1.0
    params = {
        "width": width,
        "stride": stride,
        "by_channel": bool(by_channel),
        "baseline": "task" if baseline is None else _name(baseline),
    }
    return task.map_result(
        total / count, "occlusion", params, cost, units=u, n_windows=len(windows), value=value
    )


def _name(baseline: Any) -> str:
    return baseline if isinstance(baseline, str) else "array"
