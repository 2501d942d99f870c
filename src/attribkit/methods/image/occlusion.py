"""Sliding-window occlusion of images (Zeiler & Fergus, 'Visualizing and Understanding
Convolutional Networks', 2014), at the input or at a layer (ML-Att). Baselines and batching:
:mod:`attribkit.methods.image.masking`."""

from __future__ import annotations

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.cost import measure
from attribkit.core.errors import InputError
from attribkit.methods.image.masking import (
    Baseline,
    at_layer,
    baseline_name,
    display_baseline,
    int_param,
)
from attribkit.tasks.image import ImageTask, UnitSpec

__all__ = ["occlusion", "occlusion_windows"]


def _starts(size: int, kernel: int, stride: int) -> list[int]:
    """Window starts 0, s, 2s, ... and, if they miss the far border, one more flush with it."""
    starts = list(range(0, size - kernel + 1, stride))
    if starts[-1] != size - kernel:
        starts.append(size - kernel)
    return starts


def occlusion_windows(
    shape: tuple[int, int], kernel: int, stride: int
) -> list[tuple[int, int, int, int]]:
    """The (top, left, bottom, right) windows of sliding-window occlusion over an (H, W) image,
    row-major: starts every ``stride`` pixels, plus a last row/column of windows flush with the
    border when the stride does not land there, so every pixel is covered. No model call."""
    h, w = shape
    if kernel > min(h, w):
        raise InputError(
            f"occlusion kernel {kernel} px is larger than the {h}x{w} image; use kernel <= {min(h, w)}"
        )
    return [
        (t, left, t + kernel, left + kernel)
        for t in _starts(h, kernel, stride)
        for left in _starts(w, kernel, stride)
    ]


def _window_masks(windows: list[tuple[int, int, int, int]], shape: tuple[int, int]) -> np.ndarray:
    """(len(windows), H, W) float32 masks: 0 inside each window, 1 elsewhere."""
    masks = np.ones((len(windows), *shape), dtype=np.float32)
    for i, (t, left, b, r) in enumerate(windows):
        masks[i, t:b, left:r] = 0.0
    return masks


def occlusion(
    task: ImageTask,
    *,
    kernel: int | None = None,
    stride: int | None = None,
    baseline: Baseline = "zero",
    layer: str | None = "input",
    units: UnitSpec = None,
) -> Attribution:
    """Sliding-window occlusion: a_p = mean over the windows W containing pixel p of
    f(x) − f(x with W showing ``baseline``), so each window's change is spread evenly over its
    pixels (with ``kernel == stride`` every pixel gets exactly its patch's Δf).

    ``kernel`` defaults to min(H, W) // 7 (32 px at 224²), ``stride`` to kernel // 2. Windows
    start every ``stride`` pixels; when that misses the far border one more row/column of
    windows flush with it is added, so every pixel is covered. Returns an Attribution with the
    map as ``heatmap`` and ``extras['n_windows']``, ``extras['value']`` (f(x)). Cost:
    n_windows + 1 forward passes, batched (169 + 1 at 224² with the defaults).

    ``layer`` (ML-Att, Rao et al. 2022): at a layer other than the input the windows zero the
    activations at every channel of their (h, w) positions instead (``kernel``/``stride`` in
    layer cells, default min(h, w) // 7 and half of it); the (h, w) map is upsampled
    bilinearly. Costs 2 more forward passes (the layer probe).
    """
    if task.model.resolve_layer(layer) is not None:
        return _at_layer(task, layer, units, kernel, stride)
    h, w = task.shape
    kernel = max(min(h, w) // 7, 1) if kernel is None else int_param("kernel", kernel)
    stride = max(kernel // 2, 1) if stride is None else int_param("stride", stride)
    windows = occlusion_windows((h, w), kernel, stride)
    base = display_baseline(task, baseline)
    with measure(task) as cost:
        value = float(task.values(task.image[None])[0])
        deltas = np.empty(len(windows))
        chunk = max(task.model.batch_size, 1)
        for s in range(0, len(windows), chunk):
            part = windows[s : s + chunk]
            masks = _window_masks(part, (h, w))
            deltas[s : s + len(part)] = value - task.mask_values(masks, base)
    total = np.zeros((h, w))
    count = np.zeros((h, w))
    for d, (t, left, b, r) in zip(deltas, windows, strict=True):
        total[t:b, left:r] += d
        count[t:b, left:r] += 1.0
    heatmap = total / count
    params = {"kernel": kernel, "stride": stride, "baseline": baseline_name(baseline)}
    return task.result(
        heatmap, "occlusion", params, cost, units=units, n_windows=len(windows), value=value
    )


def _at_layer(
    task: ImageTask, layer: str | None, units: UnitSpec, kernel: int | None, stride: int | None
) -> Attribution:
    """Occlusion of the activations at ``layer``: windows over its (h, w) positions."""

    def masks_for(h: int, w: int) -> tuple[np.ndarray, dict[str, int]]:
        k = max(min(h, w) // 7, 1) if kernel is None else int_param("kernel", kernel)
        s = max(k // 2, 1) if stride is None else int_param("stride", stride)
        return _window_masks(occlusion_windows((h, w), k, s), (h, w)), {"kernel": k, "stride": s}

    def to_map(value: float, values: np.ndarray, flat: np.ndarray) -> np.ndarray:
        return (value - values) @ (1.0 - flat) / np.maximum((1.0 - flat).sum(0), 1)

    return at_layer(task, "occlusion", layer, units, masks_for, to_map)
