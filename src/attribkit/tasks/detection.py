"""Object detection: which regions of an image made a detector find (or miss) one object.

**The detector protocol.** A detector is a :class:`Detector`: it has ``classes`` (the class
names, C of them) and maps a batch of display images to *every candidate before
non-maximum suppression*::

    boxes, scores = detector(images)
    # images: (B, H, W, 3) float32 in [0, 1] (the display image, any H and W)
    # boxes:  (B, N, 4) float, x1 y1 x2 y2 in pixels of the input image (N candidates)
    # scores: (B, N, C) float, each candidate's score for each class

and ``detector.predict(image, score_threshold=0.5)`` gives the user-facing list of
:class:`Detection` (box, label, score) after thresholding and non-maximum suppression —
MediaPipe's *weighted* NMS by default (overlapping boxes averaged by score, the top score kept).
Explanations read the raw candidates: after NMS a masked image often has no box at all and every
score is flat (Chen et al., VPS, CVPR 2025). Every call is checked (shapes, finite values) and
counted: a detector is a :class:`~attribkit.core.cost.CostMeter` (one forward pass per image).
Write a detector by subclassing :class:`Detector` and implementing :meth:`Detector.forward`, or
wrap a torch module (:class:`TorchDetector`) or any function (:class:`CallableDetector`).

**The task.** :class:`DetectionTask` (kind ``"detection"``) holds one image, the detector and
the target: a predicted detection (default the top one), or a ground-truth ``box=`` and
``label=`` (a missed or misclassified object). The *object score* of an image is

- ``mode="object"``: max over candidates of IoU(candidate box, target box) × class score,
- ``mode="cls"``: max over candidates of [IoU > 0.5] × class score,

0 when there is no candidate. Its units are image regions (SLIC superpixels by default, 64 as
VPS's ``division_number``; a grid or any label map), removed regions show the baseline (black
by default, as the VPS authors' mmdet code multiplies pixels by the mask), so every
perturbation method runs on its cached mask scorer; results carry the heatmap, the target box
and label. :func:`attribute_detection` is the one-call entry point.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from attribkit.core.attribution import Attribution
from attribkit.core.cost import Cost, CostMeter
from attribkit.core.errors import InputError, ScorerError
from attribkit.core.registry import MethodSpec
from attribkit.core.scorer import Scorer
from attribkit.core.task import Task
from attribkit.core.units import ImageUnits, Units
from attribkit.models.image import prepare_image, to_rgb01
from attribkit.tasks.image import image_units

__all__ = [
    "MODES",
    "CallableDetector",
    "Detection",
    "DetectionTask",
    "Detector",
    "RegionScores",
    "TorchDetector",
    "attribute_detection",
    "box_iou",
    "check_output",
    "detection_units",
    "nms",
    "object_scores",
]

#: the object scores a DetectionTask can explain
MODES = ("object", "cls")
#: keyword arguments of :func:`attribute_detection` that build the task, not the method
TASK_OPTIONS = (
    "box",
    "label",
    "mode",
    "score_threshold",
    "iou_threshold",
    "baseline",
    "n_segments",
    "compactness",
    "patch",
    "blur_sigma",
    "image_size",
)
#: unit options a method call may give (they shape the units a perturbation method scores)
UNIT_OPTIONS = ("patch", "n_segments", "compactness", "blur_sigma")
UnitSpec = str | Units | np.ndarray | None
Box = Sequence[float] | np.ndarray


# -- boxes ----------------------------------------------------------------------------------------


def box_iou(boxes: Any, box: Box) -> np.ndarray:
    """IoU of each of ``boxes`` (..., 4) with one ``box`` (4,), all x1 y1 x2 y2: an array of
    shape (...). Boxes with no area, or with no overlap, have IoU 0. No model call."""
    b = np.asarray(boxes, dtype=np.float64)
    t = np.asarray(box, dtype=np.float64)
    if b.shape[-1:] != (4,) or t.shape != (4,):
        raise InputError(f"boxes must be (..., 4) and box (4,), got {b.shape} and {t.shape}")
    iw = np.clip(np.minimum(b[..., 2], t[2]) - np.maximum(b[..., 0], t[0]), 0.0, None)
    ih = np.clip(np.minimum(b[..., 3], t[3]) - np.maximum(b[..., 1], t[1]), 0.0, None)
    inter = iw * ih
    area = np.clip(b[..., 2] - b[..., 0], 0.0, None) * np.clip(b[..., 3] - b[..., 1], 0.0, None)
    union = area + max(t[2] - t[0], 0.0) * max(t[3] - t[1], 0.0) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return iou


def _pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) IoU matrix of two (n, 4) box arrays."""
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)  # fmt: skip
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)  # fmt: skip
    inter = iw * ih
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


