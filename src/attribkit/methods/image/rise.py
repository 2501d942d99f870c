"""RISE for images: the target averaged over smooth random masks, weighted by each pixel's mask
(Petsiuk, Das & Saenko, 'RISE: Randomized Input Sampling for Explanation of Black-box Models',
2018), at the input or at a layer (ML-Att). Baselines and batching:
:mod:`attribkit.methods.image.masking`."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

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
from attribkit.methods.numerics import bernoulli_masks
from attribkit.tasks.image import ImageTask, UnitSpec

__all__ = ["rise", "rise_masks"]


def _rise_grids(
    n_masks: int, grid_size: int, keep_prob: float, shape: tuple[int, int], seed: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """All masks' s×s keep grids and their (row, col) shifts, drawn up front so that the masks
    do not depend on how they are later chunked."""
    rng = np.random.default_rng(seed)
    grids = bernoulli_masks(rng, (n_masks, grid_size, grid_size), keep_prob)
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
    n_masks = int_param("n_masks", n_masks)
    grid_size = int_param("grid_size", grid_size)
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
        return _at_layer(task, layer, units, seed, **params)
    n_masks = int_param("n_masks", n_masks)
    grid_size = int_param("grid_size", grid_size)
    chunk = int_param("chunk", chunk)
    if not 0.0 < keep_prob < 1.0:
        raise InputError(f"keep_prob must be strictly between 0 and 1, got {keep_prob}")
    h, w = task.shape
    if grid_size > min(h, w):
        raise InputError(f"grid_size {grid_size} is finer than the {h}x{w} image; use fewer cells")
    base = display_baseline(task, baseline)
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
        "baseline": baseline_name(baseline),
        "center": center,
        "seed": seed,
    }
    return task.result(heatmap, "rise", params, cost, units=units, mean_value=mean_value)


def _at_layer(
    task: ImageTask, layer: str | None, units: UnitSpec, seed: int | None, **p: Any
) -> Attribution:
    """RISE on the activations at ``layer``: grid masks over its (h, w) positions."""

    def masks_for(h: int, w: int) -> tuple[np.ndarray, dict[str, Any]]:
        n, s, keep = int_param("n_masks", p["n_masks"]), p["grid_size"], p["keep_prob"]
        if not 0.0 < keep < 1.0:
            raise InputError(f"keep_prob must be strictly between 0 and 1, got {keep}")
        masks = rise_masks(n, (h, w), min(int_param("grid_size", s), min(h, w)), keep, seed)
        return masks, {**p, "seed": seed}

    def to_map(value: float, values: np.ndarray, flat: np.ndarray) -> np.ndarray:
        weights = values - values.mean() if p["center"] else values
        return weights @ flat / (len(flat) * p["keep_prob"])

    return at_layer(task, "rise", layer, units, masks_for, to_map)
