"""Faithfulness and localisation of detection explanations, as the VPS authors measure them
(Chen et al., 'Interpreting Object-level Foundation Models via Visual Precision Search', CVPR
2025: ``evals/eval_AUC_faithfulness.py``, ``evals/eval_energy_pg.py``,
``baseline/traditional_inference.py``), but with *both* of their protocols for *every* method:

- ``protocol="regions"`` (how VPS scores itself): the regions (the task's superpixels, or any
  units) ranked by the map's mean inside each, inserted onto / removed from the image one at a
  time; x = fraction of the image area. A VPS result on the same regions keeps its own order.
- ``protocol="pixels"`` (how the authors score baselines such as D-RISE): pixels ranked by the
  map, revealed / removed in 49 uniform steps of 1/49 of the pixels.

Removed pixels show the task's baseline (black by default, as the authors). Each curve is read
three ways: the task's object score, and the class score and IoU of the candidate maximising
IoU × class score. The *highest confidence* along insertion (max of [IoU >= t] × class score,
t = 0.5 and 0.75) says whether some sub-image makes the detector right, and the *debug success
rate* is the share of cases above 0.35 — the authors' numbers for missed and misclassified
objects. :func:`energy_pointing_game` reads a map against the target box, beside its chance
level (the box's share of the image).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attribkit.core.attribution import Attribution
from attribkit.core.cost import Cost, measure
from attribkit.core.errors import InputError
from attribkit.core.jsonio import to_json
from attribkit.core.units import ImageUnits
from attribkit.methods.detection.vps import curve_summary
from attribkit.tasks.detection import DetectionTask

__all__ = [
    "PROTOCOLS",
    "DetectionCurves",
    "EnergyPointingGame",
    "debug_success_rate",
    "detection_curves",
    "energy_pointing_game",
]

PROTOCOLS = ("regions", "pixels")


@dataclass
class DetectionCurves:
    """Result of :func:`detection_curves`.

    Attributes:
        protocol: ``"regions"`` or ``"pixels"``.
        area: x of both curves: the fraction of the image inserted (insertion) or removed
            (deletion) after each step, starting at 0 and ending at 1.
        insertion, deletion: ``{"object", "cls", "iou"}``, each one value per point of ``area``
            (insertion starts at the blank image, deletion at the full one).
        auc: trapezoid AUCs ``insertion``, ``deletion`` (object score; higher and lower are
            better), ``insertion_cls``, ``deletion_cls``, ``insertion_iou``, ``deletion_iou``.
        highest_confidence: ``{"50": ..., "75": ...}``: max along insertion of [IoU >= t] × class
            score.
        order: the regions in insertion order (``"regions"``), else None.
        description: what was measured, in a sentence; cost: the detector calls it took.
    """

    protocol: str
    area: np.ndarray
    insertion: dict[str, np.ndarray]
    deletion: dict[str, np.ndarray]
    auc: dict[str, float]
    highest_confidence: dict[str, float]
    order: np.ndarray | None
    description: str
    cost: Cost = field(default_factory=Cost)

    @property
    def insertion_auc(self) -> float:
        """Insertion AUC of the object score (higher is better)."""
        return self.auc["insertion"]

    @property
    def deletion_auc(self) -> float:
        """Deletion AUC of the object score (lower is better)."""
        return self.auc["deletion"]

    def debug_success(self, threshold: float = 0.35, iou: float = 0.5) -> bool:
        """Whether the highest confidence at IoU >= ``iou`` (0.5 or 0.75) exceeds
        ``threshold`` (the authors' 0.35)."""
        return bool(self.highest_confidence[_iou_key(iou)] > threshold)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return to_json(  # type: ignore[no-any-return]
            {
                "protocol": self.protocol,
                "area": self.area,
                "insertion": self.insertion,
                "deletion": self.deletion,
                "auc": self.auc,
                "highest_confidence": self.highest_confidence,
                "order": self.order,
                "description": self.description,
                "cost": self.cost.to_dict(),
            }
        )


def _iou_key(iou: float) -> str:
    if iou not in (0.5, 0.75):
        raise InputError(f"highest confidence is kept at IoU 0.5 and 0.75, got {iou}")
    return "50" if iou == 0.5 else "75"


def _map_of(task: DetectionTask, attribution: Any) -> np.ndarray:
    hm = attribution.heatmap if isinstance(attribution, Attribution) else attribution
    hm = np.asarray(hm, dtype=np.float64)
    if hm.ndim != 2:
        raise InputError(
            f"give a detection Attribution or an (H, W) map, got an array of shape {hm.shape}"
        )
    if not np.isfinite(hm).all():
        raise InputError("the attribution map has NaN or infinite values; replace them first")
    return hm if hm.shape == task.shape else task.upsample(hm)


def _same_units(attribution: Any, u: ImageUnits) -> bool:
    if not isinstance(attribution, Attribution) or "order" not in attribution.extras:
        return False
    return len(attribution.units) == len(u) and all(
        a.box == b.box for a, b in zip(attribution.units, u.units, strict=True)
    )


def detection_curves(
    task: DetectionTask,
    attribution: Attribution | np.ndarray,
    protocol: str = "regions",
    *,
    units: Any = None,
    steps: int = 49,
) -> DetectionCurves:
    """Insertion and deletion curves of ``attribution`` (a detection Attribution or an (H, W)
    map) for ``task``'s target under ``protocol`` (module docstring), with the AUCs of the
    object, class and IoU scores and the highest confidence at IoU >= 0.5 and >= 0.75.

    ``"regions"``: ``units`` (default the task's regions; pass another SLIC split for an
    independent region set) ranked by the map's mean in each (ties: lower index first; a result
    that carries its own search ``order`` on the same regions keeps it). Cost: at most 2m − 1
    detector calls for m regions (the full image is known), less the images the task's cache
    already holds — none after VPS on the same regions.
    ``"pixels"``: ``steps`` steps (49, the authors') of int(n·i/steps) pixels. Cost:
    2·steps − 1 detector calls (2·steps if the whole image was never evaluated).
    """
    if not isinstance(task, DetectionTask):
        raise InputError(f"detection_curves takes a DetectionTask, got {type(task).__name__}")
    if protocol not in PROTOCOLS:
        raise InputError(f"unknown protocol {protocol!r}: use 'regions' or 'pixels'")
    hm = _map_of(task, attribution)
    with measure(task) as cost:
        if protocol == "regions":
            u = task.make_units(units)
            m = len(u)
            seg = u.segments.ravel()
            sizes = np.bincount(seg, minlength=m).astype(np.float64)
            if _same_units(attribution, u):
                order = np.asarray(attribution.extras["order"], dtype=np.int64)  # type: ignore[union-attr]
            else:
                means = np.bincount(seg, weights=hm.ravel(), minlength=m) / np.maximum(sizes, 1)
                order = np.argsort(-means, kind="stable")
            prefixes = np.zeros((m + 1, m), dtype=bool)
            for j in range(1, m + 1):
                prefixes[j, order[:j]] = True
            scores = task.region_scores(u)
            ins, dele = scores(prefixes), scores(~prefixes)
            area = np.concatenate([[0.0], np.cumsum(sizes[order])]) / sizes.sum()
            what = f"{m} regions ({u.removal}) in the order of " + (
                "the search" if _same_units(attribution, u) else "the map's mean per region"
            )
        else:
            ins, dele, area = _pixel_curves(task, hm, steps)
            order = None
            what = f"pixels in {steps} steps of 1/{steps} ordered by the map"
    summary = curve_summary(area, ins, dele)
    auc = {
        "insertion": summary["insertion_auc"],
        "deletion": summary["deletion_auc"],
        "insertion_cls": summary["insertion_cls_auc"],
        "deletion_cls": summary["deletion_cls_auc"],
        "insertion_iou": summary["insertion_iou_auc"],
        "deletion_iou": summary["deletion_iou_auc"],
    }
    description = (
        f"VPS-style insertion/deletion ({protocol} protocol): {what}, removed pixels show the "
        f"task's baseline; y = {task.mode} score of {task.target_info['description']}, and the "
        "class score and IoU of the candidate maximising IoU x class score; x = area fraction; "
        "AUC by the trapezoid rule"
    )
    return DetectionCurves(
        protocol=protocol,
        area=area,
        insertion={k: np.asarray(v) for k, v in ins.items()},
        deletion={k: np.asarray(v) for k, v in dele.items()},
        auc=auc,
        highest_confidence={
            "50": summary["highest_confidence_50"],
            "75": summary["highest_confidence_75"],
        },
        order=order,
        description=description,
        cost=cost,
    )


def _pixel_curves(
    task: DetectionTask, hm: np.ndarray, steps: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 2:
        raise InputError(f"steps must be an integer >= 2 (the authors use 49), got {steps!r}")
    h, w = task.shape
    n = h * w
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(-hm.ravel(), kind="stable")] = np.arange(n)
    counts = np.array([int(n * i / steps) for i in range(1, steps + 1)])
    image, base = task.image.astype(np.float32), task.baseline_image
    # blank, then insertions 1..steps-1, then deletions 1..steps-1 (the last insertion is the
    # full image, the last deletion the blank one)
    kept = [np.zeros(n, dtype=bool)]
    kept += [rank < k for k in counts[:-1]]
    kept += [rank >= k for k in counts[:-1]]
    out: dict[str, list[float]] = {"object": [], "iou": [], "cls": []}
    step = task.batch_size
    for s in range(0, len(kept), step):
        masks = np.stack(kept[s : s + step]).reshape(-1, h, w, 1)
        t = task.terms(np.where(masks, image[None], base[None]))
        for key in out:
            out[key].extend(float(v) for v in t[key])
    full = dict(zip(("object", "iou", "cls"), task.full_terms, strict=True))
    k = steps - 1
    ins = {key: np.array([v[0], *v[1 : 1 + k], full[key]]) for key, v in out.items()}
    dele = {key: np.array([full[key], *v[1 + k :], v[0]]) for key, v in out.items()}
    area = np.concatenate([[0.0], counts / n])
    return ins, dele, area


def debug_success_rate(
    curves: Sequence[DetectionCurves], *, threshold: float = 0.35, iou: float = 0.5
) -> float:
    """The VPS authors' debug success rate: the share of cases (one :class:`DetectionCurves`
    each, usually missed or misclassified objects explained on their ground-truth box) whose
    highest confidence at IoU >= ``iou`` exceeds ``threshold`` (0.35). No model call."""
    curves = list(curves)
    if not curves:
        raise InputError("give at least one DetectionCurves (one per explained case)")
    return float(np.mean([c.debug_success(threshold, iou) for c in curves]))


@dataclass
class EnergyPointingGame:
    """``energy``: share of the min–max normalised map inside the box; ``chance``: the box's
    share of the image (what a uniform map scores); ``hit``: the map's maximum lies in the box
    (the pointing game); ``box``: the pixel box used, (x1, y1, x2, y2)."""

    energy: float
    chance: float
    hit: bool
    box: tuple[int, int, int, int]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return to_json(self.__dict__)  # type: ignore[no-any-return]


def energy_pointing_game(
    attribution: Any, box: Sequence[float] | None = None
) -> EnergyPointingGame:
    """The energy pointing game of a detection map (Wang et al., 'Score-CAM', 2020, as the VPS
    authors compute it in ``evals/eval_energy_pg.py``): the map is min–max normalised, then
    energy = Σ map inside ``box`` / Σ map. ``box`` is x1, y1, x2, y2 in pixels (default: the
    attribution's target box); it covers the pixels it touches (floor / ceil). Reported beside
    ``chance``, the box's share of the image: a small box scores low for every map. A constant
    map scores 0. No model call."""
    hm = attribution.heatmap if isinstance(attribution, Attribution) else attribution
    hm = np.asarray(hm, dtype=np.float64)
    if hm.ndim != 2 or not np.isfinite(hm).all():
        raise InputError(f"give a detection Attribution or a finite (H, W) map, got {hm.shape}")
    if box is None:
        target = attribution.target if isinstance(attribution, Attribution) else None
        if not isinstance(target, dict) or "box" not in target:
            raise InputError("give box=(x1, y1, x2, y2): this map carries no target box")
        box = target["box"]
    b = np.asarray(box, dtype=np.float64).ravel()
    h, w = hm.shape
    if b.shape != (4,) or not np.isfinite(b).all() or not (b[2] > b[0] and b[3] > b[1]):
        raise InputError(f"box must be x1, y1, x2, y2 with x1 < x2 and y1 < y2, got {box!r}")
    x1, y1 = max(int(np.floor(b[0])), 0), max(int(np.floor(b[1])), 0)
    x2, y2 = min(int(np.ceil(b[2])), w), min(int(np.ceil(b[3])), h)
    if x2 <= x1 or y2 <= y1:
        raise InputError(f"box {list(b)} lies outside the {w}x{h} map")
    span = hm.max() - hm.min()
    norm = (hm - hm.min()) / span if span > 0 else np.zeros_like(hm)
    total = norm.sum()
    inside = norm[y1:y2, x1:x2]
    energy = float(inside.sum() / total) if total > 0 else 0.0
    hit = bool(span > 0 and inside.max() == norm.max())
    chance = (x2 - x1) * (y2 - y1) / (h * w)
    return EnergyPointingGame(energy, float(chance), hit, (x1, y1, x2, y2))