@dataclass(frozen=True)
class Detection:
    """One detection: ``box`` (x1, y1, x2, y2 in pixels of the image), ``label`` (class index),
    ``name`` (class name), ``score``; ``class_scores`` is the score vector of the candidate that
    led its cluster (D-RISE's class-probability vector)."""

    box: tuple[float, float, float, float]
    label: int
    score: float
    name: str = ""
    class_scores: tuple[float, ...] = field(default=(), repr=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (box, label, name, score)."""
        return {
            "box": [float(v) for v in self.box],
            "label": int(self.label),
            "name": self.name,
            "score": float(self.score),
        }


def nms(
    boxes: Any,
    scores: Any,
    *,
    score_threshold: float = 0.5,
    iou_threshold: float = 0.3,
    method: str = "weighted",
    classes: Sequence[str] | None = None,
) -> list[Detection]:
    """Detections of one image from its raw candidates ``boxes`` (N, 4) and ``scores`` (N, C):
    each candidate's label is its best class; candidates scoring below ``score_threshold`` are
    dropped; then, class by class, the best remaining candidate and every candidate overlapping
    it by IoU > ``iou_threshold`` form a cluster, which becomes one detection: with
    ``method="weighted"`` (MediaPipe's WeightedNonMaxSuppression) its box is the clusters'
    score-weighted mean box and its score the best one; with ``"hard"`` the best candidate is
    kept as it is. Sorted by score, best first. No model call."""
    if method not in ("weighted", "hard"):
        raise InputError(f"unknown NMS method {method!r}: use 'weighted' (MediaPipe) or 'hard'")
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    s = np.asarray(scores, dtype=np.float64)
    s = s.reshape(len(b), -1) if s.size else np.zeros((len(b), len(classes or [""])))
    if len(b) == 0:
        return []
    labels, best = s.argmax(axis=1), s.max(axis=1)
    out: list[Detection] = []
    for c in np.unique(labels[best >= score_threshold]):
        idx = np.nonzero((labels == c) & (best >= score_threshold))[0]
        idx = idx[np.argsort(-best[idx], kind="stable")]
        ious = _pairwise_iou(b[idx], b[idx])
        alive = np.ones(len(idx), dtype=bool)
        for i in range(len(idx)):
            if not alive[i]:
                continue
            cluster = alive & (ious[i] > iou_threshold)
            cluster[i] = True
            members = idx[cluster]
            if method == "weighted":
                w = best[members]
                box = (b[members] * w[:, None]).sum(axis=0) / w.sum()
            else:
                box = b[idx[i]]
            alive &= ~cluster
            name = classes[int(c)] if classes is not None and int(c) < len(classes) else str(c)
            out.append(
                Detection(
                    tuple(float(v) for v in box),  # type: ignore[arg-type]
                    int(c),
                    float(best[idx[i]]),
                    name,
                    tuple(float(v) for v in s[idx[i]]),
                )
            )
    return sorted(out, key=lambda d: -d.score)


def object_scores(
    boxes: Any, scores: Any, box: Box, label: int, mode: str = "object"
) -> dict[str, np.ndarray]:
    """The object score of each image of a batch of raw detector outputs (``boxes`` (B, N, 4),
    ``scores`` (B, N, C)) for the target ``box`` and class ``label``: ``mode="object"``: max over
    candidates of IoU × class score; ``"cls"``: max of [IoU > 0.5] × class score (VPS, Chen et
    al., CVPR 2025). Returns ``{"object", "iou", "cls", "index"}``, each (B,): the score, and the
    IoU, class score and index of the candidate maximising IoU × class score (as the authors
    log them; -1 and 0 when an image has no candidate, whose object score is 0). No model call."""
    if mode not in MODES:
        raise InputError(f"unknown mode {mode!r}: use 'object' (IoU x score) or 'cls' (IoU > 0.5)")
    b = np.asarray(boxes, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if b.ndim != 3 or b.shape[-1] != 4 or s.ndim != 3 or s.shape[:2] != b.shape[:2]:
        raise InputError(
            f"boxes must be (B, N, 4) and scores (B, N, C) with the same B and N; got {b.shape} "
            f"and {s.shape}"
        )
    n_img, n_cand = b.shape[:2]
    if n_cand == 0:
        zero = np.zeros(n_img)
        return {"object": zero, "iou": zero.copy(), "cls": zero.copy(), "index": np.full(n_img, -1)}
    if not 0 <= label < s.shape[2]:
        raise InputError(f"label {label} is not one of the detector's {s.shape[2]} classes")
    iou = box_iou(b, box)
    cls = s[:, :, label]
    prod = iou * cls
    gate = iou if mode == "object" else (iou > 0.5).astype(np.float64)
    index = prod.argmax(axis=1)
    rows = np.arange(n_img)
    return {
        "object": (gate * cls).max(axis=1),
        "iou": iou[rows, index],
        "cls": cls[rows, index],
        "index": index,
    }


# -- detectors ------------------------------------------------------------------------------------


class Detector(CostMeter, ABC):
    """Base class of every detector (the protocol of this module's docstring).

    Subclasses set ``classes`` (C names) and implement :meth:`forward`; ``name``,
    ``batch_size`` (most images per :meth:`forward` call), ``nms_method`` (``"weighted"``, as
    MediaPipe, or ``"hard"``) and ``iou_threshold`` (0.3, MediaPipe's face detector's) are
    options. Calling the detector checks and counts: one forward pass per image in
    ``cost.forward_passes``, one batch per :meth:`forward` call.
    """

    classes: list[str]
    name: str = "detector"
    batch_size: int = 16
    nms_method: str = "weighted"
    iou_threshold: float = 0.3

    @abstractmethod
    def forward(self, images: np.ndarray) -> tuple[Any, Any]:
        """Raw candidates of a (b, H, W, 3) float32 batch in [0, 1] (b <= ``batch_size``):
        ``(boxes (b, N, 4) x1 y1 x2 y2 in pixels of these images, scores (b, N, C))``, numpy
        arrays or tensors. Called by :meth:`__call__`, which checks and counts."""

    def __call__(self, images: Any) -> tuple[np.ndarray, np.ndarray]:
        """Every candidate before NMS for a (B, H, W, 3) batch of display images in [0, 1]:
        ``(boxes (B, N, 4), scores (B, N, C))`` as float64 arrays. One forward pass per image,
        ``batch_size`` at a time; ScorerError when the detector returns the wrong shapes or a
        non-finite value."""
        x = np.asarray(images, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[-1] != 3 or len(x) == 0:
            raise InputError(
                f"a detector takes a (B, H, W, 3) batch of RGB images in [0, 1], got shape {x.shape}"
            )
        n_classes = len(self.classes)
        if n_classes == 0:
            raise InputError(f"{self.name} declares no classes; give the class names")
        step = max(int(self.batch_size), 1)
        all_boxes, all_scores = [], []
        with self.timed():
            for s in range(0, len(x), step):
                chunk = x[s : s + step]
                raw = self.forward(chunk)
                if not isinstance(raw, (tuple, list)) or len(raw) != 2:
                    raise ScorerError(
                        f"{self.name}.forward must return (boxes, scores), got {type(raw).__name__}"
                    )
                self.cost.forward_passes += len(chunk)
                self.cost.batches += 1
                boxes, scores = (_to_numpy(v) for v in raw)
                self._check(boxes, scores, len(chunk), n_classes)
                all_boxes.append(boxes)
                all_scores.append(scores)
        n = max(b.shape[1] for b in all_boxes)
        if any(b.shape[1] != n for b in all_boxes):  # pad to the most candidates (zero boxes)
            all_boxes = [_pad(b, n) for b in all_boxes]
            all_scores = [_pad(v, n) for v in all_scores]
        return np.concatenate(all_boxes), np.concatenate(all_scores)

    def _check(self, boxes: np.ndarray, scores: np.ndarray, b: int, c: int) -> None:
        check_output(boxes, scores, b, self.classes, self.name)

    def postprocess(
        self, boxes: Any, scores: Any, score_threshold: float = 0.5
    ) -> list[list[Detection]]:
        """Per image, the detections of raw outputs (B, N, 4) and (B, N, C): :func:`nms` with
        this detector's ``nms_method`` and ``iou_threshold``. No model call."""
        return [
            nms(
                b,
                s,
                score_threshold=score_threshold,
                iou_threshold=self.iou_threshold,
                method=self.nms_method,
                classes=self.classes,
            )
            for b, s in zip(np.asarray(boxes), np.asarray(scores), strict=True)
        ]

    def predict(self, image: Any, score_threshold: float = 0.5) -> list[Detection]:
        """The detections of one image (an (H, W, 3) array, PIL image or path), best first:
        candidates scoring at least ``score_threshold``, merged by NMS (:meth:`postprocess`).
        One forward pass."""
        boxes, scores = self(to_rgb01(image)[None])
        return self.postprocess(boxes, scores, score_threshold)[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, classes={list(self.classes)})"


def check_output(
    boxes: np.ndarray, scores: np.ndarray, n_images: int, classes: Sequence[str], name: str
) -> None:
    """ScorerError unless ``boxes`` is (n_images, N, 4) and ``scores`` (n_images, N, C) for the
    C ``classes``, all finite: the detector protocol's output. No model call."""
    c = len(classes)
    if boxes.ndim != 3 or boxes.shape[0] != n_images or boxes.shape[2] != 4:
        raise ScorerError(
            f"{name} returned boxes of shape {boxes.shape} for {n_images} images; the protocol "
            f"is (B, N, 4) boxes x1 y1 x2 y2 in pixels, before NMS"
        )
    if scores.shape != (n_images, boxes.shape[1], c):
        raise ScorerError(
            f"{name} returned scores of shape {scores.shape} for boxes {boxes.shape} and "
            f"{c} classes; the protocol is (B, N, C) with one score per candidate and class "
            f"({list(classes)[:20]})"
        )
    if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
        raise ScorerError(
            f"{name} returned non-finite boxes or scores (NaN or inf) for an input batch; "
            "check the detector's weights and decoding"
        )


def _to_numpy(v: Any) -> np.ndarray:
    if isinstance(v, torch.Tensor):
        v = v.detach().to("cpu", torch.float64).numpy()
    return np.asarray(v, dtype=np.float64)


def _pad(a: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((a.shape[0], n, a.shape[2]))
    out[:, : a.shape[1]] = a
    return out


def _check_classes(classes: Sequence[str]) -> list[str]:
    if isinstance(classes, str) or not isinstance(classes, Sequence) or len(classes) == 0:
        raise InputError(
            f"classes must be a non-empty list of class names, got {classes!r}; e.g. ['face']"
        )
    return [str(c) for c in classes]


class CallableDetector(Detector):
    """A detector from any function ``fn(images (B, H, W, 3) float32 in [0, 1]) -> (boxes
    (B, N, 4) x1 y1 x2 y2 px, scores (B, N, C))`` (before NMS) and its ``classes``. Counts one
    forward pass per image."""

    def __init__(
        self,
        fn: Callable[[np.ndarray], tuple[Any, Any]],
        classes: Sequence[str],
        *,
        batch_size: int = 32,
        name: str = "callable detector",
        nms_method: str = "weighted",
        iou_threshold: float = 0.3,
    ) -> None:
        super().__init__()
        if not callable(fn):
            raise InputError(f"CallableDetector needs a function, got {type(fn).__name__}")
        self.fn, self.classes = fn, _check_classes(classes)
        self.batch_size, self.name = int(batch_size), name
        self.nms_method, self.iou_threshold = nms_method, float(iou_threshold)

    def forward(self, images: np.ndarray) -> tuple[Any, Any]:
        """``fn(images)``."""
        return self.fn(images)  # type: ignore[no-any-return]


class TorchDetector(Detector):
    """A torch detector: ``module(x)`` on a (B, 3, h, w) float batch returns ``(boxes (B, N, 4)
    x1 y1 x2 y2 in pixels of x, scores (B, N, C))`` before NMS — or anything ``decode(output,
    x)`` turns into that (e.g. anchors + regressions + logits).

    ``input_size`` (an int or (h, w)) resizes the display image bilinearly to what the module
    expects (boxes are scaled back to display pixels); ``normalize`` is None (inputs in [0, 1]),
    ``"imagenet"``, ``"symmetric"`` ([-1, 1], as MediaPipe's models) or ``(mean, std)``.
    Runs under ``torch.inference_mode`` in eval mode; one forward pass per image.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        classes: Sequence[str],
        *,
        input_size: int | tuple[int, int] | None = None,
        normalize: str | tuple[Sequence[float], Sequence[float]] | None = None,
        decode: Callable[[Any, torch.Tensor], tuple[Any, Any]] | None = None,
        batch_size: int = 16,
        device: str | torch.device | None = None,
        name: str | None = None,
        nms_method: str = "weighted",
        iou_threshold: float = 0.3,
    ) -> None:
        super().__init__()
        if not isinstance(module, torch.nn.Module):
            raise InputError(
                f"TorchDetector wraps a torch.nn.Module, got {type(module).__name__}; use "
                "CallableDetector(fn, classes) for any other function"
            )
        self.module, self.classes = module.eval(), _check_classes(classes)
        if isinstance(input_size, int):
            input_size = (input_size, input_size)
        self.input_size = input_size
        self.decode, self.batch_size = decode, int(batch_size)
        self.device = torch.device(device) if device is not None else _module_device(module)
        self.name = name or type(module).__name__
        self.nms_method, self.iou_threshold = nms_method, float(iou_threshold)
        self._mean_std = _mean_std(normalize)

    def forward(self, images: np.ndarray) -> tuple[Any, Any]:
        """Resize, normalise, run the module (and ``decode``), scale boxes to display pixels."""
        h, w = images.shape[1:3]
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).to(self.device)
        if self.input_size is not None and tuple(self.input_size) != (h, w):
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False)
        if self._mean_std is not None:
            mean, std = (torch.tensor(v, device=x.device).view(1, 3, 1, 1) for v in self._mean_std)
            x = (x - mean) / std
        with torch.inference_mode():
            out = self.module(x)
            boxes, scores = self.decode(out, x) if self.decode is not None else out
        boxes = _to_numpy(boxes)
        if self.input_size is not None and boxes.ndim == 3 and boxes.shape[-1] == 4:
            sy, sx = h / self.input_size[0], w / self.input_size[1]
            boxes = boxes * np.array([sx, sy, sx, sy])
        return boxes, scores


def _module_device(module: torch.nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _mean_std(normalize: Any) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    if normalize is None:
        return None
    if isinstance(normalize, str):
        table = {
            "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
            "symmetric": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        }
        if normalize not in table:
            raise InputError(
                f"unknown normalize {normalize!r}: use None, 'imagenet', 'symmetric' or (mean, std)"
            )
        return table[normalize]
    mean, std = normalize
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


# -- units and cached region scores ---------------------------------------------------------------


def detection_units(
    image: np.ndarray,
    units: UnitSpec = "superpixels",
    *,
    n_segments: int = 64,
    compactness: float = 10.0,
    patch: int | None = None,
    baseline: str | np.ndarray = "zero",
    blur_sigma: float = 10.0,
) -> ImageUnits:
    """The regions of a detection image: ``"superpixels"`` (the default unless ``patch`` is
    given; scikit-image SLIC with about
    ``n_segments`` regions, VPS's ``division_number``; the realised count differs), ``"patches"``
    (``patch`` px squares), ``"pixels"``, an (H, W) label map, or ready ImageUnits. Removed
    regions show ``baseline``: ``"zero"`` (black, the VPS authors' mmdet code), ``"mean"``,
    ``"blur"`` or an image array. No model call."""
    if isinstance(n_segments, bool) or not isinstance(n_segments, (int, np.integer)):
        raise InputError(f"n_segments (division_number) must be an integer, got {n_segments!r}")
    if n_segments < 2:
        raise InputError(f"n_segments (division_number) must be >= 2, got {n_segments}")
    return image_units(
        image,
        ("superpixels" if patch is None else "patches") if units is None else units,
        patch=patch,
        n_segments=int(n_segments),
        compactness=compactness,
        baseline=baseline,
        blur_sigma=blur_sigma,
    )


class RegionScores:
    """Object, IoU and class scores of the images that keep subsets of ``units`` (removed
    regions show the units' baseline), cached by kept-unit mask.

    ``scores(masks)`` takes a (B, m) boolean array and returns ``{"object", "iou", "cls"}``
    (each (B,)); only masks never seen are composed and sent to the detector, in batches, one
    forward pass each, counted on the task; the others count as cache hits there. The image that
    removes a set S *is* the image that keeps its complement, so subset searches and their
    insertion/deletion curves share every image. Get it from :meth:`DetectionTask.region_scores`
    so that all methods and evaluators on the same units share one cache.
    """

    KEYS = ("object", "iou", "cls")

    def __init__(self, task: DetectionTask, units: ImageUnits) -> None:
        self.task, self.units, self.m = task, units, len(units)
        self._cache: dict[bytes, tuple[float, float, float]] = {}
        if task._full_terms is not None:  # the full image was evaluated when the task was built
            self._cache[self._key(np.ones(self.m, dtype=bool))] = task._full_terms

    @staticmethod
    def _key(row: np.ndarray) -> bytes:
        return np.packbits(row).tobytes()

    def __call__(self, masks: Any) -> dict[str, np.ndarray]:
        m = self.units.check_masks(masks)
        keys = [self._key(row) for row in m]
        todo: dict[bytes, int] = {}
        for i, k in enumerate(keys):
            if k not in self._cache and k not in todo:
                todo[k] = i
        self.task.cost.cache_hits += len(keys) - len(todo)
        rows = list(todo.items())
        step = self.task.batch_size
        for s in range(0, len(rows), step):
            chunk = rows[s : s + step]
            images = self.units.compose_batch(m[[i for _, i in chunk]]).astype(np.float32)
            t = self.task.terms(images)
            for j, (k, _) in enumerate(chunk):
                self._cache[k] = (float(t["object"][j]), float(t["iou"][j]), float(t["cls"][j]))
        got = np.array([self._cache[k] for k in keys], dtype=np.float64).reshape(len(keys), 3)
        return {name: got[:, j] for j, name in enumerate(self.KEYS)}


# -- the task -------------------------------------------------------------------------------------


def _follows_protocol(detector: Any) -> bool:
    """A :class:`Detector`, or any object with the protocol (callable, ``classes``,
    ``postprocess``) — e.g. :class:`attribkit.models.blazeface.BlazeFace`."""
    if isinstance(detector, Detector):
        return True
    classes = getattr(detector, "classes", None)
    return (
        callable(detector)
        and isinstance(classes, Sequence)
        and not isinstance(classes, str)
        and len(classes) > 0
        and callable(getattr(detector, "postprocess", None))
    )


class DetectionTask(CostMeter, Task):
    """One image, one detector, one object to explain (task kind ``"detection"``: the detection
    methods ``vps`` and ``drise``, and every perturbation method over image regions).

    Args:
        detector: a :class:`Detector` (``TorchDetector``, ``CallableDetector``, BlazeFace...).
        image: an (H, W[, C]) array (uint8 or float in [0, 1]), a PIL image or a path; used at
            its size unless ``image_size`` resizes it (whole image, bicubic) to a square.
        target: the index of a predicted detection (best first; default 0, the top one).
        box, label: instead of ``target``, a ground-truth box (x1, y1, x2, y2 px, inside the
            image) and class (index or name; optional for a one-class detector) — a missed or
            misclassified object. ``label`` with a ``target`` explains that detection's box
            as another class.
        mode: ``"object"`` (max IoU × class score over candidates) or ``"cls"`` ([IoU > 0.5] ×
            class score).
        units: the default regions (:func:`detection_units`: ``"superpixels"`` with
            ``n_segments`` 64, ``"patches"``, a label map, ImageUnits); ``baseline`` is what a
            removed region shows (``"zero"``: black).
        score_threshold: what counts as a detection in :attr:`detections` (0.5, MediaPipe's).

    Building it costs one forward pass (the detections on the whole image), none with ``box=``.
    The task is its own :attr:`meter`: every image it sends to the detector is counted on it.
    """

    kind = "detection"

    def __init__(
        self,
        detector: Detector,
        image: Any,
        target: int | None = None,
        *,
        box: Box | None = None,
        label: int | str | None = None,
        mode: str = "object",
        units: UnitSpec = None,
        n_segments: int = 64,
        compactness: float = 10.0,
        patch: int | None = None,
        baseline: str | np.ndarray = "zero",
        blur_sigma: float = 10.0,
        score_threshold: float = 0.5,
        image_size: int | None = None,
    ) -> None:
        super().__init__()
        if not _follows_protocol(detector):
            raise InputError(
                f"DetectionTask needs a detector (callable on images, with classes and "
                f"postprocess), got {type(detector).__name__}; wrap a function as "
                "CallableDetector(fn, classes=[...]) or a torch module as "
                "TorchDetector(module, classes=[...])"
            )
        if mode not in MODES:
            raise InputError(f"unknown mode {mode!r}: use 'object' (IoU x score) or 'cls'")
        if not 0.0 <= float(score_threshold) <= 1.0:
            raise InputError(f"score_threshold must be in [0, 1], got {score_threshold}")
        self.detector, self.mode = detector, mode
        self.detector_name = str(getattr(detector, "name", type(detector).__name__))
        #: images composed and sent to the detector per call
        self.batch_size = max(int(getattr(detector, "batch_size", 16) or 16), 1)
        self.score_threshold = float(score_threshold)
        img = to_rgb01(image)
        self.image = img if image_size is None else prepare_image(img, image_size, resize=None)
        self._unit_kw: dict[str, Any] = {
            "n_segments": n_segments,
            "compactness": compactness,
            "patch": patch,
            "baseline": baseline,
            "blur_sigma": blur_sigma,
        }
        self._unit_spec = units
        self._units_cache: dict[Any, ImageUnits] = {}
        self._region_cache: dict[int, tuple[ImageUnits, RegionScores]] = {}
        self._full_terms: tuple[float, float, float] | None = None
        self._raw: tuple[np.ndarray, np.ndarray] | None = None
        self._detections: list[Detection] | None = None
        self.box, self.label, self.source, self.index, self.score, self._target_vector = (
            self._resolve_target(target, box, label)
        )
        if self._raw is not None:  # the whole image's terms come with the detections
            t = object_scores(*self._raw, self.box, self.label, self.mode)
            self._full_terms = (float(t["object"][0]), float(t["iou"][0]), float(t["cls"][0]))
        name = self.detector.classes[self.label]
        coords = ", ".join(f"{v:.0f}" for v in self.box)
        what = (
            f"detection {self.index} ({name} {self.score:.2f})"
            if self.source == "prediction"
            else f"given {name} box"
        )
        self.target_info: dict[str, Any] = {
            "kind": "detection_" + mode,
            "description": f"{what} at [{coords}], {mode} score",
            "box": [float(v) for v in self.box],
            "label": int(self.label),
            "class": name,
            "score": None if self.score is None else float(self.score),
            "source": self.source,
            "index": self.index,
            "mode": mode,
            "detector": self.detector_name,
        }

    # -- target --------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the image."""
        return int(self.image.shape[0]), int(self.image.shape[1])

    def __repr__(self) -> str:
        h, w = self.shape
        return f"DetectionTask({self.detector_name}, {h}x{w}, {self.target_info['description']})"

    @property
    def detections(self) -> list[Detection]:
        """The detector's detections on the whole image (score >= ``score_threshold``, after
        NMS), best first. One forward pass the first time (made when the task is built with a
        predicted target)."""
        if self._detections is None:
            self._detections = self.detector.postprocess(*self.raw, self.score_threshold)[0]
        return self._detections

    @property
    def raw(self) -> tuple[np.ndarray, np.ndarray]:
        """The raw candidates (boxes (1, N, 4), scores (1, N, C)) of the whole image (one
        forward pass the first time)."""
        if self._raw is None:
            self._raw = self.detect(self.image[None])
        return self._raw

    def _label(self, label: int | str) -> int:
        classes = list(self.detector.classes)
        if isinstance(label, str):
            if label not in classes:
                raise InputError(
                    f"{self.detector_name} has no class {label!r}; its classes: {classes[:20]}"
                )
            return classes.index(label)
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
            raise InputError(f"label must be a class index or name, got {label!r}")
        if not 0 <= int(label) < len(classes):
            raise InputError(
                f"label {label} is not a class of {self.detector_name}: it has {len(classes)} "
                f"classes {classes[:20]} (indices 0..{len(classes) - 1})"
            )
        return int(label)

    def _check_box(self, box: Box) -> tuple[float, float, float, float]:
        b = np.asarray(box, dtype=np.float64).ravel()
        h, w = self.shape
        if b.shape != (4,) or not np.isfinite(b).all():
            raise InputError(f"a box is 4 finite numbers x1, y1, x2, y2 in pixels, got {box!r}")
        x1, y1, x2, y2 = (float(v) for v in b)
        if not (x2 > x1 and y2 > y1):
            raise InputError(
                f"box {[x1, y1, x2, y2]} has zero area: give x1 < x2 and y1 < y2 (x1, y1, x2, y2 "
                "in pixels)"
            )
        if x1 < 0 or y1 < 0 or x2 > w or y2 > h:
            raise InputError(
                f"box {[x1, y1, x2, y2]} is not inside the {w}x{h} image (W x H): give "
                f"0 <= x1 < x2 <= {w} and 0 <= y1 < y2 <= {h} in pixels of the task's image"
            )
        return x1, y1, x2, y2

    def _resolve_target(
        self, target: int | None, box: Box | None, label: int | str | None
    ) -> tuple[tuple[float, float, float, float], int, str, int | None, float | None, np.ndarray]:
        n_classes = len(self.detector.classes)
        if box is not None:
            if target is not None:
                raise InputError("give either target= (a detection index) or box= (and label=)")
            if label is None and n_classes > 1:
                raise InputError(
                    f"with box= give label= too: one of {list(self.detector.classes)[:20]}"
                )
            lab = self._label(0 if label is None else label)
            onehot = np.zeros(n_classes)
            onehot[lab] = 1.0
            return self._check_box(box), lab, "given", None, None, onehot
        if target is not None and (
            isinstance(target, bool) or not isinstance(target, (int, np.integer))
        ):
            raise InputError(
                f"target must be the index of a predicted detection (an int), got {target!r}; "
                "for a ground-truth object give box= and label="
            )
        dets = self.detections
        k = 0 if target is None else int(target)
        if not dets:
            top = np.sort(self.raw[1][0].max(axis=1) if self.raw[1].size else np.zeros(0))[::-1]
            shown = ", ".join(f"{v:.3f}" for v in top[:5]) or "none (no candidates)"
            raise InputError(
                f"no detection to explain: {self.detector_name} finds nothing scoring >= "
                f"{self.score_threshold} (top candidate scores: {shown}); lower score_threshold=, "
                "or give box= and label= to explain a missed object"
            )
        if not 0 <= k < len(dets):
            listing = "; ".join(f"{i}: {d.name} {d.score:.2f}" for i, d in enumerate(dets[:10]))
            raise InputError(
                f"target {k} is not a detection index: there are {len(dets)} ({listing})"
            )
        d = dets[k]
        lab = d.label if label is None else self._label(label)
        h, w = self.shape
        x1, y1, x2, y2 = d.box
        clipped = (max(x1, 0.0), max(y1, 0.0), min(x2, float(w)), min(y2, float(h)))
        if not (clipped[2] > clipped[0] and clipped[3] > clipped[1]):
            raise InputError(f"detection {k}'s box {d.box} lies outside the image")
        vector = np.asarray(getattr(d, "class_scores", ()), dtype=np.float64).ravel()
        if (label is not None and lab != d.label) or vector.shape != (n_classes,):
            vector = np.zeros(n_classes)
            vector[lab] = 1.0
        return clipped, lab, "prediction", k, d.score, vector

    # -- model evaluations ---------------------------------------------------------------------
    def detect(self, images: Any) -> tuple[np.ndarray, np.ndarray]:
        """The detector's raw candidates for a (B, H, W, 3) batch, counted on the task (one
        forward pass per image)."""
        meter = getattr(self.detector, "cost", None)
        if not isinstance(meter, Cost):  # a detector that does not count: one pass per image
            with self.timed():
                out = self.detector(images)
            self.cost.forward_passes += len(images)
            self.cost.batches += 1
        else:
            before = meter.copy()
            try:
                out = self.detector(images)
            finally:
                spent = self.detector.cost - before
                self.cost.forward_passes += spent.forward_passes
                self.cost.batches += spent.batches
                self.cost.seconds += spent.seconds
        if isinstance(self.detector, Detector):  # checked by the detector itself
            return out
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise ScorerError(f"{self.detector_name} must return (boxes, scores)")
        boxes, scores = _to_numpy(out[0]), _to_numpy(out[1])
        check_output(boxes, scores, len(images), self.detector.classes, self.detector_name)
        return boxes, scores

    def terms(self, images: Any) -> dict[str, np.ndarray]:
        """:func:`object_scores` (object, iou, cls, index) of the target for each image of a
        (B, H, W, 3) batch. One forward pass per image."""
        x = np.asarray(images, dtype=np.float32)
        if x.ndim != 4 or x.shape[1:3] != self.shape:
            raise InputError(
                f"images must be (B, {self.shape[0]}, {self.shape[1]}, 3), got {x.shape}"
            )
        return object_scores(*self.detect(x), self.box, self.label, self.mode)

    def values(self, images: Any) -> np.ndarray:
        """The object score of each image of a (B, H, W, 3) batch (one forward pass each)."""
        return self.terms(images)["object"]

    @property
    def full_terms(self) -> tuple[float, float, float]:
        """(object, iou, cls) of the whole image (one forward pass the first time)."""
        if self._full_terms is None:
            t = object_scores(*self.raw, self.box, self.label, self.mode)
            self._full_terms = (float(t["object"][0]), float(t["iou"][0]), float(t["cls"][0]))
        return self._full_terms

    @property
    def baseline_image(self) -> np.ndarray:
        """What a removed pixel shows, (H, W, 3) (the task's ``baseline``)."""
        return np.asarray(self.units.baseline, dtype=np.float32)

    # -- the task contract ---------------------------------------------------------------------
    @property
    def meter(self) -> CostMeter:
        """The task itself: every image it sends to the detector is counted on it."""
        return self

    @functools.cached_property
    def units(self) -> ImageUnits:  # type: ignore[override]
        """The default regions (superpixels, 64 by default; or the units given). No model call."""
        return self._make_units(self._unit_spec)

    def make_units(self, units: UnitSpec = None, **kw: Any) -> ImageUnits:
        """:func:`detection_units` of this image with the task's unit options, overridden by
        ``kw`` (n_segments, compactness, patch, blur_sigma, baseline). The same spec gives the
        same ImageUnits object (so caches are shared); None without options is :attr:`units`.
        No model call."""
        if units is None:
            if not any(v is not None for v in kw.values()):
                return self.units
            units = self._unit_spec
        return self._make_units(units, **kw)

    def _make_units(self, units: UnitSpec, **kw: Any) -> ImageUnits:
        if isinstance(units, ImageUnits):
            if units.image.shape != self.image.shape:
                raise InputError(
                    f"the units were built on an image of shape {units.image.shape}, the task's "
                    f"image is {self.image.shape}; build them with task.make_units(...)"
                )
            return units
        opts = {**self._unit_kw, **{k: v for k, v in kw.items() if v is not None}}
        if isinstance(units, np.ndarray) or isinstance(opts["baseline"], np.ndarray):
            return detection_units(self.image, units, **opts)
        key = (units, tuple(sorted(opts.items())))
        if key not in self._units_cache:
            self._units_cache[key] = detection_units(self.image, units, **opts)
        return self._units_cache[key]

    def region_scores(self, units: ImageUnits | None = None) -> RegionScores:
        """The shared, cached :class:`RegionScores` of ``units`` (default: :attr:`units`): every
        method and evaluator on the same units reuses its images. No model call."""
        u = self.units if units is None else units
        entry = self._region_cache.get(id(u))
        if entry is None or entry[0] is not u:
            entry = (u, RegionScores(self, u))
            self._region_cache[id(u)] = entry
        return entry[1]

    def prepare(self, spec: MethodSpec, params: dict[str, Any]) -> None:
        """Unit options (``n_segments``, ``patch``...) given to a method become its ``units``.
        No model call."""
        unit_kw = {k: params.pop(k) for k in UNIT_OPTIONS if k in params}
        if unit_kw:
            given = params.get("units")
            spec_ = "patches" if given is None and "patch" in unit_kw else given
            params["units"] = self.make_units(spec_, **unit_kw)

    def unit_scorer(self, params: dict[str, Any]) -> Scorer:
        """A :meth:`scorer` over ``params['units']`` (default :attr:`units`), for the generic
        perturbation methods. No model call until it is asked."""
        return self.scorer(self.make_units(params.pop("units", None)))

    def scorer(self, units: ImageUnits | None = None, **scorer_kw: Any) -> Scorer:
        """A mask :class:`Scorer` over ``units`` (default :attr:`units`) valued by the object
        score (one forward pass per new mask, cached); its passes are counted on the task."""
        u = self.units if units is None else units

        def value(batch: Any) -> np.ndarray:
            return self.values(np.asarray(batch, dtype=np.float32))

        return Scorer(
            u,
            value,
            target=self.target_info,
            batch_size=self.batch_size,
            meter=self,
            task_kind=self.kind,
            **scorer_kw,
        )

    def unit_result(self, attribution: Attribution, scorer: Scorer) -> Attribution:  # type: ignore[override]
        """A unit method's scores as a detection Attribution (each unit's score spread over its
        pixels is the heatmap). No model calls."""
        a, u = attribution, scorer.units
        hm = u.heatmap(np.nan_to_num(a.vector))  # type: ignore[attr-defined]
        return self.result(
            hm, a.method, a.params, a.cost, units=u, unit_scores=a.scores, **a.extras
        )

    def upsample(self, heatmap: Any) -> np.ndarray:
        """An (h, w) map resized bilinearly to the image's (H, W); float64. No model call."""
        from attribkit.tasks.image import upsample_map

        return upsample_map(heatmap, self.shape)

    def result(  # type: ignore[override]
        self,
        heatmap: Any,
        method: str,
        params: dict[str, Any],
        cost: Cost,
        units: UnitSpec = None,
        unit_scores: np.ndarray | None = None,
        **extras: Any,
    ) -> Attribution:
        """The Attribution of a map: ``heatmap`` (upsampled to the image) is its ``image_map``;
        unit scores are ``unit_scores`` when the method scored units, else the map summed over
        each unit of ``units`` (default :attr:`units`). Target box and label are in
        ``target``. No model calls."""
        u = self.make_units(units)
        if len(u) < 2:
            raise InputError(
                f"only {len(u)} region: attribution ranks regions against each other; use more "
                "superpixels (n_segments=) or smaller patches"
            )
        hm = self.upsample(heatmap)
        if unit_scores is None:
            unit_scores = np.bincount(u.segments.ravel(), weights=hm.ravel(), minlength=len(u))
        inp = dict(u.to_dict(), image=self.image, n_units=len(u))
        return Attribution(
            units=list(u.units),
            scores=np.asarray(unit_scores, dtype=float),
            method=method,
            target=self.target_info,
            params=params,
            cost=cost,
            input=inp,
            extras=extras,
            task=self.kind,
            image_map=hm,
        )


def attribute_detection(
    detector: Detector,
    image: Any,
    target: int | None = None,
    method: str = "vps",
    units: UnitSpec = None,
    *,
    progress: bool = False,
    **params: Any,
) -> Attribution:
    """Explain one object found (or missed) by ``detector`` on ``image`` with ``method``
    (``"vps"``, ``"drise"`` or any perturbation method over regions: ``occlusion``,
    ``kernel_shap``...). ``target``: a predicted detection's index (None: the top one); or give
    ``box=`` and ``label=`` for a ground-truth object. Task options (``box``, ``label``,
    ``mode``, ``score_threshold``, ``baseline``, ``n_segments``, ``compactness``, ``patch``,
    ``blur_sigma``, ``image_size``) build the :class:`DetectionTask`; the rest go to the method.

    Returns the Attribution (``heatmap``, target box and label in ``target``; VPS adds its
    curves). ``result.cost`` is what the method cost; finding the detections costs one more
    forward pass (none with ``box=``).
    """
    from attribkit.core.registry import attribute

    task_kw = {k: params.pop(k) for k in TASK_OPTIONS if k in params}
    task = DetectionTask(detector, image, target, units=units, **task_kw)
    return attribute(task, method, progress=progress, **params)  # type: ignore[no-any-return]
