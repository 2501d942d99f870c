"""VPS: Visual Precision Search (Ruoyu Chen et al., 'Interpreting Object-level Foundation Models
via Visual Precision Search', CVPR 2025), read from the authors' code
(``interpretation/submodular_mm_detection.py``, ``evals/eval_energy_pg.py``,
``evals/eval_AUC_faithfulness.py``).

The image is split into regions V (SLIC superpixels, ``division_number`` of them). For a set S of
regions, I_S keeps only S (the other pixels show the baseline, black as the authors' mmdet code)
and I_{V∖S} keeps only the rest; with the task's object score s (max over the detector's pre-NMS
candidates of IoU with the target box × the target class score, or the [IoU > 0.5] variant):

    F(S) = λ1·s(I_S) + λ2·(1 − s(I_{V∖S})),   λ1 = λ2 = 1 in every script of the authors.

Naive greedy adds argmax_c F(S ∪ {c}) until every region is ranked (the search of
:func:`attribkit.methods.image.submodular.greedy_order`; ``search="bidirectional"`` runs LiMA's
bidirectional search on the same F instead, an extension). The attribution map is the authors'
``add_value``: with gains g_k = F(S_k) − F(S_{k−1}) along the order and F(∅) = λ1·s(blank) +
λ2·(1 − s(full)), region k gets −Σ_{j≤k} |g_j|, min–max normalised (so big early gains open big
gaps; the region where F stops rising ties with every later one). ``values="rank"`` gives rank
scores instead, (m − position)/m, as SMDL / LiMA.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.cost import measure
from attribkit.core.errors import InputError
from attribkit.core.units import ImageUnits
from attribkit.methods.image.submodular import SubsetSearch, bidirectional_order, greedy_order
from attribkit.tasks.detection import DetectionTask, UnitSpec

__all__ = ["curve_summary", "greedy_passes", "vps", "vps_gain_values"]


def vps_gain_values(values_along_order: Any) -> np.ndarray:
    """The authors' gain-based values (``add_value`` of ``evals/eval_energy_pg.py``) of the m
    regions in search order, from F along the order ``[F(∅), F(S_1), ..., F(S_m)]`` (m + 1
    numbers): v_k = −Σ_{j≤k} |F(S_j) − F(S_{j−1})|, min–max normalised to [0, 1] (the first
    region 1, the last 0; all 1 when every gain is 0). No model call."""
    f = np.asarray(values_along_order, dtype=np.float64).ravel()
    if len(f) < 3 or not np.isfinite(f).all():
        raise InputError(
            f"give F along the order with its start, [F(empty), F(S_1), ..., F(S_m)], m >= 2 "
            f"finite values (got {len(f)})"
        )
    v = -np.cumsum(np.abs(np.diff(f)))
    span = v.max() - v.min()
    return np.ones_like(v) if span <= 0 else (v - v.min()) / span


def greedy_passes(m: int, full_known: bool = True) -> int:
    """Detector calls of VPS's greedy search over ``m`` >= 3 regions with the shared cache:
    m(m + 1) images (two per F evaluation, m(m + 1)/2 evaluations), less the 4 images of the
    second-to-last step (the kept sets V∖{c} and the single regions {c} were all seen in the
    first step), less 1 when the full image is already known (a predicted target: the task
    evaluated it to find the detections). m = 2: 4 − [full known]. The curves along the order
    are then free."""
    if m < 2:
        raise InputError(f"VPS needs at least 2 regions, got {m}")
    total = 4 if m == 2 else m * (m + 1) - 4
    return total - int(full_known)


def vps(
    task: DetectionTask,
    *,
    units: UnitSpec = None,
    division_number: int | None = None,
    lambda1: float = 1.0,
    lambda2: float = 1.0,
    search: str = "greedy",
    pending: int = 8,
    values: str = "gains",
) -> Attribution:
    """VPS (Chen et al., 'Interpreting Object-level Foundation Models via Visual Precision
    Search', CVPR 2025): rank the image's regions by greedy maximisation of F(S) = λ1·s(I_S) +
    λ2·(1 − s(I_{V∖S})) on the task's object score (module docstring).

    ``units``: None = the task's regions (SLIC superpixels, ``n_segments`` 64 = the paper's
    ``division_number``, unless the task was given other units); ``division_number=k`` asks for
    SLIC with about k regions (the realised count m differs: 43 for 64 on skimage's astronaut at
    256², 32 for 50); or patches, a label map, ImageUnits. ``search``: ``"greedy"`` (the
    authors') or ``"bidirectional"`` (LiMA's search, ``pending`` candidates; an extension, about
    0.65× the calls at m = 50). ``values``: ``"gains"`` (the authors' gain-based map) or
    ``"rank"`` (rank scores). Deterministic (ties go to the lowest region index).

    Returns an Attribution: unit scores and heatmap from ``values``; ``target`` holds the box and
    label; extras hold ``order``, F along it, the marginal gains, the insertion/deletion curves
    of the object, class and IoU scores on the area axis with their AUCs (the authors'
    protocol; free, the search evaluated those images), the highest confidence at IoU >= 0.5 and
    >= 0.75 along insertion, and the search's forward passes.
    Cost: greedy — m(m + 1) detector calls for m regions less cache hits, exactly
    :func:`greedy_passes` (m) = m(m + 1) − 4, − 1 more for a predicted target (1,051 at m = 32);
    bidirectional — at most 2·bidirectional_evaluations(m, pending) plus the curves' images.
    """
    if search not in ("greedy", "bidirectional"):
        raise InputError(f"unknown search {search!r}: use 'greedy' (VPS) or 'bidirectional' (LiMA)")
    if values not in ("gains", "rank"):
        raise InputError(f"unknown values {values!r}: use 'gains' (the authors' map) or 'rank'")
    lam = (float(lambda1), float(lambda2))
    if not all(np.isfinite(lam)) or not any(lam):
        raise InputError(f"lambda1 and lambda2 must be finite and not both 0, got {lam}")
    u = _regions(task, units, division_number)
    m = len(u)
    if m < 2:
        raise InputError(
            f"only {m} region to rank: VPS needs at least 2; use more superpixels "
            "(division_number=) or smaller patches"
        )
    region_scores = task.region_scores(u)

    def f(masks: np.ndarray) -> np.ndarray:
        b = len(masks)
        s = region_scores(np.concatenate([masks, ~masks]))["object"]
        return lam[0] * s[:b] + lam[1] * (1.0 - s[b:])

    with measure(task) as cost:
        with measure(task) as search_cost:
            if search == "greedy":
                found: SubsetSearch = greedy_order(m, f)
            else:
                found = bidirectional_order(m, f, pending=pending)
        order = found.order
        prefixes = np.zeros((m + 1, m), dtype=bool)
        for j in range(1, m + 1):
            prefixes[j, order[:j]] = True
        ins = region_scores(prefixes)  # all cached after a greedy search
        dele = region_scores(~prefixes)
    along = lam[0] * ins["object"] + lam[1] * (1.0 - dele["object"])  # F(S_0..S_m)
    ordered = vps_gain_values(along) if values == "gains" else (m - np.arange(m)) / m
    scores = np.empty(m)
    scores[order] = ordered
    area = np.concatenate([[0.0], np.cumsum(np.bincount(u.segments.ravel(), minlength=m)[order])])
    area = area / area[-1]
    curves = curve_summary(area, ins, dele)
    params: dict[str, Any] = {
        "lambda1": lam[0],
        "lambda2": lam[1],
        "search": search,
        "values": values,
        "mode": task.mode,
        "baseline": u.removal,
    }
    if units is None:
        params["division_number"] = (
            division_number if division_number is not None else task._unit_kw["n_segments"]
        )
    if search == "bidirectional":
        params["pending"] = pending
    extras: dict[str, Any] = {
        "order": order.tolist(),
        "search_values": found.values.tolist(),
        "values_along_order": along.tolist(),
        "marginal_gains": np.diff(along).tolist(),
        **curves,
        "curve_protocol": "VPS (Chen et al. 2025): regions added (insertion) or removed "
        "(deletion) in the search order, x = fraction of the image area, y = object score "
        f"({task.mode}), class score and IoU of the candidate maximising IoU x class score; "
        f"removed regions show the {u.removal}; AUC by the trapezoid rule",
        "evaluations": found.evaluations,
        "search_forward_passes": search_cost.forward_passes,
        "curve_forward_passes": cost.forward_passes - search_cost.forward_passes,
        "n_units": m,
    }
    if search == "bidirectional":
        extras["decrease_values"] = found.decrease_values.tolist()
        extras["n_selected"] = found.n_selected
    return task.result(
        u.heatmap(scores), "vps", params, cost, units=u, unit_scores=scores, **extras
    )


def _regions(task: DetectionTask, units: UnitSpec, division_number: int | None) -> ImageUnits:
    if division_number is not None:
        if units is not None:
            raise InputError("give units= or division_number=, not both")
        return task.make_units("superpixels", n_segments=division_number)
    return task.units if units is None else task.make_units(units)


def _auc(y: np.ndarray, x: np.ndarray) -> float:
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


def curve_summary(
    area: Any, ins: dict[str, np.ndarray], dele: dict[str, np.ndarray]
) -> dict[str, Any]:
    """The VPS authors' curve numbers (``evals/eval_AUC_faithfulness.py``) from the x axis
    ``area`` (fraction inserted / removed, starting at 0) and the insertion and deletion
    ``{"object", "iou", "cls"}`` values at those points (starting with the blank and the full
    image): both curves, the trapezoid AUC of each score, and the highest confidence along
    insertion, max of [IoU >= t] x class score, at t = 0.5 and a real t = 0.75 (the authors'
    script repeats the 0.5 line there). No model call."""
    area = np.asarray(area, dtype=np.float64)
    out: dict[str, Any] = {
        "insertion_curve": {"area": area.tolist(), **{k: ins[k].tolist() for k in ins}},
        "deletion_curve": {"area": area.tolist(), **{k: dele[k].tolist() for k in dele}},
        "insertion_auc": _auc(ins["object"], area),
        "deletion_auc": _auc(dele["object"], area),
        "insertion_cls_auc": _auc(ins["cls"], area),
        "deletion_cls_auc": _auc(dele["cls"], area),
        "insertion_iou_auc": _auc(ins["iou"], area),
        "deletion_iou_auc": _auc(dele["iou"], area),
    }
    for t, name in ((0.5, "50"), (0.75, "75")):
        out[f"highest_confidence_{name}"] = float(((ins["iou"] >= t) * ins["cls"]).max())
    return out
