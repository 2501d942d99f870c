"""D-RISE: detector saliency from random masks (Petsiuk, Zhang, Manjunatha, Dell, Dillard &
Saenko, 'Black-box Explanation of Object Detectors via Saliency Maps', CVPR 2021), as the VPS
authors run it as their baseline (``baseline/traditional_DRISE.py``) and with Petsiuk et al.'s
own similarity.

N masks, each an s×s Bernoulli(p) grid bilinearly upsampled and randomly shifted (RISE's masks,
:func:`attribkit.methods.image.rise.rise_masks`: N = 1000, s = 16, p = 0.5 as the VPS authors);
the masked image keeps the image where the mask is 1 and shows the task's baseline elsewhere
(black: the authors multiply pixels by the mask). Each masked image is detected, and its weight
w_n is (``similarity``):

- ``"vps"`` (default, the VPS authors'): max over the masked image's detections after NMS (score
  >= ``score_threshold``) labelled as the target class of IoU(target box, box) × score;
- ``"drise"`` (Petsiuk et al.): max over those detections of IoU(target box, box) ×
  cos(class-score vector of the target, class-score vector of the detection) × objectness — the
  protocol has no separate objectness (a detector folds it into its class scores), so it is 1;
  for a given box the target vector is the one-hot label;
- ``"object"``: the task's own pre-NMS object score (the VPS set function's s).

The saliency map is Σ_n w_n · M_n / N.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.cost import measure
from attribkit.core.errors import InputError
from attribkit.methods.image.masking import int_param
from attribkit.methods.image.rise import _rise_grids, _rise_upsample
from attribkit.tasks.detection import Detection, DetectionTask, UnitSpec, box_iou, object_scores

__all__ = ["SIMILARITIES", "drise", "drise_weights"]

SIMILARITIES = ("vps", "drise", "object")


def drise_weights(
    task: DetectionTask,
    boxes: np.ndarray,
    scores: np.ndarray,
    similarity: str = "vps",
    score_threshold: float = 0.05,
) -> np.ndarray:
    """D-RISE's weight of each masked image from its raw detector output (``boxes`` (B, N, 4),
    ``scores`` (B, N, C)) for ``task``'s target, by ``similarity`` (module docstring); detections
    are the detector's own NMS at ``score_threshold``. Returns (B,). No model call."""
    if similarity not in SIMILARITIES:
        raise InputError(
            f"unknown similarity {similarity!r}: use 'vps' (IoU x class score, the VPS authors'), "
            "'drise' (IoU x cosine of class vectors, Petsiuk et al.) or 'object' (pre-NMS score)"
        )
    if similarity == "object":
        return object_scores(boxes, scores, task.box, task.label, task.mode)["object"]
    target = np.asarray(task._target_vector, dtype=np.float64)
    norm_t = float(np.linalg.norm(target))
    out = np.zeros(len(boxes))
    for i, dets in enumerate(task.detector.postprocess(boxes, scores, score_threshold)):
        out[i] = max((_similarity(d, task, similarity, target, norm_t) for d in dets), default=0.0)
    return out


def _similarity(
    d: Detection, task: DetectionTask, similarity: str, target: np.ndarray, norm_t: float
) -> float:
    iou = float(box_iou(np.asarray(d.box)[None], task.box)[0])
    if similarity == "vps":
        return iou * d.score if d.label == task.label else 0.0
    p = np.asarray(d.class_scores, dtype=np.float64)
    denom = norm_t * float(np.linalg.norm(p))
    return iou * float(p @ target) / denom if denom > 0 else 0.0


def drise(
    task: DetectionTask,
    *,
    n_masks: int = 1000,
    grid_size: int = 16,
    keep_prob: float = 0.5,
    similarity: str = "vps",
    score_threshold: float = 0.05,
    seed: int | None = 0,
    chunk: int = 32,
    units: UnitSpec = None,
) -> Attribution:
    """D-RISE (Petsiuk et al., 'Black-box Explanation of Object Detectors via Saliency Maps',
    CVPR 2021): saliency = Σ_n w_n · M_n / N over N = ``n_masks`` random masks (s = ``grid_size``
    cells kept with probability p = ``keep_prob``, upsampled and shifted as RISE), w_n the
    similarity of the masked image's detections to the target (``similarity``: ``"vps"``, the
    VPS authors' IoU × class score over detections after NMS at ``score_threshold`` 0.05 —
    mmdet's usual test threshold; ``"drise"``, Petsiuk's IoU × cosine of class vectors;
    ``"object"``, the task's pre-NMS object score). Removed pixels show the task's baseline
    (black by default, as the authors). Seeded; masks are made ``chunk`` at a time.

    Returns an Attribution whose heatmap is the map (unit scores: the map summed over each of
    ``units``, default the task's regions), with ``extras['mean_weight']`` and
    ``extras['nonzero_weights']`` (share of masks with w > 0). Cost: ``n_masks`` forward
    passes, batched.
    """
    n_masks = int_param("n_masks", n_masks)
    grid_size = int_param("grid_size", grid_size)
    chunk = int_param("chunk", chunk)
    if not 0.0 < float(keep_prob) < 1.0:
        raise InputError(f"keep_prob must be strictly between 0 and 1, got {keep_prob}")
    if similarity not in SIMILARITIES:
        raise InputError(
            f"unknown similarity {similarity!r}: use 'vps' (the VPS authors'), 'drise' "
            "(Petsiuk et al.) or 'object' (the task's pre-NMS object score)"
        )
    if not 0.0 <= float(score_threshold) <= 1.0:
        raise InputError(f"score_threshold must be in [0, 1], got {score_threshold}")
    h, w = task.shape
    if grid_size > min(h, w):
        raise InputError(f"grid_size {grid_size} is finer than the {h}x{w} image; use fewer cells")
    u = task.make_units(units)
    if len(u) < 2:
        raise InputError(
            f"only {len(u)} region: attribution ranks regions against each other; use more "
            "superpixels (n_segments=) or smaller patches"
        )
    image, base = task.image.astype(np.float32), np.asarray(u.baseline, dtype=np.float32)
    grids, shifts = _rise_grids(n_masks, grid_size, float(keep_prob), (h, w), seed)
    saliency = np.zeros(h * w)
    weights = np.empty(n_masks)
    with measure(task) as cost:
        for s in range(0, n_masks, chunk):
            masks = _rise_upsample(grids[s : s + chunk], shifts[s : s + chunk], grid_size, (h, w))
            m = masks[..., None]
            boxes, scores = task.detect(m * image[None] + (1.0 - m) * base[None])
            wn = drise_weights(task, boxes, scores, similarity, float(score_threshold))
            weights[s : s + len(wn)] = wn
            saliency += wn @ masks.reshape(len(masks), -1).astype(np.float64)
    heatmap = (saliency / n_masks).reshape(h, w)
    params: dict[str, Any] = {
        "n_masks": n_masks,
        "grid_size": grid_size,
        "keep_prob": float(keep_prob),
        "similarity": similarity,
        "score_threshold": float(score_threshold),
        "seed": seed,
        "baseline": u.removal,
    }
    return task.result(
        heatmap,
        "drise",
        params,
        cost,
        units=u,
        mean_weight=float(weights.mean()),
        nonzero_weights=float((weights > 0).mean()),
    )
