"""BlazeFace, MediaPipe's short-range face detector, as a real detector for detection attribution.

The model file ``face_detection_short_range.tflite`` (230 KB, Apache-2.0) ships inside the
``mediapipe==0.10.14`` wheel (later wheels ship no models). attribkit finds it without importing
mediapipe and runs it with ``ai-edge-litert``; neither touches torch. Install both with::

    pip install --no-deps mediapipe==0.10.14   # the model file only; its dependencies are not needed
    pip install ai-edge-litert

:class:`BlazeFace` follows the detector protocol of :mod:`attribkit.tasks.detection`:
``detector(images (B, H, W, 3) in [0, 1]) -> (boxes (B, 896, 4) xyxy in the images' pixels,
scores (B, 896, 1))`` — every anchor's candidate *before* non-maximum suppression, decoded as
MediaPipe's ``face_detection_short_range`` graph does — and ``predict(image)`` for the
post-processed list (score ≥ 0.5, weighted NMS at IoU 0.3). ``attribkit.load("blazeface")``
returns one.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from attribkit.core.cost import CostMeter
from attribkit.core.errors import InputError, ScorerError
from attribkit.models.image import to_rgb01
from attribkit.models.loading import register_loader

__all__ = [
    "BLAZEFACE_FILE",
    "BLAZEFACE_INSTALL",
    "BlazeFace",
    "FaceDetection",
    "blazeface_anchors",
    "blazeface_available",
    "blazeface_model_path",
    "weighted_nms",
]

#: the model file inside the mediapipe package folder.
BLAZEFACE_FILE = "modules/face_detection/face_detection_short_range.tflite"
#: the commands that install what BlazeFace needs (shown in every "not installed" error).
BLAZEFACE_INSTALL = (
    "`pip install --no-deps mediapipe==0.10.14` (the model file only: mediapipe's own "
    "dependencies are not needed and it is never imported) and `pip install ai-edge-litert`"
)

INPUT_SIZE = 128
#: MediaPipe's face_detection_short_range graph: SsdAnchorsCalculator options.
_ANCHOR_OPTIONS = dict(
    num_layers=4,
    min_scale=0.1484375,
    max_scale=0.75,
    input_size=INPUT_SIZE,
    strides=(8, 16, 16, 16),
    aspect_ratios=(1.0,),
    interpolated_scale_aspect_ratio=1.0,
    anchor_offset=0.5,
)
#: TensorsToDetectionsCalculator options (x/y/w/h scale 128, score clipping 100).
_SCALE = 128.0
_SCORE_CLIP = 100.0
_NUM_KEYPOINTS = 6


# ---------------------------------------------------------------------------- locating files


def blazeface_model_path() -> Path:
    """Path of ``face_detection_short_range.tflite`` inside the installed ``mediapipe==0.10.14``
    wheel, found with ``importlib.util.find_spec`` (mediapipe is never imported). Raises
    :class:`InputError` naming the install commands when it is missing. No model call."""
    try:
        spec = importlib.util.find_spec("mediapipe")
    except (ImportError, ValueError):
        spec = None
    locs = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locs:
        path = Path(loc) / BLAZEFACE_FILE
        if path.is_file():
            return path
    where = f" (mediapipe at {locs[0]} has no {BLAZEFACE_FILE}: it is not 0.10.14)" if locs else ""
    raise InputError(
        f"the BlazeFace model file is not installed{where}; install it with {BLAZEFACE_INSTALL}"
    )


def _interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as e:
        raise InputError(
            f"BlazeFace runs on ai-edge-litert, which is not installed ({e}); install what "
            f"BlazeFace needs with {BLAZEFACE_INSTALL}"
        ) from e
    return Interpreter


def blazeface_available() -> str | None:
    """``None`` when BlazeFace can run here, else the reason it cannot (for skips and errors)."""
    try:
        blazeface_model_path()
        _interpreter_class()
    except InputError as e:
        return str(e)
    return None


# ---------------------------------------------------------------------------- anchors, decoding


def blazeface_anchors() -> np.ndarray:
    """The 896 anchor centres (x, y), normalised to the 128² input, in the model's output order.

    MediaPipe's ``SsdAnchorsCalculator`` with the ``face_detection_short_range`` options
    (strides 8, 16, 16, 16; ``fixed_anchor_size``: width = height = 1): layers with the same
    stride are merged, giving a 16×16 grid with 2 anchors per cell, then an 8×8 grid with 6.
    """
    o = _ANCHOR_OPTIONS
    strides, n = o["strides"], o["num_layers"]
    centres: list[tuple[float, float]] = []
    layer = 0
    while layer < n:
        per_cell = 0
        last = layer
        while last < n and strides[last] == strides[layer]:
            # each merged layer contributes one anchor per aspect ratio, plus the interpolated
            # scale's anchor (aspect 1.0): sizes differ but fixed_anchor_size makes them 1×1
            per_cell += len(o["aspect_ratios"]) + (1 if o["interpolated_scale_aspect_ratio"] else 0)
            last += 1
        side = int(np.ceil(o["input_size"] / strides[layer]))
        for y in range(side):
            for x in range(side):
                c = ((x + o["anchor_offset"]) / side, (y + o["anchor_offset"]) / side)
                centres.extend([c] * per_cell)
        layer = last
    return np.asarray(centres, dtype=np.float32)


_ANCHORS = blazeface_anchors()


def _decode(raw_boxes: np.ndarray, raw_scores: np.ndarray) -> tuple[np.ndarray, ...]:
    """(896, 16) regressors and (896, 1) logits → normalised xyxy boxes, scores, keypoints."""
    a = _ANCHORS
    cx = raw_boxes[:, 0] / _SCALE + a[:, 0]
    cy = raw_boxes[:, 1] / _SCALE + a[:, 1]
    # a negative width or height is no box: clamp to 0 so IoU stays meaningful
    w = np.maximum(raw_boxes[:, 2] / _SCALE, 0.0)
    h = np.maximum(raw_boxes[:, 3] / _SCALE, 0.0)
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    kp = raw_boxes[:, 4 : 4 + 2 * _NUM_KEYPOINTS].reshape(-1, _NUM_KEYPOINTS, 2) / _SCALE
    kp = kp + a[:, None, :]
    z = np.clip(raw_scores.astype(np.float64), -_SCORE_CLIP, _SCORE_CLIP)
    scores = 1.0 / (1.0 + np.exp(-z))
    return boxes, scores.astype(np.float32), kp


# ---------------------------------------------------------------------------- NMS


def _pairwise_iou(a: np.ndarray) -> np.ndarray:
    """(n, n) IoU matrix of (n, 4) xyxy boxes (0 where the union has no area)."""
    x1 = np.maximum(a[:, None, 0], a[None, :, 0])
    y1 = np.maximum(a[:, None, 1], a[None, :, 1])
    x2 = np.minimum(a[:, None, 2], a[None, :, 2])
    y2 = np.minimum(a[:, None, 3], a[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    union = area[:, None] + area[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def weighted_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float = 0.3,
    keypoints: np.ndarray | None = None,
) -> list[tuple[np.ndarray, float, np.ndarray | None, np.ndarray]]:
    """MediaPipe's weighted non-maximum suppression (``NonMaxSuppressionCalculator``, WEIGHTED).

    Candidates are visited by decreasing score; the best remaining one takes every remaining
    candidate with IoU > ``iou_threshold`` (itself included), and its box (and key points) become
    their score-weighted mean; its score stays the best one's. Returns ``(box, score, keypoints,
    member indices)`` per kept detection, best first. No model call.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    iou = _pairwise_iou(boxes[order])
    alive = np.ones(len(order), dtype=bool)
    out = []
    for i in range(len(order)):
        if not alive[i]:
            continue
        cluster = alive & (iou[i] > iou_threshold)
        cluster[i] = True  # a zero-area best box overlaps nothing, not even itself
        alive &= ~cluster
        members = order[cluster]
        best = order[i]
        w = scores[members]
        total = w.sum()
        if total > 0:
            box = (boxes[members] * w[:, None]).sum(0) / total
            kp = (
                (keypoints[members] * w[:, None, None]).sum(0) / total
                if keypoints is not None
                else None
            )
        else:
            box, kp = boxes[best], keypoints[best] if keypoints is not None else None
        out.append((box, float(scores[best]), kp, members))
    return out


