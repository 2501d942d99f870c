"""Perturbation maps in image space (kind ``image``): sliding-window occlusion and RISE.

Both explain the target's probability by default (declared ``output="prob"`` in the catalog; pass
``output="logit"`` to :func:`attribkit.attribute_image` for the logit) and send every perturbed
image through the model in batches (:meth:`ImageTask.mask_values`), never one at a time.

Baselines. A removed pixel shows ``baseline``: ``"zero"`` (black, the default: RISE's x ⊙ M as
written in the paper), ``"mean"`` (the image's mean colour), ``"blur"`` (Gaussian blur) or an
(H, W, 3) display image. Zeiler & Fergus occluded with a grey square, and Captum-based code
(Rao et al.) and the RISE reference code zero the *normalised* tensor, i.e. show the
normalisation's mean colour: for the bundled Lite0 that is the uniform grey 127/255, which is
``baseline=np.full((224, 224, 3), 127 / 255)``; ``"mean"`` is the nearest built-in choice.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from attribkit.core.attribution import Attribution
from attribkit.core.cost import measure
from attribkit.core.errors import InputError
from attribkit.tasks.image import ImageTask, UnitSpec

__all__ = ["occlusion", "occlusion_windows", "rise", "rise_masks"]

Baseline = str | np.ndarray


def _int_param(name: str, value: Any, least: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise InputError(f"{name} must be an integer >= {least}, got {value!r}")
    return int(value)


def _baseline(task: ImageTask, baseline: Baseline) -> np.ndarray:
    """The (H, W, 3) display baseline image (checked)."""
    if isinstance(baseline, np.ndarray):
        if baseline.shape != task.image.shape:
            raise InputError(
                f"baseline image of shape {baseline.shape} does not match the display image "
                f"{task.image.shape}; give an (H, W, 3) array in [0, 1]"
            )
        return baseline.astype(np.float32)
    if not isinstance(baseline, str):
        raise InputError(
            f"baseline must be 'zero', 'mean', 'blur' or an (H, W, 3) array, got {baseline!r}"
        )
    return task.baseline_image(baseline)


def _baseline_name(baseline: Baseline) -> str:
    return baseline if isinstance(baseline, str) else "given image"


# --- occlusion -----------------------------------------------------------------------------------
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
        return _at_layer(task, "occlusion", layer, units, kernel=kernel, stride=stride)
    h, w = task.shape
    kernel = max(min(h, w) // 7, 1) if kernel is None else _int_param("kernel", kernel)
    stride = max(kernel // 2, 1) if stride is None else _int_param("stride", stride)
    windows = occlusion_windows((h, w), kernel, stride)
    base = _baseline(task, baseline)
    with measure(task) as cost:
        value = float(task.values(task.image[None])[0])
        deltas = np.empty(len(windows))
        chunk = max(task.model.batch_size, 1)
        for s in range(0, len(windows), chunk):
            part = windows[s : s + chunk]
            masks = np.ones((len(part), h, w), dtype=np.float32)
            for i, (t, left, b, r) in enumerate(part):
                masks[i, t:b, left:r] = 0.0
            deltas[s : s + len(part)] = value - task.mask_values(masks, base)
    total = np.zeros((h, w))
    count = np.zeros((h, w))
    for d, (t, left, b, r) in zip(deltas, windows, strict=True):
        total[t:b, left:r] += d
        count[t:b, left:r] += 1.0
    heatmap = total / count
    params = {"kernel": kernel, "stride": stride, "baseline": _baseline_name(baseline)}
    return task.result(
        heatmap, "occlusion", params, cost, units=units, n_windows=len(windows), value=value
    )


# --- RISE ----------------------------------------------------------------------------------------
def _rise_grids(
    n_masks: int, grid_size: int, keep_prob: float, shape: tuple[int, int], seed: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """All masks' s×s keep grids and their (row, col) shifts, drawn up front so that the masks
    do not depend on how they are later chunked."""
    rng = np.random.default_rng(seed)
    grids = rng.random((n_masks, grid_size, grid_size)) < keep_prob
    cell = [math.ceil(d / grid_size) for d in shape]
    shifts = np.stack([rng.integers(0, cell[0], n_masks), rng.integers(0, cell[1], n_masks)], 1)
    return grids, shifts


def _rise_upsample(
    grids: np.ndarray, shifts: np.ndarray, grid_size: int, shape: tuple[int, int]
) -> np.ndarray:
    """Bilinearly upsample s×s grids to (s + 1)·ceil(H/s) and crop H×W at the given shifts."""
    h, w = shape
    up = [(grid_size + 1) * math.ceil(d / grid_size) for d in shape]
    t = torch.from_numpy(grids.astype(np.float32))[:, None]
    big = F.interpolate(t, size=up, mode="bilinear", align_corners=False)[:, 0].numpy()
    out = np.empty((len(grids), h, w), dtype=np.float32)
    for i, (dy, dx) in enumerate(shifts):
        out[i] = big[i, dy : dy + h, dx : dx + w]
    return np.clip(out, 0.0, 1.0, out=out)


def rise_masks(
    n_masks: int,
    shape: tuple[int, int],
    grid_size: int = 7,
    keep_prob: float = 0.5,
    seed: int | None = 0,
) -> np.ndarray:
    """RISE's (n_masks, H, W) float32 masks in [0, 1]: each an s×s Bernoulli(``keep_prob``) grid
    (s = ``grid_size``), bilinearly upsampled to (s + 1)·ceil(H/s) and cropped H×W at a random
    shift of less than one cell. Seeded; the same masks :func:`rise` uses. No model call."""
    n_masks = _int_param("n_masks", n_masks)
    grid_size = _int_param("grid_size", grid_size)
    grids, shifts = _rise_grids(n_masks, grid_size, keep_prob, shape, seed)
    return _rise_upsample(grids, shifts, grid_size, shape)


def rise(
    task: ImageTask,
    *,
    n_masks: int = 2000,
    grid_size: int = 7,
    keep_prob: float = 0.5,
    baseline: Baseline = "zero",
    center: bool = False,
    seed: int | None = 0,
    chunk: int = 64,
    layer: str | None = "input",
    units: UnitSpec = None,
) -> Attribution:
    """RISE: a_p = Σ_n f(x ⊙ M_n) · M_n(p) / (N · p) over N = ``n_masks`` smooth random masks
    (:func:`rise_masks`: s = ``grid_size`` cells kept with probability p = ``keep_prob``; a
    masked-out pixel shows ``baseline``, black by default, i.e. x ⊙ M as in the paper).

    The plain map carries a large constant offset (E[f | p kept] ≈ E[f] everywhere), which
    dilutes localisation scores; ``center=True`` subtracts the mean f over the masks first,
    a_p = Σ_n (f_n − mean f) · M_n(p) / (N · p), which removes it. Masks are generated ``chunk``
    at a time so memory stays bounded, from ``np.random.default_rng(seed)``. Returns an
    Attribution with the map as ``heatmap`` and ``extras['mean_value']`` (mean f over masks).
    Cost: ``n_masks`` forward passes, batched. At a ``layer`` other than the input (ML-Att)
    the masks scale the activations at every channel (grid cells over the layer's (h, w)), and
    the map is upsampled bilinearly; 3 more forward passes.
    """
    if task.model.resolve_layer(layer) is not None:
        params = dict(n_masks=n_masks, grid_size=grid_size, keep_prob=keep_prob, center=center)
        return _at_layer(task, "rise", layer, units, seed=seed, **params)
    n_masks = _int_param("n_masks", n_masks)
    grid_size = _int_param("grid_size", grid_size)
    chunk = _int_param("chunk", chunk)
    if not 0.0 < keep_prob < 1.0:
        raise InputError(f"keep_prob must be strictly between 0 and 1, got {keep_prob}")
    h, w = task.shape
    if grid_size > min(h, w):
        raise InputError(f"grid_size {grid_size} is finer than the {h}x{w} image; use fewer cells")
    base = _baseline(task, baseline)
    grids, shifts = _rise_grids(n_masks, grid_size, keep_prob, (h, w), seed)
    weighted = np.zeros(h * w)  # Σ_n f_n M_n
    kept = np.zeros(h * w)  # Σ_n M_n
    values = np.empty(n_masks)
    with measure(task) as cost:
        for s in range(0, n_masks, chunk):
            masks = _rise_upsample(grids[s : s + chunk], shifts[s : s + chunk], grid_size, (h, w))
            v = task.mask_values(masks, base)
            values[s : s + len(v)] = v
            flat = masks.reshape(len(masks), -1).astype(np.float64)
            weighted += v @ flat
            kept += flat.sum(axis=0)
    mean_value = float(values.mean())
    sal = weighted - mean_value * kept if center else weighted
    heatmap = (sal / (n_masks * keep_prob)).reshape(h, w)
    params = {
        "n_masks": n_masks,
        "grid_size": grid_size,
        "keep_prob": keep_prob,
        "baseline": _baseline_name(baseline),
        "center": center,
        "seed": seed,
    }
    return task.result(heatmap, "rise", params, cost, units=units, mean_value=mean_value)


def _at_layer(
    task: ImageTask, name: str, layer: str | None, units: UnitSpec, **p: Any
) -> Attribution:
    """Occlusion or RISE on the activations at ``layer``: masks over its (h, w) positions."""
    with measure(task) as cost:
        acts, _ = task.layer_input(layer)
        h, w = acts.shape[1:]
        if name == "occlusion":
            kernel = (
                max(min(h, w) // 7, 1) if p["kernel"] is None else _int_param("kernel", p["kernel"])
            )
            stride = (
                max(kernel // 2, 1) if p["stride"] is None else _int_param("stride", p["stride"])
            )
            windows = occlusion_windows((h, w), kernel, stride)
            masks = np.ones((len(windows), h, w), dtype=np.float32)
            for i, (t, left, b, r) in enumerate(windows):
                masks[i, t:b, left:r] = 0.0
        else:
            n, s, keep = _int_param("n_masks", p["n_masks"]), p["grid_size"], p["keep_prob"]
            if not 0.0 < keep < 1.0:
                raise InputError(f"keep_prob must be strictly between 0 and 1, got {keep}")
            masks = rise_masks(
                n, (h, w), min(_int_param("grid_size", s), min(h, w)), keep, p["seed"]
            )
        value, values = task.layer_mask_values(layer, masks)
    flat = masks.reshape(len(masks), -1).astype(np.float64)
    if name == "occlusion":
        cell_map = ((value - values) @ (1.0 - flat) / np.maximum((1.0 - flat).sum(0), 1)).reshape(
            h, w
        )
        params = {"kernel": kernel, "stride": stride}
    else:
        weights = values - values.mean() if p["center"] else values
        cell_map = (weights @ flat / (len(masks) * p["keep_prob"])).reshape(h, w)
        params = {k: p[k] for k in ("n_masks", "grid_size", "keep_prob", "center", "seed")}
    params.update(layer=layer, baseline="zero activations")
    layer_name = task.model.resolve_layer(layer)
    return task.result(
        cell_map,
        name,
        params,
        cost,
        units=units,
        value=value,
        layer_name=layer_name,
        layer_map=cell_map.tolist(),
        map_shape=[h, w],
    )