@dataclass(frozen=True)
class FaceDetection:
    """One detection after NMS, with the fields of :class:`attribkit.tasks.detection.Detection`:
    ``box`` (x1, y1, x2, y2) in the image's pixels, ``label`` (class index, 0), ``score``,
    ``name`` (``"face"``); plus ``keypoints`` (6, 2) pixel (x, y) — right eye, left eye, nose
    tip, mouth, right ear, left ear — and ``index``, the pre-NMS candidate that led the merge (an
    index into the detector's N candidates). ``class_scores`` is ``(score,)``: the one class's
    score vector (D-RISE's similarity reads it)."""

    box: tuple[float, float, float, float]
    label: int
    score: float
    name: str = "face"
    class_scores: tuple[float, ...] = field(default=(), repr=False)
    keypoints: np.ndarray = field(default_factory=lambda: np.zeros((_NUM_KEYPOINTS, 2)))
    index: int = -1

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (box, label, name, score, keypoints, index)."""
        return {
            "box": [float(v) for v in self.box],
            "label": int(self.label),
            "name": self.name,
            "score": float(self.score),
            "keypoints": np.asarray(self.keypoints, dtype=float).tolist(),
            "index": int(self.index),
        }


# ---------------------------------------------------------------------------- the detector


class BlazeFace(CostMeter):
    """MediaPipe's BlazeFace short-range face detector (128² input, 896 anchors, one class).

    Args:
        model_path: the ``.tflite`` file (default: the one in the ``mediapipe==0.10.14`` wheel).
        num_threads: interpreter threads (1 keeps a shared machine responsive).
        letterbox: keep the aspect ratio when resizing to 128² (black borders, as MediaPipe's
            graph does); ``False`` stretches the whole image to 128².
        name: shown in results.

    ``detector(images)`` takes (B, H, W, 3) or one (H, W, 3) image, float in [0, 1], and returns
    pre-NMS ``boxes`` (B, 896, 4) xyxy in the input's pixels and ``scores`` (B, 896, 1)
    (``sigmoid(clip(logit, ±100))``); :meth:`detect` adds the candidates' key points.
    The model takes batch 1, so a batch runs one image at a time: ``cost.forward_passes`` and
    ``cost.batches`` both grow by B (about 1–5 ms per image here). Thread-safe (one lock).
    """

    input_size: int = INPUT_SIZE
    num_candidates: int = len(_ANCHORS)
    #: MediaPipe's post-processing (what :meth:`predict` and :meth:`postprocess` do)
    nms_method: str = "weighted"
    iou_threshold: float = 0.3

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        num_threads: int = 1,
        letterbox: bool = True,
        name: str = "blazeface",
    ) -> None:
        super().__init__()
        interpreter = _interpreter_class()
        path = Path(model_path) if model_path is not None else blazeface_model_path()
        if not path.is_file():
            raise InputError(f"no BlazeFace model file at {path}")
        if num_threads < 1:
            raise InputError(f"num_threads must be >= 1, got {num_threads}")
        self.model_path = path
        self.name = name
        self.classes = ["face"]
        #: images composed per call by attribution tasks (the model itself runs one at a time)
        self.batch_size = 32
        self.letterbox = bool(letterbox)
        try:
            self._interp = interpreter(model_path=str(path), num_threads=int(num_threads))
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise InputError(f"{path} is not a TFLite model ai-edge-litert can load: {e}") from e
        (inp,) = self._interp.get_input_details()
        if tuple(inp["shape"]) != (1, INPUT_SIZE, INPUT_SIZE, 3):
            raise InputError(f"{path} is not BlazeFace short-range (input {inp['shape']})")
        outs = {d["name"]: d for d in self._interp.get_output_details()}
        if set(outs) != {"regressors", "classificators"}:
            raise InputError(f"{path} is not BlazeFace short-range (outputs {sorted(outs)})")
        self._in = inp["index"]
        self._reg = outs["regressors"]["index"]
        self._cls = outs["classificators"]["index"]
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"BlazeFace({self.name}, letterbox={self.letterbox}, cost={self.cost})"

    @property
    def labels(self) -> list[str]:
        """The class names (``["face"]``), as other attribkit models name them."""
        return list(self.classes)

    # -- geometry ------------------------------------------------------------------------------

    def _layout(self, h: int, w: int) -> tuple[int, int, int, int]:
        """(content height, content width, top, left) of an h × w image inside the 128² input."""
        if not self.letterbox:
            return INPUT_SIZE, INPUT_SIZE, 0, 0
        s = INPUT_SIZE / max(h, w)
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
        return nh, nw, (INPUT_SIZE - nh) // 2, (INPUT_SIZE - nw) // 2

    def to_input(self, images: Any) -> np.ndarray:
        """Display images (B, H, W, 3) in [0, 1] → the model's (B, 128, 128, 3) in [−1, 1]
        (bilinear resize with antialiasing, black letterbox borders). No model call."""
        return self._to_input(self._check(images))

    def _to_input(self, x: np.ndarray) -> np.ndarray:
        b, h, w, _ = x.shape
        nh, nw, top, left = self._layout(h, w)
        t = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
        if (nh, nw) != (h, w):
            t = F.interpolate(
                t, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False
            )
        canvas = torch.zeros((b, 3, INPUT_SIZE, INPUT_SIZE), dtype=torch.float32)
        canvas[:, :, top : top + nh, left : left + nw] = t.clamp(0.0, 1.0)
        return (canvas.permute(0, 2, 3, 1).numpy() * 2.0 - 1.0).astype(np.float32)

    @staticmethod
    def _check(images: Any) -> np.ndarray:
        if isinstance(images, torch.Tensor):
            images = images.detach().cpu().numpy()
        x = np.asarray(images)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[-1] != 3:
            raise InputError(
                f"BlazeFace takes (B, H, W, 3) or (H, W, 3) images, got shape {x.shape}"
            )
        if x.shape[0] == 0 or min(x.shape[1:3]) < 2:
            raise InputError(f"BlazeFace got an empty batch or a too small image: {x.shape}")
        if x.dtype == np.uint8:
            raise InputError("BlazeFace takes float images in [0, 1]; divide uint8 values by 255")
        x = np.ascontiguousarray(x, dtype=np.float32)
        lo, hi = float(x.min()), float(x.max())  # NaN propagates through min and max
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise InputError("the images contain NaN or infinite values")
        if lo < -1e-4 or hi > 1 + 1e-4:
            raise InputError(f"BlazeFace takes images in [0, 1] (got {lo:.3g} .. {hi:.3g})")
        return x

    # -- the protocol --------------------------------------------------------------------------

    def raw(self, images: Any) -> tuple[np.ndarray, np.ndarray]:
        """The model's own outputs for display images: regressors (B, 896, 16) and logits
        (B, 896, 1). Costs B forward passes."""
        return self._raw(self._check(images))

    def _raw(self, checked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = self._to_input(checked)
        reg = np.empty((x.shape[0], self.num_candidates, 16), dtype=np.float32)
        cls = np.empty((x.shape[0], self.num_candidates, 1), dtype=np.float32)
        with self._lock, self.timed():
            for i in range(x.shape[0]):
                self._interp.set_tensor(self._in, x[i : i + 1])
                self._interp.invoke()
                reg[i] = self._interp.get_tensor(self._reg)[0]
                cls[i] = self._interp.get_tensor(self._cls)[0]
                self.cost.forward_passes += 1
                self.cost.batches += 1
        if not (np.isfinite(reg).all() and np.isfinite(cls).all()):
            raise ScorerError("BlazeFace returned NaN or infinite outputs")
        return reg, cls

    def __call__(self, images: Any) -> tuple[np.ndarray, np.ndarray]:
        """Pre-NMS candidates of display images (B, H, W, 3) in [0, 1]: ``boxes`` (B, 896, 4)
        xyxy float32 in the images' pixels and ``scores`` (B, 896, 1). Costs B forward passes."""
        boxes, scores, _ = self.detect(images)
        return boxes, scores

    def detect(self, images: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """As calling the detector, plus every candidate's 6 key points (B, 896, 6, 2) in pixels.
        Costs B forward passes."""
        x = self._check(images)
        h, w = x.shape[1:3]
        reg, cls = self._raw(x)
        nh, nw, top, left = self._layout(h, w)
        sx, sy = INPUT_SIZE * w / nw, INPUT_SIZE * h / nh
        ox, oy = left / INPUT_SIZE, top / INPUT_SIZE
        boxes = np.empty((x.shape[0], self.num_candidates, 4), dtype=np.float32)
        scores = np.empty((x.shape[0], self.num_candidates, 1), dtype=np.float32)
        kps = np.empty((x.shape[0], self.num_candidates, _NUM_KEYPOINTS, 2), dtype=np.float32)
        for i in range(x.shape[0]):
            b, s, kp = _decode(reg[i], cls[i])
            b[:, [0, 2]] = (b[:, [0, 2]] - ox) * sx
            b[:, [1, 3]] = (b[:, [1, 3]] - oy) * sy
            kp[..., 0] = (kp[..., 0] - ox) * sx
            kp[..., 1] = (kp[..., 1] - oy) * sy
            boxes[i], scores[i], kps[i] = b, s, kp
        return boxes, scores, kps

    def postprocess(
        self,
        boxes: Any,
        scores: Any,
        score_threshold: float = 0.5,
        keypoints: Any = None,
    ) -> list[list[FaceDetection]]:
        """Per image, the faces of raw outputs (B, N, 4) and (B, N, 1) as MediaPipe reports them:
        candidates with score ≥ ``score_threshold`` merged by weighted NMS at
        :attr:`iou_threshold`, best first (key points when ``keypoints`` (B, N, 6, 2) is given).
        No model call."""
        boxes, scores = np.asarray(boxes), np.asarray(scores)
        out = []
        for i in range(boxes.shape[0]):
            keep = np.flatnonzero(scores[i, :, 0] >= score_threshold)
            kp = np.asarray(keypoints[i])[keep] if keypoints is not None else None
            merged = weighted_nms(boxes[i, keep], scores[i, keep, 0], self.iou_threshold, kp)
            out.append(
                [
                    FaceDetection(
                        box=tuple(float(v) for v in box),  # type: ignore[arg-type]
                        label=0,
                        score=score,
                        class_scores=(score,),
                        keypoints=(
                            np.asarray(k, dtype=np.float32)
                            if k is not None
                            else np.full((_NUM_KEYPOINTS, 2), np.nan, np.float32)
                        ),
                        index=int(keep[members[0]]),
                    )
                    for box, score, k, members in merged
                ]
            )
        return out

    def predict(self, image: Any, score_threshold: float = 0.5) -> list[FaceDetection]:
        """The faces in one image (array, PIL image or path; uint8 or float) as MediaPipe reports
        them (:meth:`postprocess`: score ≥ ``score_threshold``, weighted NMS at IoU 0.3), best
        first, with their key points. Costs one forward pass."""
        boxes, scores, kps = self.detect(to_rgb01(image))
        return self.postprocess(boxes, scores, score_threshold, kps)[0]


def _load_blazeface(
    *, model_path: str | Path | None = None, num_threads: int = 1, letterbox: bool = True, **_: Any
) -> BlazeFace:
    # load() passes language-model options (dtype, device, ...): a tflite model ignores them.
    return BlazeFace(model_path, num_threads=num_threads, letterbox=letterbox)


register_loader("blazeface", _load_blazeface, aliases=("face_detection_short_range",))
